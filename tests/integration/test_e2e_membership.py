"""Room key rotation and sharing on membership changes."""

from __future__ import annotations

from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from tests.integration.conftest import MakePerson
from tests.integration.e2e_helpers import eventually
from tests.integration.test_encryption import encrypted_world


async def test_a_joiner_reads_the_next_reply_and_a_leaver_gets_a_new_key(
    synapse: SynapseServer, tmp_path: Path, encrypted_person: MakePerson
) -> None:
    w, mod, management, _ = await encrypted_world(synapse, tmp_path, encrypted_person)
    try:
        bot_id = w.bot_account.user_id
        bot = await w.start_bot()
        await mod.say(management, "!mod help")
        first = (await mod.wait_for_text(management, lambda e: e.sender == bot_id and "status" in e.body)).session_id

        newcomer = await encrypted_person(w, "newmod")
        await mod.invite(management, newcomer.user_id)
        await newcomer.join(management)
        await newcomer.settle()
        await mod.say(management, "!mod status")
        reply = await newcomer.wait_for_text(management, lambda e: e.sender == bot_id and "Encryption:" in e.body, 30)
        assert reply.decrypted
        second = reply.session_id
        assert second != first

        await newcomer.client.room_leave(management)
        await eventually(lambda: bot.store.room(management).membership(newcomer.user_id) == "leave", 20, "leave seen")
        await mod.say(management, "!mod help")
        helps = [e for e in mod.seen[management] if getattr(e, "sender", None) == bot_id]
        third = (
            await mod.wait_for_text(management, lambda e: e.sender == bot_id and "status" in e.body and e not in helps)
        ).session_id
        assert third != second, "the leaver still holds the room key of the bot's next message"
    finally:
        await w.close()
