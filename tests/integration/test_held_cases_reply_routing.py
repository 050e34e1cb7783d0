"""README: "In the thread, `!mod reply <text…>` relays your text to the member". A reply typed
in case #1's thread whose text happens to begin with a number ("2 moderators are on it") is
sent to case #2's member instead — one member's case answer relayed to another member."""

from __future__ import annotations

import asyncio
from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.cases_helpers import CASE, from_bot, open_dm, say_in_thread


async def test_a_reply_in_a_case_thread_goes_to_that_cases_member(synapse: SynapseServer, tmp_path: Path) -> None:
    w = await World.create(synapse, tmp_path, members=("alice", "bob"))
    try:
        bot_id = w.bot_account.user_id
        alice, bob = w.members["alice"], w.members["bob"]
        await w.mod.start_watching()
        await w.start_bot()
        numbers = {}
        for person, text in ((alice, "someone threatened me in the voice chat"), (bob, "a question about the rules")):
            dm = await open_dm(person, bot_id)
            await person.start_watching()
            await person.say(dm, text)
            ack = await person.wait_for(dm, from_bot(bot_id, "case #"), timeout=20)
            numbers[person.user_id] = (dm, int(CASE.search(ack["content"]["body"]).group(1)))  # type: ignore[union-attr]
        _alice_dm, alice_case = numbers[alice.user_id]
        bob_dm, bob_case = numbers[bob.user_id]
        root = await w.mod.wait_for(w.management, from_bot(bot_id, f"case #{alice_case}", "voice chat"), timeout=20)
        await say_in_thread(
            w.mod, w.management, root["event_id"], f"!mod reply {bob_case} of us are looking at the voice chat logs"
        )
        await asyncio.sleep(4)
        await bob.poll(1000)
        leaked = [e for e in bob.seen.get(bob_dm, []) if from_bot(bot_id, "voice chat logs")(e)]
        assert leaked == [], "the answer typed in Alice's case thread was relayed to Bob"
    finally:
        await w.close()
