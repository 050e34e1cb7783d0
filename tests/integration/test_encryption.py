"""Encrypted rooms against the real Synapse: the bot reads, moderates and answers in them.

The other side is matrix-nio's own client with encryption (``abusebot.testing.e2e``), its keys
in a temp dir: it decrypts the bot's replies as any member's client would.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from abusebot.matrix import API, q
from abusebot.testing.e2e import EncryptedPerson
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import Person, World, is_redaction_of
from tests.integration.conftest import MakePerson
from tests.integration.test_day_one import check_config
from tests.integration.test_loop import wait_for_checkpoint, wait_until

SPAM = {"protections": {"spam": {"banned_words": ["buy cheap pills"]}}}


async def encrypted_world(
    synapse: SynapseServer, tmp_path: Path, make: MakePerson, config: dict[str, object] | None = None
) -> tuple[World, EncryptedPerson, str, str]:
    """A world whose management room and one protected room are encrypted, both made by an
    encrypted moderator; the plain moderator ``w.mod`` is in the protected room too (to watch
    redactions, which are never encrypted). Returns (world, moderator, management, room)."""
    w = await World.create(synapse, tmp_path, members=())
    bot_id = w.bot_account.user_id
    mod = await make(w, "emod")
    management = await mod.create_room(name="Encrypted moderators", invite=[bot_id], power={bot_id: 50})
    room = await mod.create_room(name="Encrypted lobby", invite=[bot_id, w.mod.user_id], power={bot_id: 100})
    await w.mod.join(room)
    w.protected = [room]
    w.write_config({"management_room": management, "protected_rooms": [room], **(config or {})})
    await w.mod.start_watching()
    return w, mod, management, room


async def test_a_command_in_an_encrypted_management_room_is_obeyed_and_answered_encrypted(
    synapse: SynapseServer, tmp_path: Path, encrypted_person: MakePerson
) -> None:
    w, mod, management, room = await encrypted_world(synapse, tmp_path, encrypted_person)
    try:
        spammer = w.person("spammer")
        await mod.invite(room, spammer.user_id)
        await spammer.join(room)
        await w.start_bot()
        await mod.say(management, f"!mod ban {spammer.user_id} spam")
        reply = await mod.wait_for_text(management, lambda e: e.sender == w.bot_account.user_id and "Banned" in e.body)
        assert reply.decrypted  # nio decrypted it: the bot sent it encrypted
        assert await w.mod.membership(room, spammer.user_id) == "ban"
    finally:
        await w.close()


async def test_spam_in_an_encrypted_room_is_read_redacted_and_escalated(
    synapse: SynapseServer, tmp_path: Path, encrypted_person: MakePerson
) -> None:
    """A banned phrase is only visible in the cleartext: the bot decrypts, redacts the envelope
    event and records the infraction."""
    w, mod, _, room = await encrypted_world(synapse, tmp_path, encrypted_person, SPAM)
    try:
        spammer = await encrypted_person(w, "espam")
        await mod.invite(room, spammer.user_id)
        await spammer.join(room)
        bot = await w.start_bot()
        await spammer.settle()
        hello = await spammer.say(room, "hello everyone")
        spam = await spammer.say(room, "buy cheap pills here")
        await w.mod.wait_for(room, is_redaction_of(spam))
        history = await bot.ledger.history(spammer.user_id)
        assert [i.origin for i in history] == ["protection"]
        assert bot.crypto is not None
        assert bot.crypto.decrypted >= 2
        redacted = {e.get("redacts") for e in w.mod.seen.get(room, []) if e.get("type") == "m.room.redaction"}
        assert hello not in redacted
    finally:
        await w.close()


async def test_a_restarted_bot_decrypts_at_once_without_new_keys(
    synapse: SynapseServer, tmp_path: Path, encrypted_person: MakePerson
) -> None:
    """Stopped and started again (the same device, its keys in data_dir), the bot reads a command
    sent with the room key it already had."""
    w, mod, management, _ = await encrypted_world(synapse, tmp_path, encrypted_person)
    try:
        bot_id = w.bot_account.user_id
        await w.start_bot()
        await mod.say(management, "!mod help")
        await mod.wait_for_text(management, lambda e: e.sender == bot_id and "status" in e.body)
        device = w.bot.hs.device_id
        await w.stop_bot()

        await w.start_bot()
        assert w.bot.hs.device_id == device
        await mod.say(management, "!mod status")
        status = await mod.wait_for_text(management, lambda e: e.sender == bot_id and "Encryption:" in e.body)
        assert "0 undecryptable" in status.body
    finally:
        await w.close()


async def test_an_undecryptable_event_is_counted_and_the_bot_goes_on(
    synapse: SynapseServer, tmp_path: Path, encrypted_person: MakePerson
) -> None:
    """A forged ``m.room.encrypted`` event (a session nobody shared) is counted in ``!mod
    status`` and never stops the bot."""
    w, mod, management, room = await encrypted_world(synapse, tmp_path, encrypted_person)
    try:
        bot_id = w.bot_account.user_id
        bot = await w.start_bot()
        forged = {
            "algorithm": "m.megolm.v1.aes-sha2",
            "sender_key": "x" * 43,
            "ciphertext": "not a ciphertext",
            "session_id": "nobody-shared-this",
            "device_id": "NOPE",
        }
        await w.mod.call("PUT", f"{API}/rooms/{q(room)}/send/m.room.encrypted/forged1", forged)
        await wait_until(lambda: _true(bot.crypto is not None and bot.crypto.undecryptable == 1), 15, "counted")
        await mod.say(management, "!mod status")
        status = await mod.wait_for_text(management, lambda e: e.sender == bot_id and "Encryption:" in e.body)
        assert "1 undecryptable" in status.body
    finally:
        await w.close()


async def _true(value: object) -> bool:
    return bool(value)


async def test_the_bot_cross_signs_its_device_and_keeps_its_identity_across_restarts(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """Another user's ``/keys/query`` shows the bot's master and self-signing keys, the device
    signed by the self-signing key (itself signed by the master key); a restart publishes
    nothing new; the seeds are in data_dir, 0600."""
    w = await World.launch(synapse, tmp_path, members=())
    try:
        bot_id, device = w.bot_account.user_id, w.bot.hs.device_id

        async def published() -> dict[str, Any]:
            reply = await w.mod.call("POST", f"{API}/keys/query", {"device_keys": {bot_id: []}})
            assert isinstance(reply, dict)
            return reply

        first = await published()
        [master] = first["master_keys"][bot_id]["keys"].values()
        [ssk] = first["self_signing_keys"][bot_id]["keys"].values()
        assert f"ed25519:{master}" in first["self_signing_keys"][bot_id]["signatures"][bot_id]
        assert f"ed25519:{ssk}" in first["device_keys"][bot_id][device]["signatures"][bot_id]
        keys_file = w.base / "data" / "cross_signing.json"
        assert keys_file.stat().st_mode & 0o777 == 0o600

        await w.stop_bot()
        await w.start_bot()
        assert w.bot.hs.device_id == device
        again = await published()
        assert again["master_keys"] == first["master_keys"]
        assert again["self_signing_keys"] == first["self_signing_keys"]
        assert w.bot.cross_signing is not None
        assert w.bot.cross_signing.complete
    finally:
        await w.close()


async def test_check_config_reports_the_device_and_its_cross_signing_and_encrypted_rooms_are_no_problem(
    synapse: SynapseServer, tmp_path: Path, encrypted_person: MakePerson
) -> None:
    """Before the first start the device is "not cross-signed yet"; after it, "cross-signed"
    with the master key; an encrypted management room is noted, not a problem (exit 0)."""
    w, _, _, _ = await encrypted_world(synapse, tmp_path, encrypted_person)
    try:
        before = check_config(w)
        assert before.returncode == 0, before.stderr
        assert "not cross-signed yet" in before.stdout
        bot = await w.start_bot()
        assert bot.cross_signing is not None
        assert bot.crypto is not None
        master, device = bot.cross_signing.master, bot.hs.device_id
        await w.stop_bot()
        after = check_config(w)
        assert after.returncode == 0, after.stderr
        ed25519 = bot.crypto.identity_keys["ed25519"]
        assert f"device {device} (ed25519 key {ed25519}): cross-signed (master key {master})" in after.stdout
        assert "encrypted (I read and answer there encrypted)" in after.stdout
    finally:
        await w.close()


async def test_after_kill_9_the_bot_reads_what_was_sent_while_it_was_down(
    synapse: SynapseServer, tmp_path: Path, encrypted_person: MakePerson
) -> None:
    """The bot as its own process, ``kill -9``ed; meanwhile the moderator's client starts a new
    room key (shared to the bot's device while it is away) and sends a command with it. The
    restarted bot, same device, takes the key from its to-device queue and answers."""
    w, mod, management, _ = await encrypted_world(synapse, tmp_path, encrypted_person)
    try:
        bot_id = w.bot_account.user_id
        w.spawn_bot()
        await wait_for_checkpoint(w)
        await mod.say(management, "!mod help")
        await mod.wait_for_text(management, lambda e: e.sender == bot_id and "status" in e.body, timeout=30)
        w.kill_bot(signal.SIGKILL)

        mod.client.olm.rotate_outbound_group_session(management)  # a key the bot has never seen
        await mod.say(management, "!mod status")
        w.spawn_bot()
        status = await mod.wait_for_text(management, lambda e: e.sender == bot_id and "Encryption:" in e.body, 30)
        assert "0 undecryptable" in status.body
        assert "cross-signed" in status.body
    finally:
        await w.close()


async def test_modmail_works_in_an_encrypted_direct_chat_and_an_encrypted_management_room(
    synapse: SynapseServer, tmp_path: Path, encrypted_person: MakePerson
) -> None:
    """A member of the protected room opens an encrypted direct chat with the bot (as Element
    does) and writes: a readable ``case #N`` answer, the root (readable) in the encrypted
    management room, the follow-up in its thread (the relation in the clear, as the spec asks),
    and the moderator's ``!mod reply`` in the thread decrypted by the member. A stranger's
    direct chat invite is declined; a "direct" room of three is left."""
    w, mod, management, room = await encrypted_world(synapse, tmp_path, encrypted_person)
    try:
        bot_id = w.bot_account.user_id
        member = await encrypted_person(w, "member")
        await mod.invite(room, member.user_id)
        await member.join(room)
        stranger = await encrypted_person(w, "stranger")
        bot = await w.start_bot()
        dm = await member.create_room(name=None, invite=[bot_id], direct=True)
        cold = await stranger.create_room(name=None, invite=[bot_id], direct=True)
        await wait_until(lambda: _true(bot.store.room(dm).membership(bot_id) == "join"), 20, "the bot in the DM")
        await member.say(dm, "hello, someone is threatening me in private")
        answer = await member.wait_for_text(dm, lambda e: e.sender == bot_id and "case #" in e.body, timeout=20)
        assert answer.decrypted
        number = answer.body.split("case #", 1)[1].split(".", 1)[0]
        root = await mod.wait_for_text(
            management, lambda e: e.sender == bot_id and f"case #{number}" in e.body and "threatening" in e.body
        )
        assert root.decrypted
        await member.say(dm, "they wrote again just now")
        follow = await mod.wait_for_text(management, lambda e: e.sender == bot_id and "wrote again" in e.body)
        plain_mod = Person(w.synapse.url, mod.account)
        wire = await plain_mod.call("GET", f"{API}/rooms/{q(management)}/event/{q(follow.event_id)}")
        assert wire["type"] == "m.room.encrypted"
        assert wire["content"]["m.relates_to"]["rel_type"] == "m.thread"  # in the clear
        assert wire["content"]["m.relates_to"]["event_id"] == root.event_id
        await plain_mod.close()
        await mod.say(management, f"!mod reply {number} We are looking into it.")
        relayed = await member.wait_for_text(dm, lambda e: e.sender == bot_id and "looking into it" in e.body)
        assert relayed.decrypted
        assert "— the moderation team" in relayed.body

        plain_stranger = Person(w.synapse.url, stranger.account)

        async def declined() -> bool:
            return await plain_stranger.membership(cold, bot_id) == "leave"

        await wait_until(declined, 20, "the stranger's invite declined")
        await plain_stranger.close()
        crowd = await member.create_room(name=None, invite=[bot_id, stranger.user_id], direct=True)
        await stranger.join(crowd)
        plain = Person(w.synapse.url, member.account)

        async def left() -> bool:
            return await plain.membership(crowd, bot_id) == "leave"

        await wait_until(left, 20, "the bot leaving a 'direct' room of three")
        assert crowd not in bot.host.features["direct_chats"].rooms
        await plain.close()

        # After a restart the bot knows the chat is encrypted before it answers there.
        await w.stop_bot()
        await w.start_bot()
        await member.say(dm, "back again after your restart")
        await mod.wait_for_text(management, lambda e: e.sender == bot_id and "back again" in e.body)
        await mod.say(management, f"!mod reply {number} Still with you.")
        again = await member.wait_for_text(dm, lambda e: e.sender == bot_id and "Still with you" in e.body)
        assert again.decrypted, "answered in the clear in an encrypted chat"
    finally:
        await w.close()


async def test_a_report_in_an_encrypted_room_quotes_the_decrypted_message(
    synapse: SynapseServer, tmp_path: Path, encrypted_person: MakePerson
) -> None:
    """``!report`` (encrypted) replying to an encrypted message: the line is redacted, and the
    case's root in the encrypted management room quotes the reported message as decrypted."""
    from nio import RoomSendResponse

    w, mod, management, room = await encrypted_world(synapse, tmp_path, encrypted_person)
    try:
        bot_id = w.bot_account.user_id
        spammer = await encrypted_person(w, "espammer")
        reporter = await encrypted_person(w, "ereporter")
        for person in (spammer, reporter):
            await mod.invite(room, person.user_id)
            await person.join(room)
        await w.start_bot()
        bad = await spammer.say(room, "secret insult only members can read")
        await reporter.settle()
        reply = await reporter.client.room_send(
            room,
            "m.room.message",
            {"msgtype": "m.text", "body": "!report insulting", "m.relates_to": {"m.in_reply_to": {"event_id": bad}}},
            ignore_unverified_devices=True,
        )
        assert isinstance(reply, RoomSendResponse), reply
        await w.mod.wait_for(room, is_redaction_of(str(reply.event_id)), timeout=20)
        root = await mod.wait_for_text(
            management, lambda e: e.sender == bot_id and "Report — case #" in e.body, timeout=30
        )
        assert root.decrypted
        assert "secret insult only members can read" in root.body
        assert spammer.user_id in root.body
    finally:
        await w.close()
