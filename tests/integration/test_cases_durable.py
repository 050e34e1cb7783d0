"""The cases' durability guarantee (``abusebot.features.cases``: "a restart in the middle finds
the case and goes on"), checked by killing the bot (SIGKILL, a separate process behind a proxy)
at the worst moments: right after a case's root reached the management room, and right after a
moderator's answer reached the member. After the restart nothing is lost and nothing is sent
twice."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.test_cases import CASE, from_bot, open_dm, reaction_to, say_in_thread
from tests.integration.test_durable_actions import KillingProxy, proxy  # noqa: F401 - the fixture
from tests.integration.test_loop import ledger_query, wait_for_checkpoint, wait_until


def _sends_to(room_id: str) -> object:
    return lambda method, path: method == "PUT" and f"/rooms/{room_id}/send/" in path


async def test_kill_9_right_after_the_case_root_is_posted(
    synapse: SynapseServer,
    tmp_path: Path,
    proxy: KillingProxy,  # noqa: F811
) -> None:
    """The bot dies the moment the root of a new case is in the management room (before it
    noted the root's id or answered the member). After a restart: one root, one ``case #N``
    answer, the root's id noted, and the next message lands in the root's thread."""
    w = await World.create(synapse, tmp_path, members=("member",))
    try:
        bot_id, member = w.bot_account.user_id, w.members["member"]
        w.write_config({"homeserver": proxy.url})
        await w.mod.start_watching()
        w.spawn_bot()
        await wait_for_checkpoint(w)
        dm = await open_dm(member, bot_id)
        await member.start_watching()
        proxy.kill = lambda: w.kill_bot(signal.SIGKILL)
        proxy.trigger = _sends_to(w.management)  # type: ignore[assignment]
        await member.say(dm, "help, a question for the team")
        await asyncio.wait_for(proxy.fired.wait(), 30)
        w.spawn_bot()
        ack = await member.wait_for(dm, from_bot(bot_id, "case #"), timeout=40)
        number = int(CASE.search(ack["content"]["body"]).group(1))  # type: ignore[union-attr]
        await member.say(dm, "and a second line")
        follow = await w.mod.wait_for(w.management, from_bot(bot_id, "and a second line"), timeout=30)
        roots = [e for e in w.mod.seen.get(w.management, []) if from_bot(bot_id, f"ModMail — case #{number}")(e)]
        assert len(roots) == 1, roots
        assert follow["content"]["m.relates_to"]["event_id"] == roots[0]["event_id"]
        await member.poll(1500)
        acks = [e for e in member.seen.get(dm, []) if from_bot(bot_id, "case #")(e)]
        assert len(acks) == 1, acks
        assert ledger_query(w, "SELECT root_event FROM cases WHERE id = ?", number) == [(roots[0]["event_id"],)]
    finally:
        await w.close()


async def test_kill_9_right_after_a_reply_reaches_the_member(
    synapse: SynapseServer,
    tmp_path: Path,
    proxy: KillingProxy,  # noqa: F811
) -> None:
    """The bot dies the moment a moderator's ``!mod reply`` reached the member (before the ✅
    and the command's claim). After a restart the command runs again: the member has the answer
    once, the moderator gets the ✅, the transcript holds it once."""
    w = await World.create(synapse, tmp_path, members=("member",))
    try:
        bot_id, member = w.bot_account.user_id, w.members["member"]
        w.write_config({"homeserver": proxy.url})
        await w.mod.start_watching()
        w.spawn_bot()
        await wait_for_checkpoint(w)
        dm = await open_dm(member, bot_id)
        await member.start_watching()
        await member.say(dm, "is anyone there?")
        await member.wait_for(dm, from_bot(bot_id, "case #"), timeout=30)
        root = await w.mod.wait_for(w.management, from_bot(bot_id, "is anyone there?"), timeout=30)
        proxy.kill = lambda: w.kill_bot(signal.SIGKILL)
        proxy.trigger = _sends_to(dm)  # type: ignore[assignment]
        command = await say_in_thread(w.mod, w.management, root["event_id"], "!mod reply yes, we read you")
        await asyncio.wait_for(proxy.fired.wait(), 30)
        w.spawn_bot()
        await w.mod.wait_for(w.management, reaction_to(command, "✅"), timeout=40)
        await member.wait_for(dm, from_bot(bot_id, "yes, we read you"), timeout=20)
        await member.poll(1500)
        answers = [e for e in member.seen.get(dm, []) if from_bot(bot_id, "yes, we read you")(e)]
        assert len(answers) == 1, answers

        async def one_reaction() -> bool:
            await w.mod.poll(500)
            return len([e for e in w.mod.seen.get(w.management, []) if reaction_to(command, "✅")(e)]) == 1

        await wait_until(one_reaction, 10, "one ✅")
        assert ledger_query(w, "SELECT COUNT(*) FROM case_messages WHERE kind = 'reply'") == [(1,)]
    finally:
        await w.close()
