"""What a member can claim inside the cleartext of an encrypted event."""

from __future__ import annotations

from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import is_redaction_of
from tests.integration.conftest import MakePerson
from tests.integration.e2e_helpers import encrypt, eventually, raw_of, send_encrypted
from tests.integration.test_encryption import SPAM, encrypted_world


async def test_cleartext_sender_and_room_claims_are_ignored(
    synapse: SynapseServer, tmp_path: Path, encrypted_person: MakePerson
) -> None:
    w, mod, _, room = await encrypted_world(synapse, tmp_path, encrypted_person, SPAM)
    try:
        spammer = await encrypted_person(w, "claimer")
        await mod.invite(room, spammer.user_id)
        await spammer.join(room)
        bot = await w.start_bot()
        await spammer.say(room, "hello")  # the session is shared
        raw = raw_of(w.synapse.url, spammer)
        spam = await send_encrypted(
            raw,
            room,
            encrypt(
                spammer,
                room,
                "m.room.message",
                {"msgtype": "m.text", "body": "buy cheap pills here"},
                sender=w.mod.user_id,
                event_id="$forged",
                origin_server_ts=1,
            ),
        )
        await w.mod.wait_for(room, is_redaction_of(spam), timeout=20)
        assert [i.subject for i in await bot.ledger.history(spammer.user_id)] == [spammer.user_id]
        assert await bot.ledger.history(w.mod.user_id) == []
        await raw.close()
    finally:
        await w.close()


async def test_a_cleartext_claiming_a_membership_type_is_not_a_join(
    synapse: SynapseServer, tmp_path: Path, encrypted_person: MakePerson
) -> None:
    """An already-joined member posts encrypted events whose cleartext type is m.room.member
    {membership: join}. State types are never encrypted: the cleartext is refused (counted as
    undecryptable), so join_wave counts no forged joins."""
    config = {
        "protections": {
            "join_wave": {"max_joins": 20, "per_seconds": 60, "max_rejoins": 2, "lock": False},
            "flood": {"enabled": False},
        }
    }
    w, mod, _, room = await encrypted_world(synapse, tmp_path, encrypted_person, config)
    try:
        member = await encrypted_person(w, "joiner")
        await mod.invite(room, member.user_id)
        await member.join(room)
        bot = await w.start_bot()
        await member.say(room, "hello")
        raw = raw_of(w.synapse.url, member)
        for _ in range(3):
            await send_encrypted(raw, room, encrypt(member, room, "m.room.member", {"membership": "join"}))
        await eventually(lambda: bot.crypto.undecryptable >= 3, 20, "refused as never-encrypted types")
        await w.mod.poll(2000)
        history = await bot.ledger.history(member.user_id)
        await raw.close()
        assert history == [], f"forged encrypted 'joins' made a join-churn violation: {history}"
    finally:
        await w.close()
