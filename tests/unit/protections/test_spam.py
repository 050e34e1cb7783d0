"""Spam: normalisation, banned phrases and patterns, links, invites, mentions, cross-posting,
new members and display names — table-driven, on the intents ``check`` returns."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from abusebot.events import Event, parse_event
from protections import REGISTRY, SettingsError, Violation, build_settings
from protections.spam import Spam, SpamSettings, html_text, matchers_for, normalize
from tests.unit.protections.helpers import FakeContext, message

SPAMMER = "@spammer:x"
ROOM = "!room"  # the helpers' default room
HTML = "org.matrix.custom.html"
WORDS = SpamSettings(banned_words=("buy cheap crypto",))


def html_message(body: str, formatted: str, sender: str = SPAMMER, room: str = ROOM) -> Event:
    """A message with an HTML formatted body."""
    return message(sender, body, room=room, format=HTML, formatted_body=formatted)


def display_name_event(name: str, prev_name: str | None = None, room: str = ROOM, user: str = SPAMMER) -> Event:
    """A join (or, with ``prev_name``, a profile change) setting ``name`` as display name."""
    raw: dict[str, Any] = {
        "event_id": f"$name-{room}-{name}-{prev_name}",
        "sender": user,
        "type": "m.room.member",
        "state_key": user,
        "origin_server_ts": 0,
        "content": {"membership": "join", "displayname": name},
    }
    if prev_name is not None:
        raw["unsigned"] = {"prev_content": {"membership": "join", "displayname": prev_name}}
    event = parse_event(raw, room)
    assert event is not None
    return event


async def rules(event: Event, settings: SpamSettings = WORDS, ctx: FakeContext | None = None) -> list[str]:
    """The rules a fresh protection reports for one event."""
    intents = await Spam().check(event, settings, ctx or FakeContext())
    return [intent.rule for intent in intents if isinstance(intent, Violation)]


# -- normalize -----------------------------------------------------------------------------------


class TestNormalize:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param("Buy  Cheap\n\tCRYPTO ", "buy cheap crypto", id="ascii-case-and-whitespace"),
            pytest.param("b\u03c5y ch\u200beap crypto", "buy cheap crypto", id="greek-upsilon-and-zero-width-space"),
            pytest.param(
                "buy \u0441\u04bb\u0435\u0430\u0440 \u0441\u0433\u0443\u0440t\u043e",
                "buy cheap crypto",
                id="cyrillic-lookalikes",
            ),
            pytest.param("\u0392U\u03a5", "buy", id="greek-capitals-fold-as-they-look"),
            pytest.param("\u0406NVEST", "invest", id="capital-i-lookalike-is-i"),
            pytest.param("\uff42\uff55\uff59 \uff23\uff28\uff25\uff21\uff30", "buy cheap", id="fullwidth"),
            pytest.param("\U0001d41b\U0001d42e\U0001d432", "buy", id="mathematical-bold"),
            pytest.param("buy \u202echeap\u202c \u2066crypto\u2069", "buy cheap crypto", id="bidi-controls"),
            pytest.param("b\u200du\u2060y\ufeff", "buy", id="joiners-and-word-joiner-and-bom"),
            pytest.param("b\u0337u\u0337y\u0337", "buy", id="zalgo-marks"),
            pytest.param("b\u00f9y ch\u00e9ap", "buy cheap", id="accents"),
            pytest.param("buy\U000e0020x", "buyx", id="tag-characters"),
            pytest.param("bu\x00y\x1b", "buy", id="ascii-controls"),
            pytest.param("buy\u00a0cheap\u3000crypto", "buy cheap crypto", id="unicode-spaces"),
            pytest.param("buy\u3164cheap", "buycheap", id="hangul-filler"),
            pytest.param("evil\u3002example", "evil.example", id="ideographic-full-stop"),
            pytest.param("\u4f60\u597d \ubc84\uc2a4", "\u4f60\u597d \ubc84\uc2a4", id="cjk-and-hangul-unchanged"),
            pytest.param("thanks \U0001f44d", "thanks \U0001f44d", id="emoji-kept"),
            pytest.param("", "", id="empty"),
        ],
    )
    def test_normalize_folds_evasions(self, text: str, expected: str) -> None:
        """Case, compatibility forms, invisible characters, marks and lookalikes fold away."""
        assert normalize(text) == expected

    def test_greek_upsilon_is_u_not_y(self) -> None:
        """Lookalikes fold to what they look like (TR39), not to a transliteration (anyascii: υ → y)."""
        assert normalize("\u03c5") == "u"

    @given(st.text())
    @example("b\u03c5y ch\u200beap \u0392U\u03a5 \ubc84\uc2a4 \u0130stanbul \u00df caf\u00e9 \U0001f44d")
    @hypothesis_settings(max_examples=500, deadline=None)
    def test_normalize_is_idempotent(self, text: str) -> None:
        """Normalising twice gives the same text (phrases and messages meet in one form)."""
        assert normalize(normalize(text)) == normalize(text)

    def test_html_text_drops_tags_and_decodes_entities(self) -> None:
        """Inline tags vanish, block tags become spaces, entities are decoded."""
        assert html_text("<b>bu</b>y&#32;cheap<br/>crypto &amp; <p>more</p>") == "buy cheap crypto &  more "


# -- banned phrases and patterns -----------------------------------------------------------------

PHRASE = "spam: banned phrase"


class TestBannedPhrases:
    @pytest.mark.parametrize(
        ("event", "expected"),
        [
            pytest.param(message(SPAMMER, "buy cheap crypto"), [PHRASE], id="plain"),
            pytest.param(message(SPAMMER, "Hey! BUY  CHEAP\nCRYPTO now!!!"), [PHRASE], id="case-spacing-punctuation"),
            pytest.param(message(SPAMMER, "b\u03c5y ch\u200beap crypto"), [PHRASE], id="greek-and-zero-width"),
            pytest.param(message(SPAMMER, "buy \u202echeap\u202c crypto"), [PHRASE], id="bidi-override"),
            pytest.param(message(SPAMMER, "\uff42\uff55\uff59 cheap crypto"), [PHRASE], id="fullwidth"),
            pytest.param(message(SPAMMER, "buy \u0441he\u0430p \u0441rypto"), [PHRASE], id="cyrillic"),
            pytest.param(message(SPAMMER, "b\u0337u\u0337y\u0337 cheap crypto"), [PHRASE], id="zalgo"),
            pytest.param(html_message("a harmless body", "<b>buy</b> <i>cheap</i> crypto"), [PHRASE], id="html-only"),
            pytest.param(html_message("hello", "&#98;uy&#32;cheap&nbsp;crypto"), [PHRASE], id="html-entities"),
            pytest.param(
                message(
                    SPAMMER, "* fixed typo", **{"m.new_content": {"msgtype": "m.text", "body": "buy cheap crypto"}}
                ),
                [PHRASE],
                id="edit-new-content",
            ),
            pytest.param(message(SPAMMER, "I buy things that are cheap, not crypto"), [], id="words-apart"),
            pytest.param(message(SPAMMER, "rebuy cheap cryptography books"), [], id="not-whole-words"),
            pytest.param(message(SPAMMER, "buy cheap\u00a0stuff, crypto later"), [], id="other-words-between"),
            pytest.param(html_message("hi", "<p>buy cheap</p><p>crypto</p>"), [PHRASE], id="html-across-paragraphs"),
            pytest.param(html_message("hi", "<b>buy</b>cheap crypto"), [], id="html-inline-tags-join-words"),
        ],
    )
    async def test_banned_phrase(self, event: Event, expected: list[str]) -> None:
        """Banned phrases match whole words after normalisation, in every visible text."""
        assert await rules(event) == expected

    async def test_violation_is_major_redacts_and_quotes_the_message(self) -> None:
        """A banned phrase is a major violation (a newcomer posting it joined only to break the
        rules) that redacts the event, with a short excerpt."""
        event = message(SPAMMER, "buy cheap crypto " + "x" * 500)
        (violation,) = await Spam().check(event, WORDS, FakeContext())
        assert isinstance(violation, Violation)
        assert (violation.user, violation.room_id, violation.severity, violation.redact) == (
            SPAMMER,
            ROOM,
            "major",
            True,
        )
        assert violation.evidence.event_id == event.event_id
        assert violation.evidence.excerpt.startswith("buy cheap crypto")
        assert len(violation.evidence.excerpt) <= 120

    async def test_phrases_are_normalised_too(self) -> None:
        """A phrase written with capitals and a lookalike matches its plain form."""
        settings = SpamSettings(banned_words=("FREE N\u0456TRO",))
        assert await rules(message(SPAMMER, "get free nitro here"), settings) == [PHRASE]

    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            ("FREE NITRO at my link", ["spam: banned pattern"]),
            ("fr33 n1tro", ["spam: banned pattern"]),
            ("fr\u0435\u0435 nitro", ["spam: banned pattern"]),
            ("free nitrogen is in the air", []),
        ],
    )
    async def test_banned_pattern(self, body: str, expected: list[str]) -> None:
        """Patterns match the normalised text case-insensitively."""
        settings = SpamSettings(banned_patterns=(r"fr[e3]{2} n[i1]tro\b",))
        assert await rules(message(SPAMMER, body), settings) == expected

    @pytest.mark.parametrize("pattern", ["(unclosed", "a{2,1}", r"(a)\1", "(?<=a)b"])
    def test_invalid_or_backtracking_only_pattern_is_refused_at_config_time(self, pattern: str) -> None:
        """A pattern RE2 cannot compile (syntax errors, backreferences, lookbehind) is refused, naming the key."""
        with pytest.raises(SettingsError) as err:
            build_settings(SpamSettings, {"max_links": 3, "banned_patterns": ["ok", pattern]})
        assert err.value.key == "banned_patterns"
        assert "invalid regular expression" in str(err.value)

    @pytest.mark.parametrize(
        ("pattern", "hostile"),
        [
            ("(a+)+$", "a" * 60_000 + "!"),
            ("(x+x+)+y", "x" * 60_000),
            ("(a|aa)+$", "a" * 60_000 + "b"),
            ("^(([a-z])+.)+[A-Z]([a-z])+$", "a" * 60_000 + "!"),
        ],
    )
    def test_hostile_60kb_body_cannot_stall_a_pattern(self, pattern: str, hostile: str) -> None:
        """A catastrophic-backtracking pattern against a 60 KB hostile body takes under 5 ms (RE2 is linear)."""
        settings = SpamSettings(banned_patterns=(pattern,))
        regex = matchers_for(settings).patterns
        assert regex is not None
        text = normalize(hostile)
        timings = []
        for _ in range(3):  # the best of three: a busy machine must not fail an engine bound
            start = time.perf_counter()
            found = regex.search(text)
            timings.append(time.perf_counter() - start)
        assert found is None
        assert min(timings) < 0.005, timings


# -- links ---------------------------------------------------------------------------------------


def links(count: int, domain: str = "site{}.example") -> str:
    return " ".join(f"https://{domain.format(n)}/page" for n in range(count))


class TestLinks:
    async def test_documentation_links_do_not_count(self) -> None:
        """A newcomer's question with six documentation links is not "too many links"."""
        body = (
            "lifetimes: https://doc.rust-lang.org/book/ch10-03.html https://docs.rs/x https://crates.io/y "
            "https://github.com/a/b https://stackoverflow.com/q/1 https://en.wikipedia.org/wiki/Borrow"
        )
        assert await rules(message(SPAMMER, body), SpamSettings()) == []

    async def test_links_count_distinct_domains(self) -> None:
        """Seven pages of one site are one domain; seven sites are seven."""
        same = " ".join(f"https://blog.example/post{n}" for n in range(7))
        assert await rules(message(SPAMMER, same), SpamSettings()) == []
        assert await rules(message(SPAMMER, links(7)), SpamSettings()) == ["spam: too many links"]

    @pytest.mark.parametrize(
        ("event", "settings", "expected"),
        [
            pytest.param(message(SPAMMER, links(5)), SpamSettings(), [], id="five-links-pass"),
            pytest.param(message(SPAMMER, links(6)), SpamSettings(), ["spam: too many links"], id="six-links"),
            pytest.param(
                message(SPAMMER, " ".join(["https://one.example/x"] * 20)), SpamSettings(), [], id="one-link-repeated"
            ),
            pytest.param(
                html_message(links(5), " ".join(f'<a href="https://site{n}.example/page">here</a>' for n in range(5))),
                SpamSettings(),
                [],
                id="body-and-html-count-once",
            ),
            pytest.param(
                message(SPAMMER, links(8, "{}.docs.example")),
                SpamSettings(allowed_domains=("docs.example",)),
                [],
                id="allowed-domains-do-not-count",
            ),
            pytest.param(
                message(SPAMMER, "see https://evil.example/win"),
                SpamSettings(denied_domains=("evil.example",)),
                ["spam: link to a denied domain"],
                id="denied",
            ),
            pytest.param(
                message(SPAMMER, "go to www.cdn.evil.example now"),
                SpamSettings(denied_domains=("*.evil.example",)),
                ["spam: link to a denied domain"],
                id="denied-subdomain",
            ),
            pytest.param(
                message(SPAMMER, "type evil\uff0eexample in your browser"),
                SpamSettings(denied_domains=("evil.example",)),
                ["spam: link to a denied domain"],
                id="denied-unlinked-fullwidth-dot",
            ),
            pytest.param(
                html_message("click", '<a href="https://evil.example">click</a>'),
                SpamSettings(denied_domains=("evil.example",)),
                ["spam: link to a denied domain"],
                id="denied-in-href-only",
            ),
            pytest.param(
                message(SPAMMER, "https://notevil.example and https://evil.example.org"),
                SpamSettings(denied_domains=("evil.example",)),
                [],
                id="other-domains-containing-it",
            ),
            pytest.param(
                message(SPAMMER, "https://elsewhere.example"),
                SpamSettings(allowed_domains=("docs.example",), allowed_domains_only=True),
                ["spam: link to a domain not allowed"],
                id="only-allowed",
            ),
            pytest.param(
                message(SPAMMER, "https://docs.example/guide"),
                SpamSettings(allowed_domains=("docs.example",), allowed_domains_only=True),
                [],
                id="only-allowed-passes",
            ),
            pytest.param(message(SPAMMER, links(50)), SpamSettings(max_links=0), [], id="limit-off"),
        ],
    )
    async def test_link_rules(self, event: Event, settings: SpamSettings, expected: list[str]) -> None:
        """Distinct links are counted (allowed domains excepted); denied domains are refused anywhere."""
        assert await rules(event, settings) == expected

    @pytest.mark.parametrize("value", ["not a domain", "evil.example/path", ""])
    def test_malformed_domain_is_refused(self, value: str) -> None:
        """A deny-list entry that is not a domain is refused with the key named."""
        with pytest.raises(SettingsError) as err:
            build_settings(SpamSettings, {"denied_domains": [value]})
        assert err.value.key == "denied_domains"


# -- invites -------------------------------------------------------------------------------------

INVITE = "spam: invite link"


def protected_context(alias: str = "#home:x") -> FakeContext:
    """A context whose one protected room, !home:x, has the canonical alias ``alias``."""
    ctx = FakeContext()
    ctx.room("!home:x").apply(
        {"type": "m.room.canonical_alias", "state_key": "", "sender": "@mod:x", "content": {"alias": alias}}
    )
    return ctx


class TestInvites:
    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            ("join us at https://discord.gg/abc123", [INVITE]),
            ("discord.com/invite/abc123", [INVITE]),
            ("https://t.me/joinchat/xyz", [INVITE]),
            ("chat.whatsapp.com/AbCdEf", [INVITE]),
            ("https://matrix.to/#/#elsewhere:other.example", []),
            ("https://matrix.to/#/!roomid:other.example/$event", []),
            ("ht\u200btps://disc\u043erd.gg/abc", [INVITE]),
            ("https://matrix.to/#/@alice:other.example", []),
            ("https://matrix.to/#/#home:x", []),
            ("https://matrix.to/#/!home:x/$event?via=x", []),
            ("https://what.me/profile", []),
            ("I use discord and telegram", []),
        ],
    )
    async def test_invite_links(self, body: str, expected: list[str]) -> None:
        """Chat invites and links to other rooms are major spam; pills and our own rooms are not."""
        assert await rules(message(SPAMMER, body), SpamSettings(), protected_context()) == expected

    @pytest.mark.parametrize(
        "body",
        [
            "https://matrix.to/#/#elsewhere:other.example",
            "https://matrix.to/#/%23elsewhere:other.example?via=other.example",
            "https://matrix.to/#/!roomid:other.example/$event",
            "matrix:r/elsewhere:other.example",
        ],
    )
    async def test_links_to_other_matrix_rooms_are_invites_only_when_configured(self, body: str) -> None:
        """A link to another Matrix room is an honest pointer by default; with matrix_invites it
        is a minor violation (never a newcomer's permanent ban)."""
        assert await rules(message(SPAMMER, body), SpamSettings(), protected_context()) == []
        settings = SpamSettings(matrix_invites=True)
        (violation,) = await Spam().check(message(SPAMMER, body), settings, protected_context())
        assert isinstance(violation, Violation)
        assert (violation.rule, violation.severity) == ("spam: invite to another Matrix room", "minor")

    async def test_invite_is_major(self) -> None:
        """Invite spam escalates as a major violation."""
        (violation,) = await Spam().check(message(SPAMMER, "discord.gg/x"), SpamSettings(), FakeContext())
        assert isinstance(violation, Violation)
        assert violation.severity == "major"

    async def test_allowed_invites_pass(self) -> None:
        """Invites listed in allowed_invites are fine."""
        settings = SpamSettings(allowed_invites=("#partner:other.example", "discord.gg/ourserver"))
        for body in ("https://matrix.to/#/#partner:other.example", "https://discord.gg/ourserver"):
            assert await rules(message(SPAMMER, body), settings) == []

    async def test_invites_off_counts_them_as_links_only(self) -> None:
        """invite_links: false lets one invite through."""
        settings = SpamSettings(invite_links=False)
        assert await rules(message(SPAMMER, "https://discord.gg/abc"), settings) == []


# -- mentions ------------------------------------------------------------------------------------


def mxids(count: int) -> list[str]:
    return [f"@user{n}:x" for n in range(count)]


class TestMentions:
    @pytest.mark.parametrize(
        ("event", "expected"),
        [
            pytest.param(message(SPAMMER, " ".join(mxids(10))), [], id="ten-pass"),
            pytest.param(message(SPAMMER, " ".join(mxids(11))), ["spam: mass mention"], id="eleven-in-text"),
            pytest.param(
                message(SPAMMER, "hi", **{"m.mentions": {"user_ids": mxids(11)}}),
                ["spam: mass mention"],
                id="eleven-intentional-mentions",
            ),
            pytest.param(
                html_message("hi all", " ".join(f'<a href="https://matrix.to/#/{u}">U</a>' for u in mxids(11))),
                ["spam: mass mention"],
                id="eleven-pills",
            ),
            pytest.param(message(SPAMMER, " ".join(["@user1:x"] * 30)), [], id="one-user-many-times"),
        ],
    )
    async def test_mass_mention(self, event: Event, expected: list[str]) -> None:
        """More than ten distinct users mentioned in one message is major spam."""
        assert await rules(event, SpamSettings()) == expected

    @pytest.mark.parametrize(
        ("event", "power", "expected"),
        [
            pytest.param(
                message(SPAMMER, "how do I send an @room ping from my bot?"), {}, [], id="text-that-pings-nobody"
            ),
            pytest.param(
                message(SPAMMER, "look", **{"m.mentions": {"room": True}}),
                {},
                ["spam: @room ping"],
                id="intentional",
            ),
            pytest.param(
                message(SPAMMER, "@room hi"),
                {"notifications": {"room": 0}},
                ["spam: @room ping"],
                id="text-that-notifies-a-low-level-room",
            ),
            pytest.param(
                message(SPAMMER, "@room hi"),
                {"notifications": {"room": 10}, "users": {SPAMMER: 20}},
                ["spam: @room ping"],
                id="text-from-a-member-who-can-notify",
            ),
            pytest.param(message(SPAMMER, "@room release is out"), {"users": {SPAMMER: 50}}, [], id="room-staff"),
            pytest.param(
                message(SPAMMER, "hi", **{"m.mentions": {"room": True}}),
                {"users": {SPAMMER: 50}},
                [],
                id="room-staff-intentional",
            ),
            pytest.param(message(SPAMMER, "my @roommate says hi"), {"notifications": {"room": 0}}, [], id="not-@room"),
        ],
    )
    async def test_room_mention_is_a_violation_only_when_it_pings(
        self, event: Event, power: dict[str, Any], expected: list[str]
    ) -> None:
        """@room is a minor violation only when it would ping the room (the sender can notify it,
        or asks with m.mentions.room) and the sender is not room staff (ban level)."""
        ctx = FakeContext()
        ctx.room(ROOM).apply({"type": "m.room.power_levels", "state_key": "", "sender": "@mod:x", "content": power})
        assert await rules(event, SpamSettings(), ctx) == expected


# -- the same message in several rooms ------------------------------------------------------------

CROSS = "spam: same message in several rooms"
TEXT = "Check out my amazing offer today"


class TestCrossRoom:
    async def test_third_room_within_a_minute_is_major_and_removes_all_copies(self) -> None:
        """The same text in three rooms: the third copy is a major violation that also removes the other two."""
        spam, ctx = Spam(), FakeContext()
        events = [message(SPAMMER, TEXT, room=r) for r in ("!a", "!b", "!c")]
        results = [await spam.check(e, SpamSettings(), ctx) for e in events]
        assert results[0] == results[1] == []
        (violation,) = results[2]
        assert isinstance(violation, Violation)
        assert (violation.rule, violation.severity, violation.room_id) == (CROSS, "major", "!c")
        assert violation.evidence.event_id == events[2].event_id
        assert set(violation.also_redact_elsewhere) == {("!a", events[0].event_id), ("!b", events[1].event_id)}

    @pytest.mark.parametrize(
        ("rooms", "texts", "step", "senders", "expected"),
        [
            pytest.param(["!a", "!b"], [TEXT] * 2, 1.0, 1, 0, id="two-rooms"),
            pytest.param(["!a", "!a", "!a"], [TEXT] * 3, 1.0, 1, 0, id="one-room-three-times"),
            pytest.param(["!a", "!b", "!c"], [TEXT] * 3, 40.0, 1, 0, id="spread-over-more-than-a-minute"),
            pytest.param(["!a", "!b", "!c"], ["good morning!"] * 3, 1.0, 1, 0, id="short-greeting"),
            pytest.param(["!a", "!b", "!c"], [TEXT] * 3, 1.0, 3, 0, id="different-users"),
            pytest.param(["!a", "!b", "!c"], [TEXT, "another long message here", TEXT], 1.0, 1, 0, id="other-text"),
            pytest.param(["!a", "!b", "!c", "!d"], [TEXT] * 4, 1.0, 1, 2, id="a-fourth-copy-too"),
            pytest.param(
                ["!a", "!b", "!c"],
                [TEXT, "CHECK out my  amazing offer today", "Check out my am\u0430zing offer t\u043eday"],
                1.0,
                1,
                1,
                id="same-after-normalising",
            ),
        ],
    )
    async def test_cross_room_table(
        self, rooms: list[str], texts: list[str], step: float, senders: int, expected: int
    ) -> None:
        """Only one user's same (normalised, long enough) text in enough distinct rooms in time counts."""
        spam, ctx = Spam(), FakeContext()
        found: list[str] = []
        for n, (room, text) in enumerate(zip(rooms, texts, strict=True)):
            event = message(f"@s{n % senders}:x", text, room=room)
            found += [v.rule for v in await spam.check(event, SpamSettings(), ctx) if isinstance(v, Violation)]
            ctx.clock += step
        assert found == [CROSS] * expected

    async def test_same_image_in_three_rooms(self) -> None:
        """The same uploaded file posted in three rooms counts, whatever its caption."""
        spam, ctx = Spam(), FakeContext()
        found = []
        for n, room in enumerate(("!a", "!b", "!c")):
            event = message(SPAMMER, f"img{n}.png", room=room, msgtype="m.image", url="mxc://x/abc")
            found += await spam.check(event, SpamSettings(), ctx)
        assert [v.rule for v in found if isinstance(v, Violation)] == [CROSS]

    async def test_cross_room_off(self) -> None:
        """cross_room_count: 0 switches the rule off."""
        spam, ctx = Spam(), FakeContext()
        settings = SpamSettings(cross_room_count=0)
        found = [await spam.check(message(SPAMMER, TEXT, room=r), settings, ctx) for r in ("!a", "!b", "!c")]
        assert found == [[], [], []]

    def test_a_count_of_one_is_refused(self) -> None:
        """A message is always in one room: cross_room_count must be 0 (off) or at least 2."""
        with pytest.raises(SettingsError) as err:
            build_settings(SpamSettings, {"cross_room_count": 1})
        assert err.value.key == "cross_room_count"


# -- new members ---------------------------------------------------------------------------------


#: The new-member rule is off by default (new_member_minutes: 0); these tests switch it on.
NEW_MEMBER = SpamSettings(new_member_minutes=10)


class TestNewMember:
    @pytest.mark.parametrize(
        ("joined_ago", "first", "expected"),
        [
            pytest.param(
                60, message(SPAMMER, "hi https://site.example"), ["spam: new member posted a link"], id="link"
            ),
            pytest.param(60, message(SPAMMER, "www.site.example"), ["spam: new member posted a link"], id="www-link"),
            pytest.param(
                60,
                message(SPAMMER, "pic.png", msgtype="m.image", url="mxc://x/y"),
                ["spam: new member posted media"],
                id="media",
            ),
            pytest.param(60, message(SPAMMER, "hello everyone!"), [], id="text"),
            pytest.param(11 * 60, message(SPAMMER, "https://site.example"), [], id="after-ten-minutes"),
            pytest.param(None, message(SPAMMER, "https://site.example"), [], id="join-not-seen"),
        ],
    )
    async def test_first_message_of_a_new_member(
        self, joined_ago: float | None, first: Event, expected: list[str]
    ) -> None:
        """A first message within ten minutes of joining may not be a link or media."""
        ctx = FakeContext()
        if joined_ago is not None:
            ctx.joins[(ROOM, SPAMMER)] = ctx.clock - joined_ago
        assert await rules(first, NEW_MEMBER, ctx) == expected

    async def test_only_the_first_message_counts(self) -> None:
        """After a first text message, a link from the same new member is fine."""
        spam, ctx = Spam(), FakeContext()
        ctx.joins[(ROOM, SPAMMER)] = ctx.clock - 30
        assert await spam.check(message(SPAMMER, "hello!"), NEW_MEMBER, ctx) == []
        assert await spam.check(message(SPAMMER, "https://site.example"), NEW_MEMBER, ctx) == []

    async def test_a_rejoin_starts_over(self) -> None:
        """Leaving and joining again makes the next message a first message again."""
        spam, ctx = Spam(), FakeContext()
        ctx.joins[(ROOM, SPAMMER)] = ctx.clock - 30
        await spam.check(message(SPAMMER, "hello!"), NEW_MEMBER, ctx)
        ctx.joins[(ROOM, SPAMMER)] = ctx.clock - 5
        (violation,) = await spam.check(message(SPAMMER, "https://site.example"), NEW_MEMBER, ctx)
        assert isinstance(violation, Violation)
        assert violation.rule == "spam: new member posted a link"

    async def test_rule_off(self) -> None:
        """new_member_minutes: 0 switches the rule off."""
        ctx = FakeContext()
        ctx.joins[(ROOM, SPAMMER)] = ctx.clock - 30
        assert await rules(message(SPAMMER, "https://site.example"), SpamSettings(new_member_minutes=0), ctx) == []


# -- display names -------------------------------------------------------------------------------


class TestDisplayNames:
    @pytest.mark.parametrize(
        ("event", "expected"),
        [
            pytest.param(display_name_event("Buy Cheap Crypto"), ["spam: banned phrase in display name"], id="join"),
            pytest.param(
                display_name_event("b\u03c5y ch\u200beap crypto", prev_name="alice"),
                ["spam: banned phrase in display name"],
                id="renamed-with-evasion",
            ),
            pytest.param(display_name_event("buy cheap crypto", prev_name="buy cheap crypto"), [], id="unchanged"),
            pytest.param(display_name_event("alice"), [], id="innocent"),
        ],
    )
    async def test_display_name(self, event: Event, expected: list[str]) -> None:
        """A display name with a banned phrase is a violation; an unchanged name is not checked again."""
        assert await rules(event) == expected

    async def test_display_name_violation_redacts_nothing(self) -> None:
        """There is nothing to redact: the violation only escalates, quoting the name."""
        (violation,) = await Spam().check(display_name_event("buy cheap crypto"), WORDS, FakeContext())
        assert isinstance(violation, Violation)
        assert violation.redact is False
        assert violation.evidence.excerpt == "buy cheap crypto"

    async def test_one_rename_in_many_rooms_is_one_violation(self) -> None:
        """A profile change arrives once per room; it is reported once."""
        spam, ctx = Spam(), FakeContext()
        found = [
            v
            for r in ("!a", "!b", "!c")
            for v in await spam.check(display_name_event("buy cheap crypto", room=r), WORDS, ctx)
        ]
        assert len(found) == 1

    async def test_display_name_check_off(self) -> None:
        """display_names: false leaves names alone."""
        settings = SpamSettings(banned_words=("buy cheap crypto",), display_names=False)
        assert await rules(display_name_event("buy cheap crypto"), settings) == []


# -- settings and compilation --------------------------------------------------------------------


class TestSettings:
    def test_spam_is_registered(self) -> None:
        """Importing the module registers the protection under the name 'spam'."""
        assert REGISTRY["spam"] is Spam

    def test_config_lists_become_tuples(self) -> None:
        """The config's YAML lists are accepted and frozen."""
        settings = build_settings(SpamSettings, {"banned_words": ["buy cheap crypto"], "banned_patterns": []})
        assert settings.banned_words == ("buy cheap crypto",)

    def test_matchers_are_compiled_once_per_settings_object(self) -> None:
        """The same settings object gives the same compiled matchers; another one gets its own."""
        settings = SpamSettings(banned_words=("a b",))
        assert matchers_for(settings) is matchers_for(settings)
        assert matchers_for(SpamSettings(banned_words=("a b",))) is not matchers_for(settings)

    def test_a_phrase_that_normalises_to_nothing_is_refused(self) -> None:
        """A banned word of only invisible characters would match nothing: refused."""
        with pytest.raises(SettingsError) as err:
            build_settings(SpamSettings, {"banned_words": ["\u200b\u200b"]})
        assert err.value.key == "banned_words"

    async def test_harmless_chat_passes_every_rule(self) -> None:
        """Ordinary messages raise nothing with every rule on."""
        settings = SpamSettings(banned_words=("buy cheap crypto",), banned_patterns=("free nitro",))
        spam, ctx = Spam(), FakeContext()
        for body in ("hi!", "see https://docs.example/x", "thanks @alice:x", "caf\u00e9 \U0001f44d", "5/5 would buy"):
            assert await spam.check(message(SPAMMER, body), settings, ctx) == []


class TestMentionsInCode:
    @pytest.mark.parametrize(
        "event",
        [
            pytest.param(message(SPAMMER, "my config: `" + " ".join(mxids(12)) + "`"), id="backticks"),
            pytest.param(
                html_message("config", "<pre>" + " ".join(mxids(12)) + "</pre>"),
                id="pre-block",
            ),
        ],
    )
    async def test_user_ids_in_code_are_not_mentions(self, event: Event) -> None:
        """Twelve user ids in a code span or block ping nobody: not a mass mention."""
        assert await rules(event, SpamSettings()) == []
