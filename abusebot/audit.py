"""What people read: management-room audit lines and the polite notices users receive.

Every message is built twice, as plain ``body`` and as HTML ``formatted_body``, from the same
parts; user-supplied text is always escaped.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from abusebot.config import Rule
from abusebot.durations import format_duration
from abusebot.ledger import Infraction

VERBS = {
    "note": "Noted",
    "warning": "Warned",
    "mute": "Muted",
    "kick": "Kicked",
    "ban": "Banned",
    "unban": "Unbanned",
    "unmute": "Unmuted",
    "redact": "Redacted messages of",
    "pardon": "Pardoned",
    "expire": "Expired",
}


@attrs.frozen
class Message:
    """A message in both renderings."""

    plain: str
    html: str

    def content(self, msgtype: str = "m.notice") -> dict[str, str]:
        """The ``m.room.message`` content for this message."""
        return {
            "msgtype": msgtype,
            "body": self.plain,
            "format": "org.matrix.custom.html",
            "formatted_body": self.html,
        }


def when(ms: int | None) -> str:
    """A UTC timestamp for moderators, or ``never`` for permanent."""
    if ms is None:
        return "never (permanent)"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def scope_label(scope: str, names: dict[str, str] | None = None) -> str:
    """``all protected rooms`` or the room's name/id."""
    if scope == "*":
        return "all protected rooms"
    return (names or {}).get(scope, scope)


#: Synapse refuses an event over 65,536 bytes; the body and HTML together stay well below it.
MAX_EVENT_BYTES = 40_000
_CUT = "… (cut to fit one message)"


def fit(message: Message, max_bytes: int = MAX_EVENT_BYTES) -> Message:
    """``message`` as it is when its encoded content fits one event, else cut: the plain text to
    whole lines within the budget, the HTML rebuilt from those lines (never cut inside a tag).
    Measured in JSON bytes, since escaping and non-ASCII text grow it (a Cyrillic note is twice
    its length, an emoji four times)."""
    if _size(message) <= max_bytes:
        return message
    budget = max_bytes // 3  # the plain text, its escaped HTML twin, and JSON escaping
    kept: list[str] = []
    used = 0
    for line in message.plain.splitlines():
        cost = len(json.dumps(line)) + 1
        if used + cost > budget:
            break
        kept.append(line)
        used += cost
    if not kept:  # one huge line: cut it by characters
        kept = [message.plain[: budget // 6]]
    kept.append(_CUT)
    return Message("\n".join(kept), "<br>".join(html.escape(line) for line in kept))


def _size(message: Message) -> int:
    return len(json.dumps(message.content()).encode())


def pill(user_id: str) -> str:
    """A user mention pill (HTML) for a user id; anything else as code."""
    if user_id.startswith("@") and ":" in user_id:
        href = html.escape(f"https://matrix.to/#/{user_id}", quote=True)
        return f'<a href="{href}">{html.escape(user_id)}</a>'
    return f"<code>{html.escape(user_id)}</code>"


def how_long(infraction: Infraction | None, expires_at: int | None = None) -> tuple[str, str]:
    """`` for 1w (until …)`` or `` permanently`` (bold in HTML) for a sanction; empty otherwise."""
    if infraction is None or infraction.kind not in ("mute", "ban"):
        if expires_at is None:
            return "", ""
        return f" until {when(expires_at)}", f" until {html.escape(when(expires_at))}"
    if infraction.expires_at is None:
        return " permanently", " <b>permanently</b>"
    length = format_duration((infraction.expires_at - infraction.created_at) / 1000)
    text = f" for {length} (until {when(infraction.expires_at)})"
    return text, html.escape(text)


def action_line(
    *,
    verb: str,
    actor: str,
    subject: str,
    where: str,
    reason: str | None,
    infraction: Infraction | None = None,
    expires_at: int | None = None,
    extra: Sequence[str] = (),
) -> Message:
    """One audit line: who did what to whom, where, for how long, why, which infraction."""
    length_plain, length_html = how_long(infraction, expires_at)
    parts_plain = [f"{verb} {subject} in {where}{length_plain}"]
    parts_html = [f"<b>{html.escape(verb)}</b> {pill(subject)} in {html.escape(where)}{length_html}"]
    if reason:
        parts_plain.append(f"reason: {reason}")
        parts_html.append(f"reason: <i>{html.escape(reason)}</i>")
    parts_plain.append(f"by {actor}")
    parts_html.append(f"by {pill(actor)}")
    if infraction is not None:
        parts_plain.append(f"infraction #{infraction.id}")
        parts_html.append(f"infraction <b>#{infraction.id}</b>")
    for item in extra:
        parts_plain.append(item)
        parts_html.append(html.escape(item))
    return Message(" — ".join(parts_plain), " — ".join(parts_html))


#: What an infraction's state means to a moderator reading the history.
_STATE_WORDS = {
    "pending": "pending",
    "active": "in force",
    "expired": "expired",
    "lifted": "lifted",
    "pardoned": "pardoned",
    "failed": "failed",
}


def history_message(
    subject: str,
    infractions: Sequence[Infraction],
    total: int,
    *,
    standing: Message | None = None,
    ladder: Any = None,
    where: Callable[[str], str] | None = None,
) -> Message:
    """``!mod history``: the standing on the ladder, then infractions newest first with ids,
    kinds, durations, state and what each stood for on the ladder."""
    head_plain = f"History of {subject}: {total} infraction(s), newest first"
    head_html = f"History of {pill(subject)}: {total} infraction(s), newest first"
    if not infractions:
        text = f"{subject} has no infractions."
        if standing is not None:
            text += f"\nStanding: {standing.plain}"
            return Message(text, f"{pill(subject)} has no infractions.<br>Standing: {standing.html}")
        return Message(text, f"{pill(subject)} has no infractions.")
    lines_plain = [head_plain]
    lines_html = [f"<p>{head_html}"]
    if standing is not None:
        lines_plain.append(f"Standing: {standing.plain}")
        lines_html.append(f"<br>Standing: {standing.html}")
    lines_html.append("</p><ul>")
    for inf in infractions:
        what = inf.kind
        if inf.kind in ("mute", "ban"):
            # Rounded: the record is written a few ms after the expiry was computed.
            length = None if inf.expires_at is None else round((inf.expires_at - inf.created_at) / 1000)
            what += " permanent" if length is None else f" {format_duration(length)}, until {when(inf.expires_at)}"
        # Only sanctions that last have a state worth reading; a note or kick just happened.
        state = f" [{_STATE_WORDS.get(inf.state, inf.state)}]" if inf.kind in ("mute", "ban") else ""
        if inf.kind not in ("mute", "ban") and inf.state in ("pardoned", "failed"):
            state = f" [{inf.state}]"
        rung = ""
        if ladder is not None and inf.level is not None and 1 <= inf.level <= len(ladder.steps):
            rung = f" (stands for ladder rung {inf.level} of {len(ladder.steps)}: {ladder.steps[inf.level - 1]})"
        scope = where(inf.scope) if where is not None else ("all rooms" if inf.scope == "*" else inf.scope)
        line = (
            f"#{inf.id} {what}{state} in {scope} — {inf.reason or 'no reason given'}"
            f" — by {inf.actor} on {when(inf.created_at)}{rung}"
        )
        lines_plain.append(line)
        lines_html.append(f"<li>{html.escape(line)}</li>")
    if total > len(infractions):
        more = f"… and {total - len(infractions)} older"
        lines_plain.append(more)
        lines_html.append(f"<li>{html.escape(more)}</li>")
    lines_html.append("</ul>")
    return Message("\n".join(lines_plain), "".join(lines_html))


def room_pill(room_id: str, label: str) -> str:
    """A room link (HTML) a client shows as a pill."""
    return f'<a href="{html.escape(f"https://matrix.to/#/{room_id}", quote=True)}">{html.escape(label)}</a>'


def bullet_list(
    head: str,
    items: Sequence[str],
    *,
    limit: int = 50,
    max_chars: int = 30_000,
    html_items: Sequence[str] | None = None,
) -> Message:
    """A heading and a list, as an HTML list with a plain-text fallback, cut to fit one event:
    at most ``limit`` items and ``max_chars`` characters, then "… and N more". ``html_items``
    (already escaped, e.g. with pills) replace the escaped items in the HTML."""
    shown: list[str] = []
    size = len(head)
    for item in items[:limit]:
        if size + len(item) > max_chars:
            break
        shown.append(item)
        size += len(item) + 4
    more = len(items) - len(shown)
    tail = [f"… and {more} more"] if more else []
    plain = "\n".join([head, *(f"• {item}" for item in shown), *tail])
    markup = f"<p>{html.escape(head)}</p>"
    rich = list(html_items[: len(shown)]) if html_items is not None else [html.escape(item) for item in shown]
    if shown or tail:
        markup += "<ul>" + "".join(f"<li>{item}</li>" for item in [*rich, *map(html.escape, tail)]) + "</ul>"
    return Message(plain, markup)


def user_notice(
    *,
    kind: str,
    where: str,
    reason: str | None,
    duration_s: int | None,
    rules_url: str | None,
    infraction_id: int | None,
    next_step: str | None = None,
    appeal: bool = False,
    rules: Sequence[Rule] = (),
) -> Message:
    """A calm, polite message telling a user what happened, why, and what comes next.

    ``appeal``: the bot reads appeals (ModMail is on), so a sanction's notice ends with how to
    appeal it, its id included; otherwise it says whom to write to. ``rules``: the community's
    rules; those the reason names ("rule 2") are cited with their title and link."""
    what = {
        "warning": f"This is a warning from the moderators of {where}.",
        "mute": f"You have been muted in {where}"
        + (f" for {format_duration(duration_s)}." if duration_s else " until a moderator lifts it."),
        "kick": f"You have been removed from {where}. You may rejoin.",
        "ban": f"You have been banned from {where}" + (f" for {format_duration(duration_s)}." if duration_s else "."),
        "unban": f"Your ban in {where} has been lifted. You are welcome to rejoin.",
        "unmute": f"Your mute in {where} has been lifted. You can write again.",
        "redact": f"Some of your messages in {where} were removed by the moderators.",
    }.get(kind, f"A moderator took an action concerning you in {where}.")
    lines = ["Hello,", what]
    if reason:
        lines.append(f"Reason: {reason}")
        lines.extend(rule.cite() for rule in cited_rules(reason, rules))
    if next_step:
        lines.append(next_step)
    elif kind == "warning":
        lines.append("Please take a moment to read the rules; a further violation may lead to a mute.")
    sanction = kind in ("warning", "mute", "ban", "kick")
    if sanction and not (appeal and infraction_id is not None):
        # Promise only what exists: without ModMail nobody reads replies here, so say whom to ask.
        lines.append(
            f"If you believe this was a mistake, please write to one of the moderators of {where}; "
            "replies to this message are not read."
        )
    if rules_url:
        lines.append(f"The rules: {rules_url}")
    if infraction_id is not None:
        lines.append(f"(Reference: #{infraction_id})")
    lines.append("— the moderation team")
    if sanction and appeal and infraction_id is not None:
        lines.append(
            f"If you believe this was a mistake, you may appeal: reply here with appeal #{infraction_id} <why>"
        )
    plain = "\n".join(lines)
    html_lines = [html.escape(line) for line in lines]
    if rules_url:
        html_lines = [
            f'The rules: <a href="{html.escape(rules_url, quote=True)}">{html.escape(rules_url)}</a>'
            if line == html.escape(f"The rules: {rules_url}")
            else line
            for line in html_lines
        ]
    return Message(plain, "<br>".join(html_lines))


_RULE_REF = re.compile(r"\brules?\s*#?\s*([A-Za-z0-9][\w.-]{0,19})", re.IGNORECASE)


def cited_rules(text: str, rules: Sequence[Rule]) -> list[Rule]:
    """The rules ``text`` names ("rule 2", "Rule #spam"), in the order of ``rules``."""
    if not rules or not text:
        return []
    named = {match.group(1).lower().rstrip(".") for match in _RULE_REF.finditer(text[:2000])}
    return [rule for rule in rules if rule.id.lower() in named]


def ordinal(number: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 21st …"""
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def standing_line(count: int, next_step: str, decay_days: int) -> Message:
    """A user's standing on the ladder, for replies and ``!mod history``:
    "3rd violation in 90 days; the ladder suggests `ban 7d` next"."""
    head = "no violations" if count == 0 else f"{ordinal(count)} violation"
    when_next = "first" if count == 0 else "next"
    plain = f"{head} in {decay_days} days; the ladder suggests `{next_step}` {when_next}"
    step = f"<code>{html.escape(next_step)}</code>"
    markup = f"{html.escape(head)} in {decay_days} days; the ladder suggests {step} {when_next}"
    return Message(plain, markup)
