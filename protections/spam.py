"""Spam: banned phrases and patterns, link, invite and mention spam, cross-posting, new-member links.

Everything a user can see is checked: ``body``, ``formatted_body`` (as text, and its links), the
new content of an edit, and display names (a banned display name is escalated but there is
nothing to redact). Matching runs on :func:`normalize`'d text, so case, compatibility forms
(fullwidth, mathematical letters), accents, invisible characters and common lookalike letters
(Greek ``υ`` for ``u``, Cyrillic ``а`` for ``a``) do not hide a banned phrase.

No match may stall the loop: moderators' regular expressions run on RE2 (linear time, no
backtracking), banned phrases and denied domains are found with Aho–Corasick and confirmed with
one RE2 search, and every scan that extracts items (links, mentions) stops after
:data:`MAX_ITEMS` of them. Our own fixed expressions that run on Python's ``re`` are linear by
construction (each starts with a literal and scans a character class that excludes its start).

Matchers are compiled once per settings object (:func:`matchers_for`), never per event.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ahocorasick
import attrs
import re2
from confusable_homoglyphs import confusables as _confusables

from abusebot.events import Event
from protections import Context, Evidence, Intent, Protection, Violation

# -- normalisation -------------------------------------------------------------------------------

#: Characters with no visible glyph that are letters by category (Hangul fillers, braille blank).
_INVISIBLE_LETTERS = (0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800)
_INVISIBLE_SPACES = re.compile("[" + "".join(chr(code) for code in _INVISIBLE_LETTERS) + "]")
#: Most characters of a non-message event's strings that are checked.
MAX_TEXT_CHARS = 65536
#: Categories removed: format (zero-width, bidi controls, tags), combining marks (accents, zalgo),
#: controls (but not whitespace), lone surrogates.
_DROPPED_CATEGORIES = frozenset({"Cf", "Mn", "Me", "Cc", "Cs"})


def _confusable_map() -> dict[int, str]:
    """Non-ASCII characters whose Unicode TR39 confusable prototype is one ASCII letter or digit.

    The data (``confusables.txt`` of Unicode's security mechanisms) ships with the
    ``confusable-homoglyphs`` package as a symmetric table: a source character lists its
    prototype, a prototype lists its sources. A non-ASCII character never is the prototype of an
    ASCII one, so the ASCII letter or digit a non-ASCII character lists is its prototype.
    """
    mapping: dict[int, str] = {}
    for char, entries in _confusables.confusables_data.items():
        if len(char) != 1 or char.isascii():
            continue
        for entry in entries:
            target = entry.get("c", "")
            if len(target) == 1 and target.isascii() and target.isalnum():
                # TR39 folds capital I and its lookalikes (Greek Ι, Cyrillic І, Ӏ) to "l"; as in
                # ASCII, where "I".lower() == "i", a capital I lookalike stands for "i" here.
                folded = "i" if target == "l" and char.isupper() else target.lower()
                mapping[ord(char)] = folded
                break
    # The ideographic full stop (and, after NFKD, the halfwidth one) separates host labels too.
    mapping[0x3002] = "."
    return mapping


def _dropped() -> list[int]:
    """Code points with no visible glyph of their own: format characters (zero-width, bidi
    controls, tags), combining marks (accents, zalgo), controls other than whitespace, lone
    surrogates, and a few invisible "letters". Marks and format characters live in planes 0, 1
    and 14 only."""
    category = unicodedata.category
    codes = [*range(0x20000), *range(0xE0000, 0xE1000)]
    return [
        code
        for code in codes
        if code in _INVISIBLE_LETTERS or (category(chr(code)) in _DROPPED_CATEGORIES and not chr(code).isspace())
    ]


def _char_class(codes: Iterable[int]) -> str:
    """A regular-expression character class of ``codes`` (as ranges)."""
    ranges: list[list[int]] = []
    for code in sorted(codes):
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "[" + "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "") for a, b in ranges) + "]"


#: The ``str.translate`` table: dropped characters map to ``None``, lookalikes to ASCII.
_FOLD: dict[int, str | None] = {**dict.fromkeys(_dropped()), **_confusable_map()}
#: Any character :data:`_FOLD` changes, for a C-speed scan (most text needs no translating). The
#: class holds the basic plane only (Python's re tests it with a bitmap) and any astral character
#: (emoji, tags) takes the translating path.
_FOLDABLE = re.compile(_char_class(code for code in _FOLD if code < 0x10000) + "|[\U00010000-\U0010ffff]")
#: ASCII controls other than whitespace (NUL, BEL, ESC…) are dropped too.
_ASCII_CONTROLS = {code: None for code in (*range(32), 127) if not chr(code).isspace()}


def normalize(text: str) -> str:
    """Text as compared: compatibility forms folded, invisible characters, marks and accents
    dropped, case folded, lookalike letters folded to ASCII, whitespace collapsed.

    ``normalize("bυy ch\\u200beap ＣＲＹＰＴＯ") == "buy cheap crypto"``. Short ASCII text (most
    messages) takes a fast path: lower case and whitespace only.

    Steps: NFKD (compatibility decomposition: fullwidth and mathematical letters become ASCII,
    accents become separate marks) → drop format characters (zero-width, bidi controls), marks
    and controls, and fold lookalikes → casefold → fold again (casefold can make new lowercase
    lookalikes) → NFC → collapse whitespace. Lookalikes are folded *before* casefolding because
    case matters to how a letter looks: Greek capital Υ looks like Y, its small υ like u.
    """
    if text.isascii():
        if not text.isprintable():
            text = text.translate(_ASCII_CONTROLS)
        return " ".join(text.lower().split())
    text = unicodedata.normalize("NFKD", text)
    if _FOLDABLE.search(text):
        text = text.translate(_FOLD)
    text = text.casefold()
    if not text.isascii():
        if _FOLDABLE.search(text):
            text = text.translate(_FOLD)
        text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())


# Our own fixed expressions, linear on Python's re: each starts at "<" and scans [^<>].
_BLOCK_TAG = re.compile(
    r"<(?:br|hr|/?(?:p|div|li|ul|ol|h[1-6]|blockquote|pre|tr|td|th|table|details|summary))\b[^<>]*>",
    re.IGNORECASE,
)
_TAG = re.compile(r"<[^<>]*>")


#: Attributes whose values clients show (spoiler reasons, maths, image alt text and titles).
_SHOWN_ATTRIBUTE = re.compile(
    r"""\s(?:data-mx-spoiler|data-mx-maths|alt|title)\s*=\s*(?:"([^"<>]*)"|'([^'<>]*)')""", re.IGNORECASE
)


def html_text(markup: str) -> str:
    """The text an HTML ``formatted_body`` shows: tags removed (block tags become spaces), the
    attributes clients display (spoiler reasons, alt text, titles, maths) kept, entities decoded.
    Not a sanitiser — only for matching."""
    if "<" in markup:
        shown = [a or b for a, b in _SHOWN_ATTRIBUTE.findall(markup)] if "=" in markup else []
        markup = _TAG.sub("", _BLOCK_TAG.sub(" ", markup))
        if shown:
            markup = " ".join([markup, *shown])
    if "&" in markup:
        markup = html.unescape(markup)
    return markup


# -- settings ------------------------------------------------------------------------------------

#: Chat invite hosts (and paths) other than matrix.to, checked when ``invite_links`` is on.
DEFAULT_INVITE_HOSTS = (
    "discord.gg",
    "discord.com/invite",
    "discordapp.com/invite",
    "t.me",
    "telegram.me",
    "telegram.dog",
    "chat.whatsapp.com",
    "signal.group",
    "join.slack.com",
    "guilded.gg",
)
#: Documentation and code hosts a programming community links to all day: never counted as
#: links (``docs_domains``; subdomains included). Denied domains and invites still apply.
DEFAULT_DOCS_DOMAINS = (
    "python.org",
    "pypi.org",
    "readthedocs.io",
    "readthedocs.org",
    "github.com",
    "githubusercontent.com",
    "gitlab.com",
    "codeberg.org",
    "stackoverflow.com",
    "stackexchange.com",
    "developer.mozilla.org",
    "docs.rs",
    "crates.io",
    "rust-lang.org",
    "go.dev",
    "golang.org",
    "nodejs.org",
    "npmjs.com",
    "learn.microsoft.com",
    "cppreference.com",
    "man7.org",
    "kernel.org",
    "wikipedia.org",
    "matrix.org",
    "spec.matrix.org",
)
#: Events other than messages whose text clients show: polls, reactions, a room's topic and name.
#: Their every string is checked (bounded), so no field is a hiding place.
OTHER_TEXT_TYPES = frozenset(
    {"m.reaction", "m.poll.start", "org.matrix.msc3381.poll.start", "m.room.topic", "m.room.name"}
)
#: Keys whose strings are identifiers, not text anyone reads.
_STRUCTURAL_KEYS = frozenset(
    {"event_id", "rel_type", "msgtype", "format", "kind", "id", "m.id", "mimetype", "url", "algorithm"}
)
#: Message types that carry media.
MEDIA_TYPES = frozenset({"m.image", "m.video", "m.audio", "m.file"})
#: At most this many links or mentions are extracted from one message (a hostile message with
#: thousands must not stall the loop; the limits that matter are far lower).
MAX_ITEMS = 500


def _re2_options(*, case_sensitive: bool = True) -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = case_sensitive
    options.max_mem = 64 << 20  # room for a few thousand phrases in one automaton
    return options


def _re2_error(err: Exception) -> str:
    detail = err.args[0] if err.args else err
    return detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)


def _compile_patterns(patterns: Sequence[str]) -> re2._Regexp | None:
    """All moderator patterns as one RE2 alternation (case-insensitive); ``ValueError`` names a
    pattern RE2 refuses."""
    if not patterns:
        return None
    options = _re2_options(case_sensitive=False)
    options.never_capture = True
    for pattern in patterns:
        try:
            re2.compile(pattern, options)
        except re2.error as err:
            raise ValueError(f"banned_patterns: invalid regular expression {pattern!r}: {_re2_error(err)}") from err
    try:
        return re2.compile("|".join(f"(?:{pattern})" for pattern in patterns), options)
    except re2.error as err:
        raise ValueError(f"banned_patterns: the patterns together are too large: {_re2_error(err)}") from err


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


_BEFORE_WORD = r"(?:^|[^\pL\pN_])"
_AFTER_WORD = r"(?:[^\pL\pN_]|$)"


def _phrases(values: Iterable[str]) -> tuple[str, ...]:
    """Normalised, non-empty, de-duplicated phrases, in order."""
    return tuple(dict.fromkeys(p for p in (normalize(v) for v in values) if p))


def _phrase_regex(phrases: Sequence[str], *, before: str = _BEFORE_WORD, after: str = _AFTER_WORD) -> re2._Regexp:
    """Any phrase, as a whole word at each end that is a word character."""
    alternatives = []
    for phrase in phrases:
        body = re2.escape(phrase)
        if _is_word(phrase[0]):
            body = before + body
        if _is_word(phrase[-1]):
            body += after
        alternatives.append(f"(?:{body})")
    options = _re2_options()
    options.never_capture = True
    try:
        return re2.compile("|".join(alternatives), options)
    except re2.error as err:
        raise ValueError(f"too many or too long phrases: {_re2_error(err)}") from err


def _validate_words(_instance: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for entry in value:
        if not normalize(entry):
            raise ValueError(f"{attribute.name}: {entry!r} is empty once normalised")
    if value:
        _phrase_regex(_phrases(value))


def _validate_patterns(_instance: Any, _attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    _compile_patterns(value)


_DOMAIN = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)*")


def _domain(value: str) -> str:
    """A deny/allow list entry as compared: normalised, without ``*.``, scheme or trailing dot."""
    domain = normalize(value)
    for prefix in ("https://", "http://", "*.", "."):
        domain = domain.removeprefix(prefix)
    return domain.rstrip("./")


def _validate_domains(_instance: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for entry in value:
        if not _DOMAIN.fullmatch(_domain(entry)):
            raise ValueError(f"{attribute.name}: {entry!r} is not a domain like 'example.org'")


def _validate_hosts(_instance: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for entry in value:
        host = _domain(entry)
        if not host or any(c.isspace() for c in host) or not _DOMAIN.fullmatch(host.split("/", 1)[0]):
            raise ValueError(f"{attribute.name}: {entry!r} is not a host (and path) like 'discord.gg'")


_count = attrs.validators.ge(0)


def _off_or_at_least_two(_instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if value != 0 and value < 2:
        raise ValueError(f"{attribute.name}: expected 0 (off) or at least 2 rooms, got {value}")


@attrs.frozen
class SpamSettings:
    """What counts as spam. A count of 0 switches that check off."""

    #: Phrases matched as whole words after normalisation (case- and lookalike-insensitive).
    banned_words: tuple[str, ...] = attrs.field(default=(), validator=_validate_words)
    #: RE2 regular expressions, matched case-insensitively against the normalised text.
    banned_patterns: tuple[str, ...] = attrs.field(default=(), validator=_validate_patterns)
    #: Most distinct link domains in one message (allowed and documentation domains do not count).
    max_links: int = attrs.field(default=5, validator=_count)
    #: Documentation hosts whose links never count (see :data:`DEFAULT_DOCS_DOMAINS`).
    docs_domains: tuple[str, ...] = attrs.field(default=DEFAULT_DOCS_DOMAINS, validator=_validate_domains)
    #: Any link to these domains (or their subdomains), even unlinked text like "evil.example".
    denied_domains: tuple[str, ...] = attrs.field(default=(), validator=_validate_domains)
    #: Links to these domains (or their subdomains) are never counted or refused.
    allowed_domains: tuple[str, ...] = attrs.field(default=(), validator=_validate_domains)
    #: When true, a link to any domain not in ``allowed_domains`` is a violation.
    allowed_domains_only: bool = False
    #: Refuse invites to other platforms' chats (``invite_hosts`` links): major spam.
    invite_links: bool = True
    #: Also refuse links to other Matrix rooms (matrix.to / matrix: links). Off by default: in a
    #: programming community a link to another room is usually an honest pointer.
    matrix_invites: bool = False
    invite_hosts: tuple[str, ...] = attrs.field(default=DEFAULT_INVITE_HOSTS, validator=_validate_hosts)
    #: Invites that are fine besides the protected rooms themselves: "#room:server", "!id:server",
    #: or "discord.gg/code".
    allowed_invites: tuple[str, ...] = ()
    #: Most distinct users mentioned in one message.
    max_mentions: int = attrs.field(default=10, validator=_count)
    #: Refuse an @room that would ping the room: the text from a sender who can notify it
    #: (``notifications.room`` level) but is not room staff, or ``m.mentions.room`` from anyone
    #: but room staff. The text from someone who cannot notify pings nobody and is fine.
    room_mentions: bool = True
    #: The same text from one user in this many protected rooms within ``cross_room_seconds``.
    cross_room_count: int = attrs.field(default=3, validator=_off_or_at_least_two)
    cross_room_seconds: int = attrs.field(default=60, validator=attrs.validators.ge(1))
    #: Shorter texts ("hi", "thanks!") are not compared across rooms.
    cross_room_min_length: int = attrs.field(default=16, validator=_count)
    #: A member's first message within this many minutes of joining may not be a link or media.
    #: Off (0) by default: such a violation is the member's first activity, which the ladder
    #: answers with a permanent ban, and in a programming community a newcomer's first message
    #: is often an honest link (docs, a paste). Switch it on during a wave of link spammers.
    new_member_minutes: int = attrs.field(default=0, validator=_count)
    #: Check display names for banned phrases and patterns.
    display_names: bool = True


# -- compiled matchers ---------------------------------------------------------------------------


def _automaton(words: Iterable[str]) -> Any:
    automaton = ahocorasick.Automaton()
    for word in words:
        automaton.add_word(word, word)
    automaton.make_automaton()
    return automaton


class Matchers:
    """Everything compiled from one settings object."""

    def __init__(self, settings: SpamSettings) -> None:
        phrases = _phrases(settings.banned_words)
        #: Aho–Corasick finds candidate phrases in one pass; RE2 confirms word boundaries.
        self.phrases = _automaton(phrases) if phrases else None
        self.phrase_regex = _phrase_regex(phrases) if phrases else None
        self.patterns = _compile_patterns(settings.banned_patterns)
        denied = tuple(dict.fromkeys(_domain(d) for d in settings.denied_domains))
        self.denied = _automaton(denied) if denied else None
        # A denied domain as a whole host name: not part of a longer label, nor followed by one.
        self.denied_regex = (
            _phrase_regex(denied, before=r"(?:^|[^a-z0-9-])", after=r"(?:$|[^a-z0-9.-]|\.(?:$|[^a-z0-9]))")
            if denied
            else None
        )
        self.allowed_set = frozenset(_domain(d) for d in (*settings.allowed_domains, *settings.docs_domains))
        hosts = "|".join(re2.escape(_domain(h)) for h in settings.invite_hosts)
        invite = (
            r"matrix\.to/#/([#!]|%23|%21)([^\s<>\"'?/]+)"
            r"|matrix:(r|roomid)/([^\s<>\"'?/]+)"
            + (rf"|(?:^|[^a-z0-9.-])(?:https?://)?(?:www\.)?((?:{hosts})/[^\s<>\"'?#]+)" if hosts else "")
        )
        self.invites = re2.compile(invite, _re2_options())
        #: The literal parts every invite has: most links (and all other text) skip the RE2 scan.
        self.invite_markers = _automaton(
            ("matrix.to/#/", "matrix:r/", "matrix:roomid/", *(_domain(h) + "/" for h in settings.invite_hosts))
        )
        self.allowed_invites = frozenset(_invite_key(normalize(i)) for i in settings.allowed_invites)


# Our own fixed extractors, linear on Python's re (cheaper per match than RE2's wrapper): a link
# is a literal start and then one run of a class with nothing after it to backtrack for; a user
# id's first run cannot contain "@", so the runs tried from different "@"s never overlap.
_LINK = re.compile(r"(?:https?://|www\.)[^\s<>\"'`]+")
_MXID = re.compile(r"@[a-z0-9._=/+-]+:[a-z0-9.-]+(?::[0-9]{1,5})?")
_ROOM_MENTION = re.compile(r"@room(?![\w])")
#: Code spans and blocks (HTML or Markdown backticks): user ids inside them are not mentions.
_CODE = re.compile(r"<(code|pre)\b[^<>]*>[^<]*</\1>|`[^`\n]*`", re.IGNORECASE)
_COMPILED: dict[int, tuple[SpamSettings, Matchers]] = {}


def matchers_for(settings: SpamSettings) -> Matchers:
    """The matchers of ``settings``, compiled on first use (cached by the settings object)."""
    entry = _COMPILED.get(id(settings))
    if entry is not None and entry[0] is settings:
        return entry[1]
    return _compile(settings)


def _compile(settings: SpamSettings) -> Matchers:
    if len(_COMPILED) >= 256:  # settings objects are few; this only bounds a leak
        _COMPILED.clear()
    matchers = Matchers(settings)
    _COMPILED[id(settings)] = (settings, matchers)
    return matchers


def _invite_key(target: str) -> str:
    """An invite as compared: "#alias:server", "!id", or "host/code" (no trailing slash)."""
    return target.replace("%23", "#", 1).replace("%21", "!", 1).rstrip("/")


def _host(url: str) -> str:
    """The host of a link found by :data:`_LINK`."""
    rest = url.split("://", 1)[1] if "://" in url else url
    for stop in "/?#\\":
        rest = rest.split(stop, 1)[0]
    host = rest.rpartition("@")[2]
    if not host.startswith("["):
        host = host.split(":", 1)[0]
    return host.strip(".")


def _under(host: str, domains: frozenset[str]) -> bool:
    """True when ``host`` is one of ``domains`` or a subdomain of one."""
    if not domains:
        return False
    labels = host.split(".")
    return any(".".join(labels[i:]) in domains for i in range(len(labels)))


def _scan(regex: re2._Regexp | re.Pattern[str], text: str) -> Iterable[Any]:
    """At most :data:`MAX_ITEMS` matches of ``regex``."""
    for count, match in enumerate(regex.finditer(text)):
        if count >= MAX_ITEMS:
            return
        yield match


# -- the protection --------------------------------------------------------------------------------


_NOTHING: tuple[str | None, str, tuple[tuple[str, str], ...]] = (None, "", ())
#: Recent posts kept for the cross-room rule, at most (the oldest are forgotten first).
MAX_TRACKED = 100_000


class Spam(Protection):
    """Redact spam and escalate the sender on the ladder (display names: escalate only)."""

    name = "spam"
    description = "banned phrases and patterns, link, invite and mention spam, cross-posting, new-member links"
    Settings = SpamSettings
    event_types = frozenset({"m.room.message", "m.sticker", "m.room.member", *OTHER_TEXT_TYPES})

    def __init__(self) -> None:
        #: hash of (sender, text) → (last post time, flagged until, room, time, event id, room, …),
        #: least recently posted first. Flat tuples of strings and numbers, and int keys: the
        #: garbage collector stops tracking them, so a hundred thousand entries cost it nothing.
        # OrderedDicts, not dicts: entries are moved to the end on use and evicted from the front,
        # and next(iter(dict)) over a plain dict's deleted front slots costs O(deleted) each time
        # (it made this protection 5x slower over 200,000 events).
        self._posted: OrderedDict[int, tuple[Any, ...]] = OrderedDict()
        self._posts = 0
        #: (room, user) → the join time whose first message we have seen.
        self._first_message: OrderedDict[tuple[str, str], float] = OrderedDict()
        #: (user, normalised display name) → when it was last reported (one report, not one per room).
        self._names: dict[tuple[str, str], float] = {}

    async def check(self, event: Event, settings: SpamSettings, ctx: Context) -> Sequence[Intent]:
        """Inspect a message or a member event; at most one violation per event."""
        entry = _COMPILED.get(id(settings))  # matchers_for(), inlined: this runs for every event
        m = entry[1] if entry is not None and entry[0] is settings else _compile(settings)
        if event.type == "m.room.member":
            return self._check_name(event, settings, m, ctx)
        if event.type in OTHER_TEXT_TYPES:
            raw = " ".join(_strings(event.content))
            text = normalize(raw)
            rule, severity = _text_rules(event, settings, m, ctx, text, text) if text else (None, "")
            if rule is None and _INVISIBLE_SPACES.search(raw):
                rule = _banned(m, _spaced(raw))
                severity = "major"
            if rule is None:
                return []
            return [Violation(rule, event.sender, event.room_id, Evidence.of(event, text), severity=severity)]

        now = ctx.now()
        new_member = settings.new_member_minutes > 0 and self._is_first_message_of_new_member(event, settings, ctx, now)
        if event.formatted_body is None and "m.new_content" not in event.content and "filename" not in event.content:
            plain = markup = first = normalize(event.body) if event.body else ""
        else:
            plain_parts, markup_parts = _texts(event)
            first = plain_parts[0] if plain_parts else ""
            plain = "\n".join(plain_parts)
            markup = "\n".join(markup_parts)

        rule, severity, elsewhere = _NOTHING
        if settings.cross_room_count and event.type == "m.room.message":
            rule, severity, elsewhere = self._cross_room(event, settings, first, now)
        if rule is None:
            rule, severity = _text_rules(event, settings, m, ctx, plain, markup)
        if rule is None and _INVISIBLE_SPACES.search(event.text):
            # Blank letters (braille blank, Hangul fillers) are dropped when matching, since a
            # spammer can put them inside a word; shown as spaces they separate words too.
            rule = _banned(m, _spaced(" ".join(_strings(event.content))))
            severity = "major" if rule else severity
        if rule is None and new_member:
            if event.msgtype in MEDIA_TYPES:
                rule, severity = "spam: new member posted media", "minor"
            elif _links(m, markup) or (settings.invite_links and _invites(m, markup, ctx)):
                rule, severity = "spam: new member posted a link", "minor"
        if rule is None:
            return []
        return [
            Violation(
                rule,
                event.sender,
                event.room_id,
                Evidence.of(event),
                severity=severity,
                also_redact_elsewhere=elsewhere,
            )
        ]

    # -- display names ----------------------------------------------------------------------------

    def _check_name(self, event: Event, settings: SpamSettings, m: Matchers, ctx: Context) -> Sequence[Intent]:
        reason = event.content.get("reason")
        if isinstance(reason, str) and reason and event.state_key == event.sender:
            # A leave or join whose reason carries the spam: removed like a message.
            rule = _banned(m, normalize(reason))
            if rule is not None:
                evidence = Evidence.of(event, reason)
                return [Violation(f"{rule} in a membership reason", event.sender, event.room_id, evidence, "major")]
        name = event.displayname
        if not settings.display_names or event.membership != "join" or not name or event.state_key != event.sender:
            return []
        unsigned = event.raw.get("unsigned")
        prev = unsigned.get("prev_content") if isinstance(unsigned, Mapping) else None
        if isinstance(prev, Mapping) and prev.get("membership") == "join" and prev.get("displayname") == name:
            return []  # an avatar change or a repeat: the name was checked when it was set
        normal = normalize(name)
        rule = _banned(m, normal)
        if rule is None:
            return []
        # A profile change is one member event per room: one violation, not one per room.
        now = ctx.now()
        key = (event.sender, normal)
        if now - self._names.get(key, float("-inf")) < 600:
            return []
        if len(self._names) > 10_000:
            self._names = {k: t for k, t in self._names.items() if now - t < 600}
        self._names[key] = now
        return [
            Violation(f"{rule} in display name", event.sender, event.room_id, Evidence.of(event, name), redact=False)
        ]

    # -- state across events ----------------------------------------------------------------------

    def _is_first_message_of_new_member(self, event: Event, settings: SpamSettings, ctx: Context, now: float) -> bool:
        """True for a member's first message within ``new_member_minutes`` of a join we saw."""
        joined = ctx.joined_at(event.room_id, event.sender)
        window = settings.new_member_minutes * 60
        if joined is None or now - joined > window:
            return False
        key = (event.room_id, event.sender)
        first = self._first_message
        if first.get(key) == joined:
            return False
        first[key] = joined
        first.move_to_end(key)  # newest last
        while len(first) > 1000:  # forget members whose window is over, oldest first
            oldest = next(iter(first))
            if now - first[oldest] <= window and len(first) <= MAX_TRACKED:
                break
            del first[oldest]
        return True

    def _cross_room(
        self, event: Event, settings: SpamSettings, text: str, now: float
    ) -> tuple[str | None, str, tuple[tuple[str, str], ...]]:
        """Record the message; a violation when the same one is now in ``cross_room_count`` rooms.

        After it triggered, further copies within ``cross_room_seconds`` are violations too.
        """
        if event.msgtype in MEDIA_TYPES:
            url = event.content.get("url")
            if not isinstance(url, str) or not url:
                return _NOTHING
            text = "\0media:" + url  # the same file, whatever its caption
        elif len(text) < settings.cross_room_min_length:
            return _NOTHING
        key = hash((event.sender, text))
        window = settings.cross_room_seconds
        room = event.room_id
        seen = self._posted.get(key)
        result = _NOTHING
        if seen is None:
            self._posted[key] = (now, 0.0, room, now, event.event_id)
        else:
            flagged_until = seen[1]
            posts = [
                (seen[i], seen[i + 1], seen[i + 2])
                for i in range(2, len(seen), 3)
                if seen[i] != room and now - seen[i + 1] <= window
            ]
            posts.append((room, now, event.event_id))
            if now < flagged_until:  # the same burst goes on in yet another room
                result, posts = ("spam: same message in several rooms", "major", ()), []
            elif len(posts) >= settings.cross_room_count:
                others = tuple((r, e) for r, _, e in posts[:-1])
                result, posts = ("spam: same message in several rooms", "major", others), []
                flagged_until = now + window
            # Re-inserted, so the least recently posted come first.
            self._posted[key] = (now, flagged_until, *(item for post in posts for item in post))
            self._posted.move_to_end(key)
        self._posts += 1
        if self._posts % 256 == 0 or len(self._posted) > MAX_TRACKED:
            posted = self._posted
            while posted:  # forget what is out of every window, least recent first
                oldest = next(iter(posted))
                last, flagged_until = posted[oldest][:2]
                if (now - last <= window or now < flagged_until) and len(posted) <= MAX_TRACKED:
                    break
                del posted[oldest]
        return result


# -- rules on one message's text ---------------------------------------------------------------------


def _texts(event: Event) -> tuple[list[str], list[str]]:
    """The message's texts, normalised: ``plain`` as readers see them (HTML as text), and
    ``markup`` (HTML with its tags, so the links and pills inside it are found too).

    Body and formatted body, and an edit's new content (a harmless fallback body must not hide
    a spammy edit).
    """
    new_content = event.content.get("m.new_content")
    parts: list[tuple[Any, bool]] = [(event.body, False), (event.formatted_body, True)]
    filename = event.content.get("filename")
    if isinstance(filename, str):
        parts.append((filename, False))
    if isinstance(new_content, Mapping):
        parts += [(new_content.get("body"), False), (new_content.get("formatted_body"), True)]
    plain: list[str] = []
    markup: list[str] = []
    for part, is_html in parts:
        if not isinstance(part, str) or not part:
            continue
        if not is_html:
            normal = normalize(part)
            plain.append(normal)
            markup.append(normal)
            continue
        shown = normalize(html_text(part))
        plain.append(shown)
        markup.append(shown if "<" not in part else normalize(html.unescape(part) if "&" in part else part))
    return plain, markup


def _strings(content: Any, limit: int = MAX_TEXT_CHARS) -> list[str]:
    """Every string a client could show in ``content``, depth-first, at most ``limit`` characters
    and 6 levels deep (identifiers left out)."""
    found: list[str] = []
    budget = limit
    stack: list[tuple[Any, int]] = [(content, 0)]
    while stack and budget > 0:
        value, depth = stack.pop()
        if isinstance(value, str):
            found.append(value[:budget])
            budget -= len(value)
        elif depth < 6 and isinstance(value, Mapping):
            stack.extend((v, depth + 1) for k, v in value.items() if k not in _STRUCTURAL_KEYS)
        elif depth < 6 and isinstance(value, list):
            stack.extend((v, depth + 1) for v in value[:MAX_ITEMS])
    return found


def _spaced(text: str) -> str:
    """``text`` normalised with blank letters read as spaces (see :data:`_INVISIBLE_SPACES`)."""
    return normalize(_INVISIBLE_SPACES.sub(" ", html_text(text) if "<" in text else text))


def _found(automaton: Any, regex: re2._Regexp | None, text: str) -> bool:
    """Aho–Corasick finds a candidate in one pass; RE2 confirms it stands as a whole word."""
    return (
        automaton is not None
        and regex is not None
        and next(automaton.iter(text), None) is not None
        and regex.search(text) is not None
    )


def _banned(m: Matchers, text: str) -> str | None:
    """The banned-phrase or banned-pattern rule ``text`` breaks, if any."""
    if _found(m.phrases, m.phrase_regex, text):
        return "spam: banned phrase"
    if m.patterns is not None and m.patterns.search(text) is not None:
        return "spam: banned pattern"
    return None


def _links(m: Matchers, markup: str) -> dict[str, str]:
    """The distinct links in ``markup`` and their hosts (mention pills and allowed domains left out)."""
    if "://" not in markup and "www." not in markup:
        return {}
    links: dict[str, str] = {}
    for match in _scan(_LINK, markup):
        url = match.group().rstrip(".,;:!?)]}*_~")
        host = _host(url)
        if host == "matrix.to" and "#/@" in url:
            continue  # a mention pill
        if host and not _under(host, m.allowed_set):
            links[url.split("://", 1)[-1]] = host
    return links


def _invites(m: Matchers, markup: str, ctx: Context) -> list[str]:
    """Invites in ``markup`` to rooms or chats that are not allowed."""
    if next(m.invite_markers.iter(markup), None) is None:
        return []
    found = []
    allowed: set[str] | None = None
    for match in _scan(m.invites, markup):
        sigil, room, kind, uri_room, *rest = match.groups()
        other = rest[0] if rest else None
        if room is not None:
            key = _invite_key(sigil + room)
        elif uri_room is not None:
            key = ("#" if kind == "r" else "!") + uri_room
        else:
            key = _invite_key(other or "")
        if key in m.allowed_invites:
            continue
        if key[0] in "#!":
            if allowed is None:
                allowed = _protected_room_keys(ctx)
            if key in allowed:
                continue
        found.append(key)
    return found


def _protected_room_keys(ctx: Context) -> set[str]:
    """The protected rooms' ids and aliases (lower case, as in normalised text)."""
    keys = set()
    for room_id in ctx.rooms():
        keys.add(room_id.lower())
        content = ctx.room(room_id).content("m.room.canonical_alias")
        alias = content.get("alias")
        if isinstance(alias, str):
            keys.add(alias.lower())
        alt = content.get("alt_aliases")
        if isinstance(alt, list):
            keys.update(a.lower() for a in alt if isinstance(a, str))
    return keys


def _mentions(mentions: Mapping[str, Any] | None, markup: str) -> set[str]:
    """Distinct users mentioned: ``m.mentions.user_ids`` and user ids in the text (pills too)."""
    users: set[str] = set()
    if mentions is not None:
        ids = mentions.get("user_ids")
        if isinstance(ids, list):
            users.update(u.lower() for u in ids[:MAX_ITEMS] if isinstance(u, str))
    if "@" in markup:
        if "`" in markup or "<code" in markup or "<pre" in markup:
            markup = _CODE.sub(" ", markup)  # ids in code (a config, a log) ping nobody
        users.update(match.group() for match in _scan(_MXID, markup))
    return users


def _room_mention_forbidden(event: Event, ctx: Context, intentional: bool) -> bool:
    """An @room that pings the room from someone who is not its staff (below the ban level):
    asked for with ``m.mentions.room``, or written by a sender at the ``notifications.room``
    level (default 50), whose text notifies the room. Below that level the text pings nobody."""
    room = ctx.room(event.room_id)
    levels = room.power_levels
    own = levels.user_level(event.sender)
    if own >= levels.ban:
        return False  # room staff: an announcement
    if intentional:
        return True
    notifications = room.content("m.room.power_levels").get("notifications")
    needed = notifications.get("room", 50) if isinstance(notifications, Mapping) else 50
    if isinstance(needed, bool) or not isinstance(needed, int):
        needed = 50
    return own >= needed


def _text_rules(
    event: Event, settings: SpamSettings, m: Matchers, ctx: Context, plain: str, markup: str
) -> tuple[str | None, str]:
    """The first rule the message's text breaks, most serious first: (rule, severity).

    Cheap substring tests first: most messages have no "/", "@" or "www." at all.
    """
    mentions = event.content.get("m.mentions")
    if not isinstance(mentions, Mapping):
        mentions = None
    slash = "/" in markup
    if slash and (settings.invite_links or settings.matrix_invites):
        found = _invites(m, markup, ctx)
        if settings.invite_links and any(key[0] not in "#!" for key in found):
            return "spam: invite link", "major"
        if settings.matrix_invites and any(key[0] in "#!" for key in found):
            return "spam: invite to another Matrix room", "minor"
    if (
        settings.max_mentions
        and (mentions or "@" in markup)
        and len(_mentions(mentions, markup)) > settings.max_mentions
    ):
        return "spam: mass mention", "major"
    banned = _banned(m, plain)
    if banned is not None:
        return banned, "major"
    if _found(m.denied, m.denied_regex, markup):
        return "spam: link to a denied domain", "minor"
    if slash or "www." in markup:
        links = _links(m, markup)
        if links and settings.allowed_domains_only:
            return "spam: link to a domain not allowed", "minor"
        if settings.max_links and len(set(links.values())) > settings.max_links:
            return "spam: too many links", "minor"
    if settings.room_mentions:
        intentional = mentions is not None and mentions.get("room") is True
        if (intentional or _ROOM_MENTION.search(plain)) and _room_mention_forbidden(event, ctx, intentional):
            return "spam: @room ping", "minor"
    return None, ""
