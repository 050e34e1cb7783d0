"""What people read: management-room audit lines and the polite notices users receive.

Every message is built twice, as plain ``body`` and as HTML ``formatted_body``, from the same
parts; user-supplied text is always escaped.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence

import attrs

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
    """One audit line: who did what to whom, where, why, which infraction, until when."""
    expiry = infraction.expires_at if infraction is not None else expires_at
    parts_plain = [f"{verb} {subject} in {where}"]
    parts_html = [f"<b>{html.escape(verb)}</b> <code>{html.escape(subject)}</code> in {html.escape(where)}"]
    if reason:
        parts_plain.append(f"reason: {reason}")
        parts_html.append(f"reason: <i>{html.escape(reason)}</i>")
    parts_plain.append(f"by {actor}")
    parts_html.append(f"by <code>{html.escape(actor)}</code>")
    if infraction is not None:
        parts_plain.append(f"infraction #{infraction.id}")
        parts_html.append(f"infraction <b>#{infraction.id}</b>")
    if (infraction is not None and infraction.kind in ("mute", "ban")) or expires_at is not None:
        parts_plain.append(f"expires: {when(expiry)}")
        parts_html.append(f"expires: {html.escape(when(expiry))}")
    for item in extra:
        parts_plain.append(item)
        parts_html.append(html.escape(item))
    return Message(" — ".join(parts_plain), " — ".join(parts_html))


def history_message(subject: str, infractions: Sequence[Infraction], total: int) -> Message:
    """``!mod history``: infractions newest first with ids, kinds, state and expiry."""
    if not infractions:
        text = f"{subject} has no infractions."
        return Message(text, html.escape(text))
    head = f"History of {subject}: {total} infraction(s), newest first"
    lines_plain = [head]
    lines_html = [f"<p>History of <code>{html.escape(subject)}</code>: {total} infraction(s), newest first</p><ul>"]
    for inf in infractions:
        duration = ""
        if inf.kind in ("mute", "ban"):
            duration = (
                " permanent"
                if inf.expires_at is None
                else f" {format_duration((inf.expires_at - inf.created_at) / 1000)}, expires {when(inf.expires_at)}"
            )
        level = f", ladder level {inf.level}" if inf.level is not None else ""
        scope = "all rooms" if inf.scope == "*" else inf.scope
        line = (
            f"#{inf.id} {inf.kind}{duration} [{inf.state}] in {scope} — {inf.reason or 'no reason given'}"
            f" — by {inf.actor} on {when(inf.created_at)}{level}"
        )
        lines_plain.append(line)
        lines_html.append(f"<li>{html.escape(line)}</li>")
    if total > len(infractions):
        more = f"… and {total - len(infractions)} older"
        lines_plain.append(more)
        lines_html.append(f"<li>{html.escape(more)}</li>")
    lines_html.append("</ul>")
    return Message("\n".join(lines_plain), "".join(lines_html))


def user_notice(
    *,
    kind: str,
    where: str,
    reason: str | None,
    duration_s: int | None,
    rules_url: str | None,
    infraction_id: int | None,
    next_step: str | None = None,
) -> Message:
    """A calm, polite message telling a user what happened, why, and what comes next."""
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
    if next_step:
        lines.append(next_step)
    elif kind == "warning":
        lines.append("Please take a moment to read the rules; a further violation may lead to a mute.")
    elif kind == "ban" and duration_s is None:
        lines.append(
            "If you believe this was a mistake, you may reply here to appeal; "
            "after a month you may ask for a second chance."
        )
    elif kind in ("mute", "ban", "kick"):
        lines.append("If you believe this was a mistake, you may reply here to appeal.")
    if rules_url:
        lines.append(f"The rules: {rules_url}")
    if infraction_id is not None:
        lines.append(f"(Reference: #{infraction_id})")
    lines.append("— the moderation team")
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
