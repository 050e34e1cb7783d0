from __future__ import annotations

from typing import Any

import pytest

from abusebot.commands import DEFAULT_REDACT_COUNT, MAX_REASON, Parsed, UsageError, command_text, parse_command
from abusebot.events import Event, parse_event

ALICE = "@alice:example.org"


def usage_error(text: str) -> UsageError:
    """The UsageError ``parse_command`` raises for ``text``."""
    with pytest.raises(UsageError) as info:
        parse_command(text)
    return info.value


def message(content: dict[str, Any], event_type: str = "m.room.message") -> Event:
    """A parsed message event with ``content``."""
    event = parse_event(
        {
            "event_id": "$command",
            "sender": "@mod:example.org",
            "type": event_type,
            "origin_server_ts": 1700000000000,
            "content": content,
        },
        "!management:example.org",
    )
    assert event is not None
    return event


class TestParseCommand:
    @pytest.mark.parametrize("text", ["!mod", "!mod help", "!MOD HELP"])
    def test_help(self, text: str) -> None:
        """A bare prefix or `help` asks for the command list."""
        assert parse_command(text) == Parsed("help")

    def test_help_with_topic(self) -> None:
        """`help <command>` names its topic, lower-cased."""
        assert parse_command("!mod help BAN") == Parsed("help", topic="ban")

    def test_warn(self) -> None:
        """`warn` takes a user and a reason."""
        assert parse_command(f"!mod warn {ALICE} be nice") == Parsed("warn", user=ALICE, reason="be nice")

    def test_warn_requires_a_reason(self) -> None:
        """A warning without a reason is a usage error."""
        assert usage_error(f"!mod warn {ALICE}").problem == "a reason is required"

    def test_mute(self) -> None:
        """`mute` takes a user, a duration and an optional reason."""
        assert parse_command(f"!mod mute {ALICE} 1h30m flooding") == Parsed(
            "mute", user=ALICE, duration_s=5400, reason="flooding"
        )

    def test_mute_requires_a_duration(self) -> None:
        """A mute without a duration is a usage error for mute."""
        assert usage_error(f"!mod mute {ALICE}").command == "mute"

    def test_mute_rejects_a_bad_duration(self) -> None:
        """A mute with a word where the duration goes reports that the word is not a duration."""
        assert "is not a duration" in usage_error(f"!mod mute {ALICE} forever").problem

    @pytest.mark.parametrize("name", ["unmute", "kick", "unban"])
    def test_user_and_optional_reason(self, name: str) -> None:
        """`unmute`, `kick` and `unban` take a user and an optional reason."""
        assert parse_command(f"!mod {name} {ALICE} calmed down") == Parsed(name, user=ALICE, reason="calmed down")

    @pytest.mark.parametrize("name", ["unmute", "kick", "unban", "history"])
    def test_reason_is_optional(self, name: str) -> None:
        """The reason may be left out."""
        assert parse_command(f"!mod {name} {ALICE}") == Parsed(name, user=ALICE)

    def test_ban_with_duration(self) -> None:
        """`ban` reads a duration when the first word after the user is one."""
        assert parse_command(f"!mod ban {ALICE} 7d spam links") == Parsed(
            "ban", user=ALICE, duration_s=604800, reason="spam links"
        )

    def test_ban_without_duration_is_permanent(self) -> None:
        """Without a duration the whole rest is the reason and the ban is permanent."""
        assert parse_command(f"!mod ban {ALICE} spam links") == Parsed("ban", user=ALICE, reason="spam links")

    def test_ban_alone(self) -> None:
        """A ban needs neither duration nor reason."""
        assert parse_command(f"!mod ban {ALICE}") == Parsed("ban", user=ALICE)

    def test_ban_with_out_of_range_duration_is_refused(self) -> None:
        """A duration-shaped word that is too long is an error, not silently part of the reason."""
        assert "10 years" in usage_error(f"!mod ban {ALICE} 9999w spam").problem

    @pytest.mark.parametrize(
        ("words", "seconds", "reason"),
        [("7days test ban", 604800, "test ban"), ("2 days spamming", 172800, "spamming"), ("1hr", 3600, "")],
    )
    @pytest.mark.parametrize("name", ["ban", "mute"])
    def test_durations_as_people_type_them(self, name: str, words: str, seconds: int, reason: str) -> None:
        """`7days`, `2 days`, `1hr`: the duration they clearly mean, for a ban and a mute alike."""
        parsed = parse_command(f"!mod {name} {ALICE} {words}")
        assert (parsed.duration_s, parsed.reason) == (seconds, reason)

    @pytest.mark.parametrize("words", ["7dayz test ban", "2 spamming", "15 minuts", "3rd strike"])
    @pytest.mark.parametrize("name", ["ban", "mute"])
    def test_a_failed_duration_is_refused_never_a_permanent_reason(self, name: str, words: str) -> None:
        """A word that looks like a failed duration is refused with the usage line; it never
        becomes the reason of a permanent ban."""
        assert "looks like a duration" in usage_error(f"!mod {name} {ALICE} {words}").problem

    @pytest.mark.parametrize("reason", ["spamming for 2 days", "off topic for 1 week please"])
    def test_a_duration_inside_a_permanent_bans_reason_is_refused(self, reason: str) -> None:
        """"spamming for 2 days" would have been a permanent ban: refused, with what to do."""
        assert "write the duration right after the user" in usage_error(f"!mod ban {ALICE} {reason}").problem

    def test_redact_default_count(self) -> None:
        """`redact` without a count removes the default number of messages."""
        assert parse_command(f"!mod redact {ALICE}") == Parsed("redact", user=ALICE, count=DEFAULT_REDACT_COUNT)

    @pytest.mark.parametrize("count", [1, 50, 1000])
    def test_redact_count_within_bounds(self, count: int) -> None:
        """Counts from 1 to 1000 are accepted."""
        assert parse_command(f"!mod redact {ALICE} {count}") == Parsed("redact", user=ALICE, count=count)

    @pytest.mark.parametrize(
        "count", ["0", "1001", "-5", "ten", "2.5", "²", "١٠", "000100" + "0" * 5000, "9" * 5000, "1e3"]
    )
    def test_redact_count_out_of_bounds(self, count: str) -> None:
        """Counts outside 1–1000, non-numbers, non-ASCII digits and huge numbers are usage errors."""
        assert usage_error(f"!mod redact {ALICE} {count}").problem == "count must be a number from 1 to 1000"

    def test_redact_takes_nothing_after_the_count(self) -> None:
        """A reason after the redact count is refused rather than ignored."""
        assert usage_error(f"!mod redact {ALICE} 5 spam").command == "redact"

    def test_note(self) -> None:
        """`note` takes a user and text."""
        assert parse_command(f"!mod note {ALICE} seems to be a bot") == Parsed(
            "note", user=ALICE, reason="seems to be a bot"
        )

    def test_note_requires_text(self) -> None:
        """An empty note is a usage error."""
        assert usage_error(f"!mod note {ALICE}").command == "note"

    def test_history(self) -> None:
        """`history` takes a user."""
        assert parse_command(f"!mod history {ALICE}") == Parsed("history", user=ALICE)

    @pytest.mark.parametrize("ref", ["12", "#12"])
    def test_pardon(self, ref: str) -> None:
        """`pardon` takes an infraction id, with or without ``#``, and an optional reason."""
        assert parse_command(f"!mod pardon {ref} mistake") == Parsed("pardon", infraction_id=12, reason="mistake")

    @pytest.mark.parametrize("ref", ["twelve", "-3", "#", "²", "1" * 19, "@alice:example.org"])
    def test_pardon_rejects_non_ids(self, ref: str) -> None:
        """Anything but a plain ASCII number is not an infraction id."""
        assert usage_error(f"!mod pardon {ref}").problem.endswith("is not an infraction id")

    def test_pardon_requires_an_id(self) -> None:
        """A pardon without an id is a usage error."""
        assert usage_error("!mod pardon").command == "pardon"

    def test_status(self) -> None:
        """`status` takes no arguments."""
        assert parse_command("!mod status") == Parsed("status")

    @pytest.mark.parametrize(
        "text",
        [
            f"!mod ban --room !lobby:example.org {ALICE} 2h spam",
            f"!mod ban {ALICE} --room !lobby:example.org 2h spam",
            f"!mod ban {ALICE} 2h --room !lobby:example.org spam",
            f"!mod ban {ALICE} 2h spam --room !lobby:example.org",
            f"!mod ban {ALICE} 2h spam --room=!lobby:example.org",
        ],
    )
    def test_room_flag_anywhere_after_the_command(self, text: str) -> None:
        """``--room ROOM`` may appear anywhere after the command name and is removed from the arguments."""
        assert parse_command(text) == Parsed(
            "ban", user=ALICE, duration_s=7200, reason="spam", room="!lobby:example.org"
        )

    def test_room_flag_before_the_command_name_is_not_a_command(self) -> None:
        """The command name comes first; ``--room`` in its place is an unknown command."""
        assert usage_error(f"!mod --room !lobby:example.org ban {ALICE}").problem == "unknown command '--room'"

    @pytest.mark.parametrize("room", ["!abc", "#help:example.org"])
    def test_room_flag_accepts_v12_ids_and_aliases(self, room: str) -> None:
        """``--room`` takes room v12 ids without a server, and aliases."""
        assert parse_command(f"!mod kick {ALICE} --room {room}").room == room

    @pytest.mark.parametrize("tail", ["--room", "--room lobby", "--room #nohost", "--room=lobby"])
    def test_room_flag_needs_a_room(self, tail: str) -> None:
        """``--room`` without a valid room id or alias is a usage error."""
        assert usage_error(f"!mod kick {ALICE} {tail}").problem.startswith("--room needs a room id")

    @pytest.mark.parametrize("user", ["alice", "@alice", "alice:example.org", "@:example.org", "#alice:example.org"])
    def test_rejects_non_user_ids(self, user: str) -> None:
        """Only full user ids are accepted as the target."""
        assert "is not a user id" in usage_error(f"!mod kick {user}").problem

    def test_missing_user(self) -> None:
        """A command that needs a user and has none asks which user."""
        assert usage_error("!mod kick").problem.startswith("which user?")

    def test_unknown_command(self) -> None:
        """An unknown command name is reported as such."""
        assert usage_error("!mod obliterate @alice:example.org").problem == "unknown command 'obliterate'"

    def test_reason_is_capped(self) -> None:
        """Very long reasons are cut to MAX_REASON characters."""
        assert len(parse_command(f"!mod kick {ALICE} " + "x" * 5000).reason) == MAX_REASON

    def test_other_prefix(self) -> None:
        """A configured prefix replaces ``!mod``."""
        assert parse_command(f"!abuse kick {ALICE}", prefix="!abuse") == Parsed("kick", user=ALICE)


class TestCommandText:
    def test_plain_body(self) -> None:
        """Without HTML the body is the command, whitespace collapsed."""
        assert command_text(message({"msgtype": "m.text", "body": f"!mod  kick\t{ALICE}"})) == f"!mod kick {ALICE}"

    def test_mention_pill_becomes_user_id(self) -> None:
        """A percent-encoded matrix.to pill in formatted_body becomes the user id, its label dropped."""
        event = message(
            {
                "msgtype": "m.text",
                "body": "!mod ban Alice spam",
                "format": "org.matrix.custom.html",
                "formatted_body": '!mod ban <a href="https://matrix.to/#/%40alice%3Aexample.org">Alice</a> spam',
            }
        )
        assert command_text(event) == "!mod ban @alice:example.org spam"

    def test_unencoded_pill_becomes_user_id(self) -> None:
        """A pill whose href holds the user id unencoded also becomes the user id."""
        event = message(
            {
                "msgtype": "m.text",
                "body": "!mod kick Alice",
                "format": "org.matrix.custom.html",
                "formatted_body": '!mod kick <a href="https://matrix.to/#/@alice:example.org?via=x">Alice</a>',
            }
        )
        assert command_text(event) == "!mod kick @alice:example.org"

    def test_mention_parses_to_its_user(self) -> None:
        """The extracted text of a pill command parses with the pill's user as target."""
        event = message(
            {
                "msgtype": "m.text",
                "body": "!mod ban Alice 1h spam",
                "format": "org.matrix.custom.html",
                "formatted_body": '!mod ban <a href="https://matrix.to/#/%40alice%3Aexample.org">Alice</a> 1h spam',
            }
        )
        text = command_text(event)
        assert text is not None
        assert parse_command(text) == Parsed("ban", user=ALICE, duration_s=3600, reason="spam")

    def test_rich_reply_fallback_in_html_is_ignored(self) -> None:
        """The quoted ``<mx-reply>`` block (with its own links) is not part of the command."""
        event = message(
            {
                "msgtype": "m.text",
                "body": "> <@bob:example.org> buy cheap stuff\n\n!mod kick Alice",
                "format": "org.matrix.custom.html",
                "formatted_body": (
                    "<mx-reply><blockquote>"
                    '<a href="https://matrix.to/#/!room:example.org/$event">In reply to</a> '
                    '<a href="https://matrix.to/#/%40bob%3Aexample.org">@bob:example.org</a>'
                    "<br>buy cheap stuff</blockquote></mx-reply>"
                    '!mod kick <a href="https://matrix.to/#/%40alice%3Aexample.org">Alice</a>'
                ),
                "m.relates_to": {"m.in_reply_to": {"event_id": "$event"}},
            }
        )
        assert command_text(event) == f"!mod kick {ALICE}"

    def test_rich_reply_fallback_in_body_is_ignored(self) -> None:
        """Without HTML, the ``> `` quoted lines of a reply fallback are dropped from the body."""
        event = message(
            {
                "msgtype": "m.text",
                "body": "> <@bob:example.org> buy cheap stuff\n> at example.com\n\n!mod kick @alice:example.org",
            }
        )
        assert command_text(event) == f"!mod kick {ALICE}"

    def test_html_without_the_format_field_uses_body(self) -> None:
        """formatted_body is only read when ``format`` says it is Matrix HTML."""
        event = message({"msgtype": "m.text", "body": "!mod status", "formatted_body": "<b>!mod kick x</b>"})
        assert command_text(event) == "!mod status"

    @pytest.mark.parametrize("msgtype", ["m.image", "m.emote", "m.file"])
    def test_non_text_messages_are_not_commands(self, msgtype: str) -> None:
        """Images, emotes and files never carry commands."""
        assert command_text(message({"msgtype": msgtype, "body": "!mod status"})) is None

    def test_non_messages_are_not_commands(self) -> None:
        """A sticker whose body looks like a command is not one."""
        assert command_text(message({"body": "!mod status", "url": "mxc://x/y"}, "m.sticker")) is None

    def test_wrongly_typed_body_is_not_a_command(self) -> None:
        """A body that is not a string yields no command text (and does not raise)."""
        assert command_text(message({"msgtype": "m.text", "body": ["!mod", "status"]})) is None


class TestInvisibleCharacters:
    def test_zero_width_and_bidi_characters_are_dropped_from_commands(self) -> None:
        """A trailing zero-width space or an embedded bidi control does not change the command."""
        from abusebot.events import parse_event

        raw = {
            "event_id": "$z",
            "sender": "@m:x",
            "type": "m.room.message",
            "origin_server_ts": 1,
            "content": {"msgtype": "m.text", "body": "!mod sta\u200btus\u202e\u200b"},
        }
        event = parse_event(raw, "!r")
        assert event is not None
        assert command_text(event) == "!mod status"


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("stauts", "status"), ("histroy", "history"), ("hlep", "help"), ("bna", "ban"), ("kik", "kick")],
)
def test_a_typo_is_taken_for_the_command_it_is_fewest_typos_from(typed: str, meant: str) -> None:
    """A swap of two letters is one typo: "stauts" is "status", even beside "stats"."""
    from abusebot.commands import closest

    assert closest(typed, ["status", "stats", "history", "help", "ban", "kick", "unban"]) == [meant]
    assert closest("xyzzy", ["status", "stats"]) == []
