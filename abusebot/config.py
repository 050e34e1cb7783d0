"""Configuration: YAML loaded into frozen attrs classes and validated before anything starts.

Every error names the key path (``protected_rooms[1]``) and what was expected, so the CLI can
print one line and exit with status 2. The ``protections``, ``rooms`` and ``policy_lists``
sections are read here as plain mappings and validated by their own subsystems.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import yaml

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration value is missing, unknown or of the wrong type."""

    def __init__(self, path: str, expected: str, got: object = None, *, missing: bool = False) -> None:
        self.path = path
        self.expected = expected
        if missing:
            message = f"{path}: missing; expected {expected}"
        else:
            shown = repr(got)
            if len(shown) > 60:
                shown = shown[:57] + "..."
            message = f"{path}: expected {expected}, got {shown}"
        super().__init__(message)


@attrs.frozen
class LoggingConfig:
    """How the bot logs: ``console`` for people, ``json`` for log collectors."""

    format: str = "console"
    level: str = "info"


@attrs.frozen
class Rule:
    """One of the community's rules, cited in notices and case answers (``community.rules``)."""

    id: str
    title: str
    url: str | None = None

    def cite(self) -> str:
        """``Rule 1 (Be respectful): https://…``."""
        return f"Rule {self.id} ({self.title})" + (f": {self.url}" if self.url else "")


@attrs.frozen
class ModmailConfig:
    """``community.modmail``: the private line from members to the moderators."""

    enabled: bool = True
    #: Relayed replies are signed "— the moderation team", never with a moderator's name.
    anonymous_staff: bool = True
    #: ``members`` (of a protected or the management room, incl. former and banned) or ``anyone``.
    accept_from: str = "members"
    max_open_cases: int = 3


@attrs.frozen
class ReportsConfig:
    """``community.reports``: ``!report`` in the rooms, urgent mentions, the homeserver's reports."""

    command: str = "!report"
    urgent_mentions: tuple[str, ...] = ("@moderators",)
    poll_homeserver_reports: bool = False


@attrs.frozen
class VotesConfig:
    """``votes``: the staff votes of the moderation policy (durations in seconds)."""

    min_duration_s: int = 3600
    max_duration_s: int = 48 * 3600
    #: The length (and maximum) of a vote on rules or policies.
    rules_duration_s: int = 7 * 86400
    default_duration_s: int = 24 * 3600
    #: Of the electorate; "no opinion" counts.
    quorum: float = 0.6


@attrs.frozen
class SecondChanceConfig:
    """``second_chance``: who may ask for one and how long probation lasts (seconds)."""

    #: Time spent permanently banned before one may ask.
    after_s: int = 30 * 86400
    probation_s: int = 30 * 86400


@attrs.frozen
class SuggestionsConfig:
    """``suggestions``: the community's suggestions room."""

    #: A room id or alias; ``None``: no suggestions room.
    room: str | None = None
    #: More than this many votes: the staff must discuss it.
    threshold: int = 10
    vote_reactions: tuple[str, ...] = ("👍", "👎")


@attrs.frozen
class TransparencyConfig:
    """``transparency``: where the statistics are published, and how small a count may be shown."""

    #: A room id or alias (the community's meta room, say); ``None``: ``!mod stats publish`` refuses.
    publish_room: str | None = None
    #: Counts from 1 to ``min_count - 1`` are shown as "fewer than ``min_count``".
    min_count: int = 3


@attrs.frozen
class MetricsConfig:
    """``metrics``: where ``/metrics`` and ``/healthz`` are served; ``None``: nowhere."""

    listen: tuple[str, int] | None = None


@attrs.frozen
class Config:
    """The whole validated configuration."""

    homeserver: str
    user_id: str
    data_dir: Path
    management_room: str
    protected_rooms: tuple[str, ...]
    #: Spaces whose child rooms (and sub-Spaces' children) are protected too.
    protected_spaces: tuple[str, ...] = ()
    password: str | None = None
    access_token: str | None = None
    device_name: str = "abusebot"
    moderator_power_level: int = 50
    command_prefix: str = "!mod"
    rules_url: str | None = None
    notify_users: bool = True
    sync_timeout_ms: int = 30000
    expiry_alert_after: int = 3
    #: How notices and replies name the community (``community.name``); ``None``: the first
    #: protected room's name.
    community_name: str | None = None
    #: ``community.rules``, ``community.modmail``, ``community.reports``.
    rules: tuple[Rule, ...] = ()
    modmail: ModmailConfig = ModmailConfig()
    reports: ReportsConfig = ReportsConfig()
    votes: VotesConfig = VotesConfig()
    second_chance: SecondChanceConfig = SecondChanceConfig()
    suggestions: SuggestionsConfig = SuggestionsConfig()
    transparency: TransparencyConfig = TransparencyConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    protections: Mapping[str, Any] = attrs.field(factory=dict)
    rooms: Mapping[str, Any] = attrs.field(factory=dict)
    policy_lists: Mapping[str, Any] = attrs.field(factory=dict)
    source: Path | None = None
    #: Things that work but should not be so (a secret others can read), one line each.
    warnings: tuple[str, ...] = ()

    @property
    def ledger_path(self) -> Path:
        """The SQLite ledger inside ``data_dir``."""
        return self.data_dir / "ledger.sqlite3"


# -- field readers ------------------------------------------------------------------------------


def _require(data: Mapping[str, Any], key: str, expected: str) -> Any:
    if key not in data or data[key] is None:
        raise ConfigError(key, expected, missing=True)
    return data[key]


def _string(value: Any, path: str, expected: str = "a string") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(path, expected, value)
    return value.strip()


def _integer(value: Any, path: str, low: int, high: int) -> int:
    # bool is an int subclass in Python; `true` for a power level is a mistake, not a 1.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(path, f"an integer from {low} to {high}", value)
    return value


def _boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, "true or false", value)
    return value


def _room(value: Any, path: str) -> str:
    expected = "a room id (!id or !id:server) or alias (#name:server)"
    text = _string(value, path, expected)
    # Room v12 ids are "!" + a hash, with no server part; aliases always name their server.
    valid_id = text.startswith("!") and len(text) > 1 and " " not in text
    valid_alias = text.startswith("#") and ":" in text and " " not in text
    if not (valid_id or valid_alias):
        raise ConfigError(path, expected, value)
    return text


def _rooms(data: Mapping[str, Any], key: str, expected: str, *, required: bool) -> tuple[str, ...]:
    """A list of room ids or aliases, each checked (a duplicate is kept once)."""
    value = _require(data, key, expected) if required else data.get(key, [])
    if value is None and not required:
        value = []
    if not isinstance(value, list):
        raise ConfigError(key, expected, value)
    return tuple(dict.fromkeys(_room(room, f"{key}[{i}]") for i, room in enumerate(value)))


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(path, "a mapping of keys to values", value)
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"{path}.{key}", "string keys", key)
    return value


def _optional(data: Mapping[str, Any], key: str, reader: Callable[[Any, str], T], default: T) -> T:
    value = data.get(key)
    return default if value is None else reader(value, key)


def _secret(data: Mapping[str, Any], key: str, base: Path) -> str | None:
    """Read a secret from the key itself, ``<key>_file``, or ``ABUSEBOT_<KEY>`` / ``ABUSEBOT_<KEY>_FILE``."""
    if data.get(key) is not None:
        return _string(data[key], key)
    env = os.environ.get(f"ABUSEBOT_{key.upper()}")
    if env:
        return env.strip()
    file_value = data.get(f"{key}_file") or os.environ.get(f"ABUSEBOT_{key.upper()}_FILE")
    if file_value is None:
        return None
    file_path = Path(_string(file_value, f"{key}_file", "a path to a file holding the secret"))
    if not file_path.is_absolute():
        file_path = base / file_path
    try:
        secret = file_path.read_bytes().decode("utf-8").strip()
    except OSError as err:
        raise ConfigError(f"{key}_file", "a readable file", str(file_path)) from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{key}_file", "a UTF-8 text file", str(file_path)) from err
    if not secret:
        raise ConfigError(f"{key}_file", "a file that is not empty", str(file_path))
    return secret


_KNOWN_KEYS = frozenset(
    {
        "homeserver",
        "user_id",
        "password",
        "password_file",
        "access_token",
        "access_token_file",
        "device_name",
        "data_dir",
        "management_room",
        "protected_rooms",
        "protected_spaces",
        "moderator_power_level",
        "command_prefix",
        "rules_url",
        "notify_users",
        "sync_timeout_ms",
        "expiry_alert_after",
        "logging",
        "community",
        "votes",
        "second_chance",
        "suggestions",
        "transparency",
        "metrics",
        "protections",
        "rooms",
        "policy_lists",
    }
)


@attrs.frozen
class _Community:
    name: str | None = None
    rules: tuple[Rule, ...] = ()
    modmail: ModmailConfig = ModmailConfig()
    reports: ReportsConfig = ReportsConfig()


def _known(section: Mapping[str, Any], path: str, keys: tuple[str, ...]) -> None:
    for key in section:
        if key not in keys:
            raise ConfigError(f"{path}.{key}", f"one of the known keys: {', '.join(keys)}", key)


def _community(value: Any, path: str) -> _Community:
    section = _mapping(value, path)
    _known(section, path, ("name", "rules", "modmail", "reports"))
    name = section.get("name")
    text = None
    if name is not None:
        text = _string(name, f"{path}.name", "the community's name (a string)")
        if len(text) > 100:
            raise ConfigError(f"{path}.name", "a name of at most 100 characters", text)
    return _Community(
        name=text,
        rules=_rules(section.get("rules"), f"{path}.rules"),
        modmail=_modmail(section.get("modmail"), f"{path}.modmail"),
        reports=_reports(section.get("reports"), f"{path}.reports"),
    )


def _rules(value: Any, path: str) -> tuple[Rule, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(path, 'a list of rules like {id: "1", title: "Be respectful", url: "https://…"}', value)
    rules: list[Rule] = []
    for i, item in enumerate(value):
        where = f"{path}[{i}]"
        entry = _mapping(item, where)
        _known(entry, where, ("id", "title", "url"))
        # `id: 1` (a YAML integer) is as good as `id: "1"`.
        rule_id = _string(_require_at(entry, "id", where, 'the rule\'s id, like "1"'), f"{where}.id", "a short id")
        if len(rule_id) > 20 or " " in rule_id:
            raise ConfigError(f"{where}.id", 'a short id without spaces, like "1" or "spam"', rule_id)
        title = _string(_require_at(entry, "title", where, "the rule's title"), f"{where}.title", "the rule's title")
        url = entry.get("url")
        if url is not None:
            url = _string(url, f"{where}.url", "a URL")
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"{where}.url", "a URL starting with http:// or https://", url)
        if any(rule.id.lower() == rule_id.lower() for rule in rules):
            raise ConfigError(f"{where}.id", "an id no other rule has", rule_id)
        rules.append(Rule(rule_id, title[:200], url))
    return tuple(rules)


def _require_at(data: Mapping[str, Any], key: str, path: str, expected: str) -> Any:
    if data.get(key) is None:
        raise ConfigError(f"{path}.{key}", expected, missing=True)
    value = data[key]
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _modmail(value: Any, path: str) -> ModmailConfig:
    if value is None:
        return ModmailConfig()
    section = _mapping(value, path)
    _known(section, path, ("enabled", "anonymous_staff", "accept_from", "max_open_cases"))
    accept = section.get("accept_from", "members")
    if accept not in ("members", "anyone"):
        raise ConfigError(f"{path}.accept_from", "members or anyone", accept)
    return ModmailConfig(
        enabled=_boolean(section.get("enabled", True), f"{path}.enabled"),
        anonymous_staff=_boolean(section.get("anonymous_staff", True), f"{path}.anonymous_staff"),
        accept_from=accept,
        max_open_cases=_integer(section.get("max_open_cases", 3), f"{path}.max_open_cases", 1, 100),
    )


def _reports(value: Any, path: str) -> ReportsConfig:
    if value is None:
        return ReportsConfig()
    section = _mapping(value, path)
    _known(section, path, ("command", "urgent_mentions", "poll_homeserver_reports"))
    command = _string(section.get("command", "!report"), f"{path}.command", "one word, like !report")
    if len(command.split()) != 1 or len(command) > 30:
        raise ConfigError(f"{path}.command", "one word without spaces, like !report", command)
    mentions = section.get("urgent_mentions", ["@moderators"])
    if not isinstance(mentions, list):
        raise ConfigError(f"{path}.urgent_mentions", 'a list of words, like ["@moderators"]', mentions)
    words: list[str] = []
    for i, word in enumerate(mentions):
        text = _string(word, f"{path}.urgent_mentions[{i}]", "a word, like @moderators")
        if len(text) < 3 or len(text) > 50 or len(text.split()) != 1:
            raise ConfigError(f"{path}.urgent_mentions[{i}]", "one word of 3 to 50 characters, like @moderators", text)
        words.append(text)
    return ReportsConfig(
        command=command,
        urgent_mentions=tuple(words),
        poll_homeserver_reports=_boolean(
            section.get("poll_homeserver_reports", False), f"{path}.poll_homeserver_reports"
        ),
    )


def _votes(value: Any, path: str) -> VotesConfig:
    from abusebot.durations import DurationError, parse_duration

    section = _mapping(value, path)
    keys = ("min_duration", "max_duration", "rules_duration", "default_duration", "quorum")
    _known(section, path, keys)
    defaults = VotesConfig()
    durations: dict[str, int] = {}
    for key in keys[:4]:
        raw = section.get(key)
        if raw is None:
            durations[key] = getattr(defaults, f"{key}_s")
            continue
        try:
            durations[key] = parse_duration(str(raw)) if isinstance(raw, str) else -1
        except DurationError:
            durations[key] = -1
        if durations[key] <= 0:
            raise ConfigError(f"{path}.{key}", "a duration like 30m, 1h, 48h or 7d", raw)
    if not durations["min_duration"] <= durations["default_duration"] <= durations["max_duration"]:
        raise ConfigError(
            f"{path}.default_duration", "a duration from min_duration to max_duration", section.get("default_duration")
        )
    if durations["rules_duration"] < durations["min_duration"]:
        raise ConfigError(
            f"{path}.rules_duration", "a duration no shorter than min_duration", section.get("rules_duration")
        )
    quorum = section.get("quorum", defaults.quorum)
    if isinstance(quorum, bool) or not isinstance(quorum, (int, float)) or not 0 < quorum <= 1:
        raise ConfigError(f"{path}.quorum", "a fraction of the electorate above 0 and at most 1, like 0.6", quorum)
    return VotesConfig(
        min_duration_s=durations["min_duration"],
        max_duration_s=durations["max_duration"],
        rules_duration_s=durations["rules_duration"],
        default_duration_s=durations["default_duration"],
        quorum=float(quorum),
    )


def _positive_duration(section: Mapping[str, Any], key: str, path: str, default: int) -> int:
    from abusebot.durations import DurationError, parse_duration

    raw = section.get(key)
    if raw is None:
        return default
    try:
        seconds = parse_duration(raw) if isinstance(raw, str) else -1
    except DurationError:
        seconds = -1
    if seconds <= 0:
        raise ConfigError(f"{path}.{key}", "a duration like 30m, 1h, 30d", raw)
    return seconds


def _second_chance(value: Any, path: str) -> SecondChanceConfig:
    section = _mapping(value, path)
    _known(section, path, ("after", "probation"))
    defaults = SecondChanceConfig()
    return SecondChanceConfig(
        after_s=_positive_duration(section, "after", path, defaults.after_s),
        probation_s=_positive_duration(section, "probation", path, defaults.probation_s),
    )


#: The suggestions' state marks (discussing, approved, denied, implemented): no vote reaction may be one.
STATE_MARKS = frozenset({"🟠", "🟢", "🔴", "🔵"})


def _suggestions(value: Any, path: str) -> SuggestionsConfig:
    section = _mapping(value, path)
    _known(section, path, ("room", "threshold", "vote_reactions"))
    room = section.get("room")
    if room is not None:
        room = _room(room, f"{path}.room")
    threshold = _integer(section.get("threshold", 10), f"{path}.threshold", 0, 1_000_000)
    reactions = section.get("vote_reactions", ["👍", "👎"])
    if not isinstance(reactions, list) or not reactions or len(reactions) > 10:
        raise ConfigError(f"{path}.vote_reactions", 'a list of 1 to 10 emoji, like ["👍", "👎"]', reactions)
    keys: list[str] = []
    for i, key in enumerate(reactions):
        text = _string(key, f"{path}.vote_reactions[{i}]", "an emoji, like 👍")
        plain = text.replace("\ufe0f", "")
        # 👍 and 👍️ are one vote; 🟠 🟢 🔴 🔵 are the staff's states, never votes.
        if len(text) > 20 or plain in {k.replace("\ufe0f", "") for k in keys} or plain in STATE_MARKS:
            raise ConfigError(
                f"{path}.vote_reactions[{i}]", "an emoji (up to 20 characters), each once, none of 🟠 🟢 🔴 🔵", text
            )
        keys.append(text)
    return SuggestionsConfig(room=room, threshold=threshold, vote_reactions=tuple(keys))


def _transparency(value: Any, path: str) -> TransparencyConfig:
    section = _mapping(value, path)
    _known(section, path, ("publish_room", "min_count"))
    room = section.get("publish_room")
    return TransparencyConfig(
        publish_room=None if room is None else _room(room, f"{path}.publish_room"),
        min_count=_integer(section.get("min_count", 3), f"{path}.min_count", 1, 1000),
    )


def _metrics(value: Any, path: str) -> MetricsConfig:
    section = _mapping(value, path)
    _known(section, path, ("listen",))
    listen = section.get("listen")
    if listen is None:
        return MetricsConfig()
    expected = 'an address and port like "127.0.0.1:9464" or "[::1]:9464"'
    text = _string(listen, f"{path}.listen", expected)
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536 or " " in host:
        raise ConfigError(f"{path}.listen", expected, listen)
    return MetricsConfig(listen=(host, int(port)))


def _logging(value: Any, path: str) -> LoggingConfig:
    section = _mapping(value, path)
    for key in section:
        if key not in ("format", "level"):
            raise ConfigError(f"{path}.{key}", "one of the known keys: format, level", key)
    fmt = section.get("format", "console")
    if fmt not in ("console", "json"):
        raise ConfigError(f"{path}.format", "console or json", fmt)
    level = section.get("level", "info")
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{path}.level", "debug, info, warning or error", level)
    return LoggingConfig(format=fmt, level=level)


def parse_config(data: Any, base: Path | None = None, source: Path | None = None) -> Config:
    """Validate a parsed YAML document and build a :class:`Config`; raise :class:`ConfigError`."""
    base = base or Path.cwd()
    if not isinstance(data, Mapping):
        raise ConfigError("(top level)", "a mapping of keys to values", data)
    for key in data:
        if key not in _KNOWN_KEYS:
            raise ConfigError(str(key), "one of the known keys (see config.sample.yaml)", key)

    homeserver = _string(_require(data, "homeserver", "a URL"), "homeserver", "a URL")
    if not homeserver.startswith(("http://", "https://")):
        raise ConfigError("homeserver", "a URL starting with http:// or https://", homeserver)
    user_id = _string(_require(data, "user_id", "a user id"), "user_id", "a user id (@name:server)")
    if not user_id.startswith("@") or ":" not in user_id:
        raise ConfigError("user_id", "a user id (@name:server)", user_id)

    password = _secret(data, "password", base)
    access_token = _secret(data, "access_token", base)
    if password is None and access_token is None:
        raise ConfigError(
            "password",
            "a password or access_token (in the file, in *_file, or in ABUSEBOT_PASSWORD / ABUSEBOT_ACCESS_TOKEN)",
            missing=True,
        )

    data_dir_text = _string(_require(data, "data_dir", "a directory path"), "data_dir", "a directory path")
    if "\x00" in data_dir_text:
        raise ConfigError("data_dir", "a directory path (without NUL characters)", data_dir_text)
    data_dir = Path(data_dir_text)
    if not data_dir.is_absolute():
        data_dir = base / data_dir

    management_room = _room(_require(data, "management_room", "a room id or alias"), "management_room")
    spaces = _rooms(data, "protected_spaces", "a list of Space ids or aliases", required=False)
    # With a Space to protect, the rooms may come from it alone.
    protected = _rooms(data, "protected_rooms", "a list of room ids or aliases", required=not spaces)
    if management_room in protected:
        raise ConfigError("protected_rooms", "rooms other than the management room", management_room)
    if management_room in spaces:
        raise ConfigError("protected_spaces", "Spaces other than the management room", management_room)

    prefix = _optional(data, "command_prefix", _string, "!mod")
    if len(prefix.split()) != 1:
        raise ConfigError("command_prefix", "one word without spaces, like !mod", prefix)
    rules_url = _optional(data, "rules_url", _string, None)
    community = _optional(data, "community", _community, _Community())
    if community.reports.command.lower() == prefix.lower():
        raise ConfigError("community.reports.command", f"a word other than the command prefix {prefix}", prefix)

    suggestions = _optional(data, "suggestions", _suggestions, SuggestionsConfig())
    if suggestions.room is not None and suggestions.room == management_room:
        raise ConfigError("suggestions.room", "a room other than the management room", suggestions.room)
    return Config(
        homeserver=homeserver.rstrip("/"),
        user_id=user_id,
        password=password,
        access_token=access_token,
        device_name=_optional(data, "device_name", _string, "abusebot"),
        data_dir=data_dir,
        management_room=management_room,
        protected_rooms=protected,
        protected_spaces=spaces,
        moderator_power_level=_optional(data, "moderator_power_level", lambda v, p: _integer(v, p, 1, 2**53 - 1), 50),
        command_prefix=prefix,
        rules_url=rules_url,
        notify_users=_optional(data, "notify_users", _boolean, True),
        sync_timeout_ms=_optional(data, "sync_timeout_ms", lambda v, p: _integer(v, p, 1000, 120000), 30000),
        expiry_alert_after=_optional(data, "expiry_alert_after", lambda v, p: _integer(v, p, 1, 100), 3),
        logging=_optional(data, "logging", _logging, LoggingConfig()),
        votes=_optional(data, "votes", _votes, VotesConfig()),
        second_chance=_optional(data, "second_chance", _second_chance, SecondChanceConfig()),
        suggestions=suggestions,
        transparency=_optional(data, "transparency", _transparency, TransparencyConfig()),
        metrics=_optional(data, "metrics", _metrics, MetricsConfig()),
        community_name=community.name,
        rules=community.rules,
        modmail=community.modmail,
        reports=community.reports,
        protections=_optional(data, "protections", _mapping, {}),
        rooms=_optional(data, "rooms", _mapping, {}),
        policy_lists=_optional(data, "policy_lists", _mapping, {}),
        source=source,
    )


def load_config(path: str | Path) -> Config:
    """Read and validate the YAML file at ``path``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(str(path), "a readable YAML file", err.strerror or str(err)) from err
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(str(path), "a UTF-8 YAML file", f"a byte that is not UTF-8 at offset {err.start}") from err
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except ValueError as err:  # e.g. an integer with thousands of digits
        raise ConfigError(str(path), "valid YAML", str(err).split(":")[0]) from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(where, "valid YAML", getattr(err, "problem", None) or str(err).splitlines()[0]) from err
    except RecursionError as err:
        raise ConfigError(str(path), "valid YAML", "nesting too deep to read") from err
    config = parse_config(data, base=path.resolve().parent, source=path)
    return attrs.evolve(config, warnings=tuple(_exposed_secrets(path, data)))


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (the later one silently winning
    hides the mistake)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:
            continue  # unhashable: the constructor below reports it
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _exposed_secrets(path: Path, data: Mapping[str, Any]) -> list[str]:
    """A warning for each file holding the bot's password or token that others may read."""
    from abusebot.files import readable_by_others

    warnings: list[str] = []
    inline = [key for key in ("password", "access_token") if data.get(key) is not None]
    mode = readable_by_others(path)
    if inline and mode:
        warnings.append(
            f"{path} holds the bot's {' and '.join(inline)} and other users can read it (mode {mode}); "
            f"run: chmod 600 {path}"
        )
    for key in ("password", "access_token"):
        if data.get(key) is not None or os.environ.get(f"ABUSEBOT_{key.upper()}"):
            continue
        file_value = data.get(f"{key}_file") or os.environ.get(f"ABUSEBOT_{key.upper()}_FILE")
        if not isinstance(file_value, str):
            continue
        secret_path = Path(file_value)
        if not secret_path.is_absolute():
            secret_path = path.resolve().parent / secret_path
        mode = readable_by_others(secret_path)
        if mode:
            warnings.append(
                f"{secret_path} holds the bot's {key} and other users can read it (mode {mode}); "
                f"run: chmod 600 {secret_path}"
            )
    return warnings
