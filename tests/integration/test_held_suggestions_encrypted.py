"""An encrypted suggestions room."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nio import RoomSendResponse

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.conftest import MakePerson
from tests.integration.suggestions_helpers import VOTES, command, from_bot, ledger_query, marked, react, wait_until


async def test_an_encrypted_suggestions_room(
    synapse: SynapseServer, tmp_path: Path, encrypted_person: MakePerson
) -> None:
    w = await World.create(synapse, tmp_path, members=())
    try:
        bot_id = w.bot_account.user_id
        eann = await encrypted_person(w, "eann")
        room = await eann.create_room(name="Encrypted ideas", invite=[bot_id, w.mod.user_id])
        await w.mod.join(room)
        w.write_config({"suggestions": {"room": room, "threshold": 1}})
        await w.mod.start_watching()
        await w.start_bot()

        async def joined() -> bool:
            return await w.mod.membership(room, bot_id) == "join"

        await wait_until(joined, 25, "the bot in the encrypted suggestions room")
        await asyncio.sleep(1)
        idea = await eann.say(room, "Encrypted idea")
        await marked(w.mod, room, idea, bot_id, VOTES, "vote reactions in an encrypted room")
        assert ledger_query(w, "SELECT excerpt FROM suggestions") == [("Encrypted idea",)]
        reply = await eann.client.room_send(
            room,
            "m.reaction",
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": idea, "key": "👍"}},
            ignore_unverified_devices=True,
        )
        assert isinstance(reply, RoomSendResponse), reply
        await react(w.mod, room, idea, "👎")  # a cleartext reaction in the encrypted room
        await w.mod.wait_for(w.management, from_bot(bot_id, "suggestion #1", "needs discussion"), timeout=25)
        await react(w.mod, room, idea, "🟠")
        await marked(w.mod, room, idea, bot_id, VOTES | {"🟠"}, "🟠 mirrored in the encrypted room")
        await command(w, "!mod suggestion #1 approved")
        await marked(w.mod, room, idea, bot_id, VOTES | {"🟢"}, "🟢 in the encrypted room")
    finally:
        await w.close()
