"""Reports, ModMail and appeals against the real Synapse: every flow of the contract, from the
member's side and the moderators', read back from the homeserver and the ledger."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from abusebot.matrix import API, q
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import Person, World, body_contains, is_redaction_of
from tests.integration.test_loop import ledger_query, wait_until

CASE = re.compile(r"case #(\d+)")


async def open_dm(person: Person, bot_id: str) -> str:
    """``person`` opens a direct chat with the bot (as a client does) and waits for it to join."""
    reply = await person.call(
        "POST", f"{API}/createRoom", {"preset": "trusted_private_chat", "is_direct": True, "invite": [bot_id]}
    )
    room = str(reply["room_id"])

    async def joined() -> bool:
        return await person.membership(room, bot_id) == "join"

    await wait_until(joined, 20, "the bot joining the direct chat")
    return room


async def start_case(member: Person, bot_id: str, text: str) -> tuple[str, str]:
    """``member`` opens a direct chat with the bot and writes ``text``: (the chat, the case
    number of the bot's ``case #N`` answer)."""
    dm = await open_dm(member, bot_id)
    await member.start_watching()
    await member.say(dm, text)
    ack = await member.wait_for(dm, from_bot(bot_id, "case #"), timeout=20)
    found = CASE.search(ack["content"]["body"])
    assert found is not None
    return dm, found.group(1)


def from_bot(bot_id: str, *fragments: str) -> Any:
    """Predicate: a message of the bot containing every fragment."""
    contains = body_contains(*fragments)
    return lambda e: e.get("sender") == bot_id and contains(e)


def thread_of(event: Mapping[str, Any]) -> str | None:
    relates = (event.get("content") or {}).get("m.relates_to") or {}
    return relates.get("event_id") if relates.get("rel_type") == "m.thread" else None


async def say_in_thread(person: Person, room: str, root: str, text: str) -> str:
    """A message in the thread of ``root`` (as Element sends one)."""
    return await person.send(
        room,
        {
            "msgtype": "m.text",
            "body": text,
            "m.relates_to": {
                "rel_type": "m.thread",
                "event_id": root,
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": root},
            },
        },
    )


def reaction_to(event_id: str, key: str) -> Any:
    def predicate(event: Mapping[str, Any]) -> bool:
        relates = (event.get("content") or {}).get("m.relates_to") or {}
        return event.get("type") == "m.reaction" and relates.get("event_id") == event_id and relates.get("key") == key

    return predicate


async def modmail_world(synapse: SynapseServer, tmp_path: Path, **config: Any) -> World:
    w = await World.create(synapse, tmp_path, members=("member", "other"), config=config or None)
    await w.mod.start_watching()
    return w


async def test_modmail_opens_a_case_threads_follow_ups_and_relays_the_moderators_reply(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """A member's first message opens a case (both sides see ``case #N``), later ones land in
    the root's thread, a moderator's ``!mod reply`` in the thread is relayed signed by the team
    and confirmed with ✅, an internal note is never relayed, and ``!mod reply N`` works from
    the main timeline."""
    w = await modmail_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        member = w.members["member"]
        await w.start_bot()
        dm, number = await start_case(member, bot_id, "Someone keeps sending me rude DMs after the meetup")
        root = await w.mod.wait_for(
            w.management, from_bot(bot_id, f"case #{number}", member.user_id, "rude DMs after the meetup"), timeout=20
        )
        await member.say(dm, "Their name is @troll, they started on Monday")
        follow = await w.mod.wait_for(w.management, from_bot(bot_id, "they started on Monday"), timeout=20)
        assert thread_of(follow) == root["event_id"]

        await say_in_thread(w.mod, w.management, root["event_id"], "internal: I think this is the raid account")
        command = await say_in_thread(
            w.mod, w.management, root["event_id"], "!mod reply Thanks, we are on it.\nWe will block them."
        )
        await w.mod.wait_for(w.management, reaction_to(command, "✅"), timeout=20)
        relayed = await member.wait_for(dm, from_bot(bot_id, "Thanks, we are on it."), timeout=20)
        assert "We will block them." in relayed["content"]["body"]
        assert relayed["content"]["body"].rstrip().endswith("— the moderation team")
        assert w.mod.user_id not in relayed["content"]["body"]

        await w.mod.say(w.management, f"!mod reply {number} One more thing: thank you for writing.")
        await member.wait_for(dm, from_bot(bot_id, "One more thing: thank you"), timeout=20)
        await member.poll(1500)
        bodies = [e["content"].get("body", "") for e in member.seen.get(dm, []) if e.get("sender") == bot_id]
        assert not any("internal" in body or "raid account" in body for body in bodies)
        kinds = ledger_query(w, "SELECT kind FROM case_messages WHERE case_id = ? ORDER BY id", int(number))
        assert [k for (k,) in kinds] == ["user", "user", "note", "reply", "reply"]
        first_answer = ledger_query(w, "SELECT first_answer_at, channel FROM cases WHERE id = ?", int(number))
        assert first_answer[0][0] is not None
        assert first_answer[0][1] == "modmail"
    finally:
        await w.close()


async def test_a_restarted_bot_continues_the_case_thread(synapse: SynapseServer, tmp_path: Path) -> None:
    """Stop the bot between two messages of a case: after the restart the next message goes
    into the same thread, and ``!mod reply`` in that thread still reaches the member."""
    w = await modmail_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        member = w.members["member"]
        await w.start_bot()
        dm = await open_dm(member, bot_id)
        await member.start_watching()
        await member.say(dm, "hello, a question about the code of conduct")
        await member.wait_for(dm, from_bot(bot_id, "case #"), timeout=20)
        root = await w.mod.wait_for(w.management, from_bot(bot_id, "a question about the code of conduct"), timeout=20)
        await w.stop_bot()
        await member.say(dm, "written while the bot was away")
        await w.start_bot()
        follow = await w.mod.wait_for(w.management, from_bot(bot_id, "written while the bot was away"), timeout=30)
        assert thread_of(follow) == root["event_id"]
        command = await say_in_thread(w.mod, w.management, root["event_id"], "!mod reply still here")
        await w.mod.wait_for(w.management, reaction_to(command, "✅"), timeout=20)
        await member.wait_for(dm, from_bot(bot_id, "still here"), timeout=20)
        assert ledger_query(w, "SELECT COUNT(*) FROM cases")[0][0] == 1
    finally:
        await w.close()


async def test_a_report_is_redacted_at_once_and_the_reporter_stays_hidden(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """``!report`` as a reply: the line is redacted, a report case names the reported sender,
    the room and the event with an excerpt; the reporter is told privately; a second reporter
    joins the case; the reported member hears nothing; ``!report`` without a target gets a
    private usage line."""
    w = await World.create(synapse, tmp_path, members=("spammer", "reporter", "witness"))
    try:
        bot_id, room = w.bot_account.user_id, w.protected[0]
        spammer, reporter, witness = (w.members[n] for n in ("spammer", "reporter", "witness"))
        await w.mod.start_watching()
        await spammer.start_watching()
        await w.start_bot()
        bad = await spammer.say(room, "you are all idiots and I know where you live")
        report = await reporter.send(
            room,
            {
                "msgtype": "m.text",
                "body": "!report threatening people",
                "m.relates_to": {"m.in_reply_to": {"event_id": bad}},
            },
        )
        await w.mod.wait_for(room, is_redaction_of(report), timeout=20)
        root = await w.mod.wait_for(w.management, from_bot(bot_id, "Report — case #", spammer.user_id), timeout=20)
        body = root["content"]["body"]
        number = CASE.search(body).group(1)  # type: ignore[union-attr]
        assert bad in body
        assert "I know where you live" in body
        assert "threatening people" in body
        assert reporter.user_id in body  # the moderators know; the room does not

        await reporter.poll(500)
        invited = await _dm_room_of(reporter, bot_id)
        await reporter.join(invited)
        await in_history(reporter, invited, bot_id, f"case #{number}")

        second = await witness.send(
            room, {"msgtype": "m.text", "body": "!report", "m.relates_to": {"m.in_reply_to": {"event_id": bad}}}
        )
        await w.mod.wait_for(room, is_redaction_of(second), timeout=20)
        again = await w.mod.wait_for(w.management, from_bot(bot_id, "Reported again", "2 reporters"), timeout=20)
        assert thread_of(again) == root["event_id"]
        assert ledger_query(w, "SELECT COUNT(*) FROM cases")[0][0] == 1

        lonely = await witness.say(room, "!report")
        await w.mod.wait_for(room, is_redaction_of(lonely), timeout=20)
        dm = await _dm_room_of(witness, bot_id)
        await witness.join(dm)
        await in_history(witness, dm, bot_id, "To report a message, reply to it")

        # The reported member: no invite, no message from the bot, nothing naming the reporter.
        await spammer.poll(1500)
        assert await _dm_room_of(spammer, bot_id, wait=False) is None
        seen = [e for events in spammer.seen.values() for e in events]
        assert not any(reporter.user_id in str(e.get("content")) for e in seen if e.get("sender") == bot_id)
        people = ledger_query(
            w, "SELECT user_id, role FROM case_people WHERE case_id = ? ORDER BY role, user_id", int(number)
        )
        assert (spammer.user_id, "named") in people
        assert (reporter.user_id, "reporter") in people
        assert (witness.user_id, "reporter") in people

        # Closing it tells every reporter (each was told its number), never the note.
        close = await w.mod.say(w.management, f"!mod case close {number} actioned banned them, see #12")
        await w.mod.wait_for_reply(w.management, close, timeout=20)
        for person, room_of in ((reporter, invited), (witness, dm)):
            told = await in_history(person, room_of, bot_id, f"(case #{number}) is closed")
            assert "see #12" not in told
    finally:
        await w.close()


async def in_history(person: Person, room: str, sender: str, fragment: str, timeout: float = 20) -> str:
    """The body of ``sender``'s latest message in ``room`` containing ``fragment`` (read from the
    room's history, so messages from before the person joined count)."""

    async def found() -> bool:
        return await _find(person, room, sender, fragment) is not None

    await wait_until(found, timeout, f"{fragment!r} in {room}")
    body = await _find(person, room, sender, fragment)
    assert body is not None
    return body


async def _find(person: Person, room: str, sender: str, fragment: str) -> str | None:
    history = await person.call("GET", f"{API}/rooms/{q(room)}/messages", query={"dir": "b", "limit": "50"})
    for event in history.get("chunk", []):
        body = (event.get("content") or {}).get("body")
        if event.get("sender") == sender and isinstance(body, str) and fragment in body:
            return body
    return None


async def _dm_room_of(person: Person, bot_id: str, wait: bool = True) -> str | None:
    """The room the bot invited ``person`` to (its notices room)."""
    for _ in range(40 if wait else 1):
        reply = await person.call("GET", f"{API}/sync", query={"timeout": "0"})
        for room_id, invited in (reply.get("rooms", {}).get("invite") or {}).items():
            for event in invited.get("invite_state", {}).get("events", []):
                if event.get("type") == "m.room.member" and event.get("sender") == bot_id:
                    return str(room_id)
        for room_id in reply.get("rooms", {}).get("join") or {}:
            members = await person.call("GET", f"{API}/rooms/{q(room_id)}/joined_members")
            if set(members.get("joined", {})) == {person.user_id, bot_id}:
                return str(room_id)
        if wait:
            await asyncio.sleep(0.5)
    return None


async def test_an_urgent_mention_pings_every_moderator_and_opens_a_case(synapse: SynapseServer, tmp_path: Path) -> None:
    """``@moderators`` in a protected room: an alert in the management room mentioning every
    moderator (pills and ``m.mentions``), with a case; a second call soon after joins it."""
    w = await World.create(synapse, tmp_path, members=("member",))
    try:
        bot_id, room = w.bot_account.user_id, w.protected[0]
        second_mod = w.person("mod2")
        await w.mod.invite(w.management, second_mod.user_id)
        await second_mod.join(w.management)
        levels = await w.mod.state(w.management, "m.room.power_levels")
        assert levels is not None
        levels["users"][second_mod.user_id] = 50
        await w.mod.put_state(w.management, "m.room.power_levels", levels)
        await w.mod.start_watching()
        await w.start_bot()
        member = w.members["member"]
        call = await member.say(room, "@Moderators a raid is starting, help!")
        alert = await w.mod.wait_for(w.management, from_bot(bot_id, "Urgent — case #", member.user_id), timeout=20)
        content = alert["content"]
        assert "a raid is starting" in content["body"]
        assert set(content["m.mentions"]["user_ids"]) == {w.mod.user_id, second_mod.user_id}
        assert f"https://matrix.to/#/{w.mod.user_id}" in content["formatted_body"]
        assert call in content["body"]
        await member.say(room, "@moderators they are still here")
        again = await w.mod.wait_for(w.management, from_bot(bot_id, "again", "still here"), timeout=20)
        assert thread_of(again) == alert["event_id"]
        assert "m.mentions" in again["content"]
        assert not again["content"]["m.mentions"]
        assert ledger_query(w, "SELECT kind, channel FROM cases") == [("mention", "mention")]
        # Words that only look like the call do nothing.
        await member.say(room, "email @moderators_team or moderators@example.org")
        await member.say(room, "just chatting")
        await asyncio.sleep(2)
        assert ledger_query(w, "SELECT COUNT(*) FROM cases")[0][0] == 1
    finally:
        await w.close()


async def test_a_banned_user_appeals_from_the_notice_and_an_overturn_unbans_everywhere(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """The ban notice ends with ``appeal #N <why>``; the banned member answers there; the appeal
    case names the decision and the reason, in the management room only; ``!mod appeal K
    overturn`` pardons and unbans in every protected room and tells the member the reason."""
    w = await World.create(synapse, tmp_path, rooms=2, members=("member",))
    try:
        bot_id = w.bot_account.user_id
        member = w.members["member"]
        await w.mod.start_watching()
        await w.start_bot()
        command = await w.mod.say(w.management, f"!mod ban {member.user_id} spamming links")
        await w.mod.wait_for_reply(w.management, command, timeout=30)
        [(inf_id,)] = ledger_query(w, "SELECT id FROM infractions WHERE subject = ? AND kind = 'ban'", member.user_id)
        notices = await _dm_room_of(member, bot_id)
        assert notices is not None
        await member.join(notices)
        await member.start_watching()
        ban_notice = await in_history(member, notices, bot_id, "banned")
        assert ban_notice.rstrip().endswith(f"appeal #{inf_id} <why>")
        assert "not read" not in ban_notice

        await member.say(notices, f"appeal #{inf_id} I only shared the conference link, sorry")
        ack = await member.wait_for(notices, from_bot(bot_id, "case #", f"#{inf_id}"), timeout=20)
        number = CASE.search(ack["content"]["body"]).group(1)  # type: ignore[union-attr]
        root = await w.mod.wait_for(w.management, from_bot(bot_id, f"Appeal — case #{number}"), timeout=20)
        body = root["content"]["body"]
        for part in (f"#{inf_id}", "ban", "all protected rooms", "spamming links", w.mod.user_id, "conference link"):
            assert part in body, part

        await w.mod.say(w.management, f"!mod appeal {number} overturn the link was on topic")
        told = await member.wait_for(notices, from_bot(bot_id, "overturned"), timeout=30)
        assert "the link was on topic" in told["content"]["body"]
        for room in w.protected:
            assert await w.mod.membership(room, member.user_id) != "ban"
        state = ledger_query(w, "SELECT state FROM infractions WHERE id = ?", inf_id)[0][0]
        assert state == "pardoned"
        assert ledger_query(w, "SELECT state, outcome FROM cases WHERE id = ?", int(number)) == [
            ("closed", "overturned")
        ]
        await member.join(w.protected[0])  # welcome back
    finally:
        await w.close()


async def test_appeals_the_user_may_not_make_are_refused_politely(synapse: SynapseServer, tmp_path: Path) -> None:
    """Someone else's decision, a private note, a pardoned one and a second appeal of one
    decision are refused with an explanation (a note reads like a missing one); without an id,
    the latest sanction in force is appealed; the uphold keeps the mute and tells the reason."""
    w = await modmail_world(synapse, tmp_path)
    try:
        bot_id, room = w.bot_account.user_id, w.protected[0]
        member, other = w.members["member"], w.members["other"]
        await w.start_bot()
        for text in (
            f"!mod warn {other.user_id} rude",
            f"!mod note {member.user_id} keeps arguing",
            f"!mod warn {member.user_id} off-topic",
            f"!mod mute {member.user_id} 2h flooding",
        ):
            command = await w.mod.say(w.management, text)
            await w.mod.wait_for_reply(w.management, command, timeout=30)
        rows = ledger_query(w, "SELECT id, subject, kind FROM infractions ORDER BY id")
        others = next(i for i, s, k in rows if s == other.user_id)
        note = next(i for i, s, k in rows if k == "note")
        warning = next(i for i, s, k in rows if s == member.user_id and k == "warning")
        mute = next(i for i, s, k in rows if k == "mute")
        command = await w.mod.say(w.management, f"!mod pardon {warning} mistake")
        await w.mod.wait_for_reply(w.management, command, timeout=30)

        dm = await open_dm(member, bot_id)
        await member.start_watching()
        for ask, answer in (
            (f"appeal #{others} not fair", f"found no decision #{others} concerning you"),
            (f"appeal #{note} what is this", f"found no decision #{note} concerning you"),
            (f"appeal #{warning} please", "already been withdrawn"),
            (f"appeal #{mute}", "Please add why you appeal"),
        ):
            await member.say(dm, ask)
            await member.wait_for(dm, from_bot(bot_id, answer), timeout=20)
        await member.say(dm, "appeal I was only answering a question")
        ack = await member.wait_for(dm, from_bot(bot_id, f"appeal of decision #{mute} is case #"), timeout=20)
        number = CASE.search(ack["content"]["body"]).group(1)  # type: ignore[union-attr]
        await member.say(dm, f"appeal #{mute} again")
        await member.wait_for(dm, from_bot(bot_id, "already have an open appeal", f"case #{number}"), timeout=20)
        assert ledger_query(w, "SELECT COUNT(*) FROM cases WHERE kind = 'appeal'")[0][0] == 1

        await w.mod.say(w.management, f"!mod appeal {number} uphold the flood was real")
        told = await member.wait_for(dm, from_bot(bot_id, "the decision stands"), timeout=20)
        assert "the flood was real" in told["content"]["body"]
        assert ledger_query(w, "SELECT state FROM infractions WHERE id = ?", mute)[0][0] == "active"
        levels = await w.mod.state(room, "m.room.power_levels")
        assert levels is not None
        assert levels["users"].get(member.user_id, 0) < 0
    finally:
        await w.close()


async def test_case_commands_show_close_link_name_and_block(synapse: SynapseServer, tmp_path: Path) -> None:
    """``!mod cases``, ``!mod case N`` (kind, channel, who, people named, linked infractions,
    transcript), a sanction typed in the thread links itself, ``case name``/``case link``,
    ``case close`` tells the member (never the note), ``modmail block`` stops new cases, and a
    protected room's admin cannot read cases there."""
    w = await modmail_world(synapse, tmp_path)
    try:
        bot_id, room = w.bot_account.user_id, w.protected[0]
        member, other = w.members["member"], w.members["other"]
        await w.start_bot()
        dm, number = await start_case(member, bot_id, f"{other.user_id} is harassing me")
        root = await w.mod.wait_for(w.management, from_bot(bot_id, f"case #{number}"), timeout=20)
        warn = await say_in_thread(w.mod, w.management, root["event_id"], f"!mod warn {other.user_id} harassment")
        await w.mod.wait_for_reply(w.management, warn, timeout=30)
        name = await w.mod.say(w.management, f"!mod case name {number} {other.user_id}")
        await w.mod.wait_for_reply(w.management, name, timeout=20)
        note = await w.mod.say(w.management, f"!mod note {other.user_id} see the case")
        await w.mod.wait_for_reply(w.management, note, timeout=20)
        [(note_id,)] = ledger_query(w, "SELECT id FROM infractions WHERE kind = 'note'")
        link = await w.mod.say(w.management, f"!mod case link {number} {note_id}")
        await w.mod.wait_for_reply(w.management, link, timeout=20)
        show = await w.mod.say(w.management, f"!mod case {number}")
        details = await w.mod.wait_for_reply(w.management, show, timeout=20)
        for part in (
            "ModMail",
            "channel modmail",
            member.user_id,
            f"People named: {other.user_id}",
            "warning",
            f"#{note_id}",
            "Transcript: 1",
        ):
            assert part in details, (part, details)
        listing = await w.mod.say(w.management, "!mod cases")
        assert f"#{number}" in await w.mod.wait_for_reply(w.management, listing, timeout=20)

        # A room admin (power 100 in the protected room) may not read cases there.
        peek = await w.mod.say(room, f"!mod case {number}")
        assert "only available in the management room" in await w.mod.wait_for_reply(room, peek, timeout=20)

        close = await w.mod.say(w.management, f"!mod case close {number} actioned secret internal note")
        assert "Closed case" in await w.mod.wait_for_reply(w.management, close, timeout=20)
        closed = await member.wait_for(dm, from_bot(bot_id, f"case #{number}", "is closed"), timeout=20)
        assert "secret internal note" not in closed["content"]["body"]
        again = await w.mod.say(w.management, f"!mod case close {number} invalid")
        assert "already closed" in await w.mod.wait_for_reply(w.management, again, timeout=20)

        block = await w.mod.say(w.management, f"!mod modmail block {member.user_id} abusive")
        await w.mod.wait_for_reply(w.management, block, timeout=20)
        await member.say(dm, "let me open another one")
        await member.wait_for(dm, from_bot(bot_id, "not passed on"), timeout=20)
        assert ledger_query(w, "SELECT COUNT(*) FROM cases")[0][0] == 1
        unblock = await w.mod.say(w.management, f"!mod modmail unblock {member.user_id}")
        await w.mod.wait_for_reply(w.management, unblock, timeout=20)
        await member.say(dm, "sorry, one more question")
        await member.wait_for(dm, from_bot(bot_id, f"is case #{int(number) + 1}"), timeout=20)
        assert ledger_query(w, "SELECT COUNT(*) FROM cases")[0][0] == 2
        assert ledger_query(w, "SELECT action FROM audit WHERE action LIKE 'modmail_%' ORDER BY id") == [
            ("modmail_block",),
            ("modmail_unblock",),
        ]
    finally:
        await w.close()


async def test_named_replies_limits_and_who_may_write(synapse: SynapseServer, tmp_path: Path) -> None:
    """With ``anonymous_staff: false`` a reply is signed with the moderator's name; a member
    with ``max_open_cases`` open cases gets a polite refusal; a stranger's direct invite is
    declined, not left pending."""
    w = await modmail_world(synapse, tmp_path, community={"modmail": {"anonymous_staff": False, "max_open_cases": 1}})
    try:
        bot_id = w.bot_account.user_id
        member = w.members["member"]
        await w.start_bot()
        dm, number = await start_case(member, bot_id, "first case")
        await w.mod.say(w.management, f"!mod reply {number} hello from a named moderator")
        signed = await member.wait_for(dm, from_bot(bot_id, "hello from a named moderator"), timeout=20)
        assert w.mod.user_id in signed["content"]["body"]

        second = await open_dm(member, bot_id)
        await member.say(second, "a second case please")
        await member.wait_for(second, from_bot(bot_id, "already have 1 open case"), timeout=20)

        stranger = w.person("stranger")
        reply = await stranger.call(
            "POST", f"{API}/createRoom", {"preset": "trusted_private_chat", "is_direct": True, "invite": [bot_id]}
        )

        async def declined() -> bool:
            return await stranger.membership(str(reply["room_id"]), bot_id) == "leave"

        await wait_until(declined, 20, "the stranger's invite declined")
    finally:
        await w.close()


async def test_reports_to_the_homeserver_become_cases(synapse: SynapseServer, tmp_path: Path) -> None:
    """With ``poll_homeserver_reports`` (the bot a Synapse admin), a report through the client
    API's report button, about a protected room's event, becomes a case of channel
    ``homeserver``; one about another room does not."""
    w = await World.create(
        synapse,
        tmp_path,
        members=("spammer", "reporter"),
        bot_admin=True,
        config={"community": {"reports": {"poll_homeserver_reports": True}}},
    )
    try:
        bot_id, room = w.bot_account.user_id, w.protected[0]
        spammer, reporter = w.members["spammer"], w.members["reporter"]
        elsewhere = await spammer.create_room(name="Unprotected", invite=[reporter.user_id])
        await reporter.join(elsewhere)
        await w.mod.start_watching()
        bot = await w.start_bot()
        await wait_until(lambda: _kv(w, "cases:homeserver_report"), 20, "the first poll")
        bad = await spammer.say(room, "visit my scam site")
        ignored = await spammer.say(elsewhere, "not our room")
        for event in (bad, ignored):
            await reporter.call(
                "POST",
                f"{API}/rooms/{q(room if event == bad else elsewhere)}/report/{q(event)}",
                {"reason": "scam", "score": -100},
            )
        made = await bot.host.features["cases"].poll_reports()
        assert made == 1
        root = await w.mod.wait_for(
            w.management, from_bot(bot_id, "reported to the homeserver", spammer.user_id), timeout=20
        )
        assert "scam site" in root["content"]["body"]
        assert ledger_query(w, "SELECT channel, opener FROM cases") == [("homeserver", reporter.user_id)]
        assert await bot.host.features["cases"].poll_reports() == 0  # the position is kept
    finally:
        await w.close()


async def _kv(w: World, key: str) -> bool:
    return bool(ledger_query(w, "SELECT 1 FROM kv WHERE key = ?", key))


async def test_with_modmail_off_nothing_promises_that_anyone_reads_replies(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """``community.modmail.enabled: false``: a member's direct chat gets one answer saying the bot
    does not pass messages on, no case opens, and a warning's notice says whom to write to
    instead of offering an appeal."""
    w = await modmail_world(synapse, tmp_path, community={"modmail": {"enabled": False}})
    try:
        bot_id = w.bot_account.user_id
        member = w.members["member"]
        await w.start_bot()
        dm = await open_dm(member, bot_id)
        await member.start_watching()
        await member.say(dm, "hello?")
        await member.wait_for(dm, from_bot(bot_id, "do not pass messages on"), timeout=20)
        command = await w.mod.say(w.management, f"!mod warn {member.user_id} be kind")
        await w.mod.wait_for_reply(w.management, command, timeout=20)
        notices = await _dm_room_of(member, bot_id)
        assert notices is not None
        await member.join(notices)
        notice = await in_history(member, notices, bot_id, "This is a warning")
        assert "replies to this message are not read" in notice
        assert "appeal #" not in notice
        assert ledger_query(w, "SELECT COUNT(*) FROM cases") == [(0,)]
    finally:
        await w.close()
