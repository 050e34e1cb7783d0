"""The spam protection against the real Synapse: redaction, notice, audit, escalation, observe mode,
exemptions, cross-room spam and the first-activity ban."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from abusebot.matrix import API, q
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import Person, World, body_contains, is_redaction_of

PHRASE = "buy cheap crypto"
#: The phrase with a Greek upsilon for "u" and a zero-width space inside "cheap".
EVASIVE = "b\u03c5y ch\u200beap crypto, DM me"
SPAM = {"protections": {"spam": {"banned_words": [PHRASE]}}}


async def wait_for_dm(person: Person, bot_id: str, *fragments: str, timeout: float = 20.0) -> str:
    """The body of the bot's direct message to ``person`` containing every fragment (joining the
    DM room the bot invited them to)."""
    deadline = time.monotonic() + timeout
    joined: set[str] = set()
    while True:
        reply = await person.call("GET", f"{API}/sync", query={"timeout": 0})
        rooms = reply.get("rooms", {})
        for room_id, invite in (rooms.get("invite") or {}).items():
            events = (invite.get("invite_state") or {}).get("events") or []
            if bot_id in {e.get("sender") for e in events if e.get("type") == "m.room.member"}:
                await person.join(room_id)
                joined.add(room_id)
        joined.update(rooms.get("join", {}))
        for room_id in joined:
            page = await person.call("GET", f"{API}/rooms/{q(room_id)}/messages", query={"dir": "b", "limit": 50})
            for event in page.get("chunk", []):
                body = str((event.get("content") or {}).get("body", ""))
                if event.get("sender") == bot_id and all(f in body for f in fragments):
                    return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"no direct message from {bot_id} containing {fragments} within {timeout}s")
        await asyncio.sleep(0.25)


async def test_banned_phrase_with_evasion_is_redacted_noticed_and_audited(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """A lookalike and zero-width spelling of a banned phrase is redacted, the rule told to the spammer, and audited."""
    w = await World.launch(synapse, tmp_path, config=SPAM)
    try:
        spammer, room = w.members["spammer"], w.protected[0]
        spam = await spammer.say(room, EVASIVE)
        await w.mod.wait_for(room, is_redaction_of(spam))
        await w.mod.wait_for(w.management, body_contains("Warned", spammer.user_id, "spam: banned phrase"))
        notice = await wait_for_dm(spammer, w.bot_account.user_id, "spam: banned phrase")
        assert notice.startswith("Hello"), notice
        history = await w.bot.ledger.history(spammer.user_id)
        assert [(i.kind, i.rule, i.origin) for i in history] == [("warning", "spam: banned phrase", "protection")]
    finally:
        await w.close()


async def test_a_second_offence_mutes_the_spammer(synapse: SynapseServer, tmp_path: Path) -> None:
    """After the warning, the next banned phrase (after the burst) mutes: the spammer's level drops
    below events_default."""
    config = {"protections": {**SPAM["protections"], "escalation": {"burst_seconds": 1}}}
    w = await World.launch(synapse, tmp_path, config=config)
    try:
        spammer, room = w.members["spammer"], w.protected[0]
        await spammer.say(room, EVASIVE)
        await w.mod.wait_for(w.management, body_contains("Warned", spammer.user_id))
        await asyncio.sleep(1.2)  # a new burst
        # This time only the HTML body carries it.
        second = await spammer.say(room, "see below", html=f"<b>{PHRASE.upper()}</b>")
        await w.mod.wait_for(room, is_redaction_of(second))
        await w.mod.wait_for(w.management, body_contains("Muted", spammer.user_id, "spam: banned phrase"))
        levels = await w.mod.state(room, "m.room.power_levels") or {}
        assert levels["users"][spammer.user_id] < levels.get("events_default", 0)
    finally:
        await w.close()


async def test_observe_mode_reports_and_redacts_nothing(synapse: SynapseServer, tmp_path: Path) -> None:
    """In observe mode the spam is reported with [observe]; nothing is redacted or recorded."""
    config = {"protections": {"spam": {"banned_words": [PHRASE], "mode": "observe"}}}
    w = await World.launch(synapse, tmp_path, config=config)
    try:
        spammer, room = w.members["spammer"], w.protected[0]
        spam = await spammer.say(room, EVASIVE)
        await w.mod.wait_for(w.management, body_contains("[observe]", "spam: banned phrase", spammer.user_id, spam))
        await w.mod.poll(0)
        assert [e for e in w.mod.seen.get(room, []) if e.get("type") == "m.room.redaction"] == []
        assert await w.bot.ledger.history(spammer.user_id) == []
    finally:
        await w.close()


async def test_a_moderator_posting_the_phrase_is_exempt(synapse: SynapseServer, tmp_path: Path) -> None:
    """The moderator's banned phrase is left alone, while the same phrase from a member right after is removed."""
    w = await World.launch(synapse, tmp_path, config=SPAM)
    try:
        spammer, room = w.members["spammer"], w.protected[0]
        quoted = await w.mod.say(room, f'Please do not post "{PHRASE}" here.')
        spam = await spammer.say(room, PHRASE)
        await w.mod.wait_for(room, is_redaction_of(spam))
        # A command answered after that proves the bot is done with the earlier events.
        status = await w.mod.say(w.management, "!mod status")
        await w.mod.wait_for_reply(w.management, status)
        await w.mod.poll(0)
        assert not [e for e in w.mod.seen.get(room, []) if is_redaction_of(quoted)(e)]
        event = await w.mod.call("GET", f"{API}/rooms/{q(room)}/event/{q(quoted)}")
        assert PHRASE in event["content"]["body"]
        assert await w.bot.ledger.history(w.mod.user_id) == []
    finally:
        await w.close()


async def test_the_same_message_in_three_rooms_removes_every_copy(synapse: SynapseServer, tmp_path: Path) -> None:
    """One text posted in three protected rooms within a minute is redacted in all three and escalated once."""
    w = await World.launch(synapse, tmp_path, config={}, rooms=3)
    try:
        spammer = w.members["spammer"]
        text = "Limited offer for everyone in this community, reply now"
        copies = [(room, await spammer.say(room, text)) for room in w.protected]
        for room, event_id in copies:
            await w.mod.wait_for(room, is_redaction_of(event_id))
        await w.mod.wait_for(
            w.management, body_contains("Warned", spammer.user_id, "spam: same message in several rooms")
        )
        history = await w.bot.ledger.history(spammer.user_id)
        assert [(i.kind, i.rule) for i in history] == [("warning", "spam: same message in several rooms")]
    finally:
        await w.close()


async def test_a_newcomer_whose_first_message_is_spam_is_banned_for_good(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """Someone the bot saw join whose first message is spam joined to spam: a permanent ban at once."""
    w = await World.launch(synapse, tmp_path, config=SPAM)
    try:
        room = w.protected[0]
        newcomer = w.person("newcomer")
        await newcomer.join(room)
        spam = await newcomer.say(room, EVASIVE)
        await w.mod.wait_for(room, is_redaction_of(spam))
        await w.mod.wait_for(
            room,
            lambda e: (
                e.get("type") == "m.room.member"
                and e.get("state_key") == newcomer.user_id
                and (e.get("content") or {}).get("membership") == "ban"
            ),
        )
        await w.mod.wait_for(w.management, body_contains("Banned", newcomer.user_id, "spam: banned phrase"))
        (infraction,) = await w.bot.ledger.history(newcomer.user_id)
        assert (infraction.kind, infraction.expires_at, infraction.level) == ("ban", None, 4)
        # A member who joined before the bot started is not "fresh": the same spam only warns.
        spammer = w.members["spammer"]
        await spammer.say(room, EVASIVE)
        await w.mod.wait_for(w.management, body_contains("Warned", spammer.user_id, "spam: banned phrase"))
    finally:
        await w.close()
