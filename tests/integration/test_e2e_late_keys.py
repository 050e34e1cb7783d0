"""Withheld / late room keys: double handling, floods, key request spam."""

from __future__ import annotations

import time
from pathlib import Path

import abusebot.bot
from abusebot.matrix import API
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import is_redaction_of
from tests.integration.conftest import MakePerson
from tests.integration.e2e_helpers import (
    encrypt,
    eventually,
    forged,
    raw_of,
    send_encrypted,
    waiting,
    withheld_session,
)
from tests.integration.test_encryption import SPAM, encrypted_world

FLOOD = {"protections": {"flood": {"max_messages": 3, "per_seconds": 60, "cross_room_max_messages": 50}}}


async def test_two_messages_whose_key_comes_late_are_not_a_flood_of_four(
    synapse: SynapseServer, tmp_path: Path, encrypted_person: MakePerson
) -> None:
    """An honest user sends 2 messages (limit 3/60s) whose room key reaches the bot late (a
    common case: the to-device message comes in a later sync). Each is dispatched once as
    m.room.encrypted and again as cleartext: 4 counts, a 'flood'."""
    w, mod, _, room = await encrypted_world(synapse, tmp_path, encrypted_person, FLOOD)
    try:
        user = await encrypted_person(w, "honest")
        await mod.invite(room, user.user_id)
        await user.join(room)
        bot = await w.start_bot()
        bot_id = w.bot_account.user_id
        raw = raw_of(w.synapse.url, user)
        shares = await withheld_session(user, room, [bot_id])
        assert shares, "no share for the bot's device"
        for n in range(2):
            await send_encrypted(
                raw, room, encrypt(user, room, "m.room.message", {"msgtype": "m.text", "body": f"hi {n}"})
            )
        await eventually(lambda: bot.crypto.undecryptable >= 2, 20, "two undecryptable")
        for body in shares:
            await raw.call("PUT", f"{API}/sendToDevice/m.room.encrypted/late{time.time_ns()}", body)
        await eventually(lambda: bot.crypto.decrypted >= 2 and waiting(w) == 0, 20, "late decrypt")
        await w.mod.poll(2000)
        history = await bot.ledger.history(user.user_id)
        redacted = [e for e in w.mod.seen.get(room, []) if e.get("type") == "m.room.redaction"]
        await raw.close()
        assert history == [], f"an honest user with 2 messages was punished: {history}"
        assert redacted == []
    finally:
        await w.close()


async def test_undecryptable_flood_is_counted(
    synapse: SynapseServer, tmp_path: Path, encrypted_person: MakePerson
) -> None:
    w, mod, _, room = await encrypted_world(synapse, tmp_path, encrypted_person, FLOOD)
    try:
        spammer = w.person("fl")
        await mod.invite(room, spammer.user_id)
        await spammer.join(room)
        bot = await w.start_bot()
        ids = []
        for n in range(5):
            ids.append(
                await send_encrypted(
                    spammer,
                    room,
                    forged(f"f{n}"),
                )
            )
        await w.mod.wait_for(room, is_redaction_of(ids[-1]), timeout=20)
        history = await bot.ledger.history(spammer.user_id)
        assert history
    finally:
        await w.close()


async def test_forged_sessions_are_bounded_and_key_requests_do_not_stall_moderation(
    synapse: SynapseServer, tmp_path: Path, encrypted_person: MakePerson, monkeypatch
) -> None:
    """A plain member posts many m.room.encrypted events, each naming a new session. The bot
    keeps at most MAX_WAITING, and sends a key request per session (to the spammer); these go
    one by one inside the sync loop, before the batch's events are handled."""
    monkeypatch.setattr(abusebot.bot, "MAX_WAITING", 50)
    config = {"protections": {"flood": {"enabled": False}, "spam": SPAM["protections"]["spam"]}}
    w, mod, _, room = await encrypted_world(synapse, tmp_path, encrypted_person, config)
    try:
        spammer = w.person("fs")
        await mod.invite(room, spammer.user_id)
        await spammer.join(room)
        bot = await w.start_bot()
        requests: list[str] = []
        real_write = bot.api.write

        async def counting(method, path, body, *a, **k):
            if "m.room_key_request" in path:
                requests.append(path)
            return await real_write(method, path, body, *a, **k)

        bot.api.write = counting
        n = 250
        for i in range(n):
            await send_encrypted(
                spammer,
                room,
                forged(f"forged-{i}-" + "S" * 200),
            )
        await eventually(lambda: bot.crypto.undecryptable >= n, 60, "all seen")
        started = time.monotonic()
        spam = await spammer.say(room, "buy cheap pills here")
        await w.mod.wait_for(room, is_redaction_of(spam), timeout=60)
        latency = time.monotonic() - started
        print(
            f"key requests sent: {len(requests)}, waiting={waiting(w)}, requested set={len(bot.crypto._requested)},"
            f" redaction latency {latency:.2f}s"
        )
        assert waiting(w) <= 50
        assert len(bot.crypto._requested) == 0, "over-long session ids are neither kept nor asked for"
        assert len(requests) <= 20, f"{len(requests)} key requests for one spammer's forged sessions"
        assert latency < 5
    finally:
        await w.close()


async def test_a_burst_of_forged_sessions_delays_the_redaction_of_spam_sent_right_after(
    synapse: SynapseServer, tmp_path: Path, encrypted_person: MakePerson
) -> None:
    """300 forged m.room.encrypted events, each a new session, posted in a burst, then spam.
    The key requests for the burst are sent serially inside handle_sync (Crypto.maintain) before
    the next batch (with the spam) is dispatched."""
    import asyncio

    config = {"protections": {"flood": {"enabled": False}, "spam": SPAM["protections"]["spam"]}}
    w, mod, _, room = await encrypted_world(synapse, tmp_path, encrypted_person, config)
    try:
        spammer = w.person("fb")
        await mod.invite(room, spammer.user_id)
        await spammer.join(room)
        bot = await w.start_bot()
        # baseline
        t0 = time.monotonic()
        first = await spammer.say(room, "buy cheap pills here")
        await w.mod.wait_for(room, is_redaction_of(first), timeout=60)
        baseline = time.monotonic() - t0

        async def forge(i: int) -> None:
            await send_encrypted(
                spammer,
                room,
                forged(f"burst-{i}"),
            )

        for chunk in range(0, 300, 50):
            await asyncio.gather(*(forge(i) for i in range(chunk, chunk + 50)))
        await eventually(lambda: bot.crypto.undecryptable >= 1, 30, "burst seen")
        t1 = time.monotonic()
        spam = await spammer.say(room, "buy cheap pills here again")
        await w.mod.wait_for(room, is_redaction_of(spam), timeout=120)
        latency = time.monotonic() - t1
        print(
            f"baseline {baseline:.2f}s, after burst {latency:.2f}s, requested {len(bot.crypto._requested)},"
            f" rate_limited={bot.api.queue.rate_limited_count}"
        )
        assert latency < max(3.0, 5 * baseline), (
            f"redaction took {latency:.1f}s after the burst (baseline {baseline:.2f}s)"
        )
    finally:
        await w.close()


async def test_a_sender_whose_keys_never_reach_the_bot_is_reported_to_the_moderators(
    synapse: SynapseServer, tmp_path: Path, encrypted_person: MakePerson
) -> None:
    """The spammer's client shares the room key with every member's devices except the bot's:
    the humans read the spam, the bot cannot. After three such messages the management room is
    told, once, naming the sender and the room."""
    w, mod, management, room = await encrypted_world(synapse, tmp_path, encrypted_person, SPAM)
    try:
        spammer = await encrypted_person(w, "withhold")
        await mod.invite(room, spammer.user_id)
        await spammer.join(room)
        bot = await w.start_bot()
        await mod.settle()
        raw = raw_of(w.synapse.url, spammer)
        shares = await withheld_session(spammer, room, [mod.user_id])  # not the bot
        for body in shares:
            await raw.call("PUT", f"{API}/sendToDevice/m.room.encrypted/wh{time.time_ns()}", body)
        for n in range(4):
            content = {"msgtype": "m.text", "body": f"buy cheap pills here {n}"}
            await send_encrypted(raw, room, encrypt(spammer, room, "m.room.message", content))
        seen = await mod.wait_for_text(room, lambda e: "cheap pills" in e.body, 20)
        assert seen.decrypted  # the humans read it
        alert = await mod.wait_for_text(
            management, lambda e: "cannot read" in e.body and spammer.user_id in e.body, timeout=20
        )
        assert "Encrypted lobby" in alert.body
        await eventually(lambda: bot.crypto.undecryptable >= 4, 20, "bot saw them")
        alerts = [e for e in mod.seen.get(management, []) if "cannot read" in getattr(e, "body", "")]
        assert len(alerts) == 1
        await raw.close()
    finally:
        await w.close()


async def test_spam_waiting_for_its_key_across_a_restart_is_still_handled(
    synapse: SynapseServer, tmp_path: Path, encrypted_person: MakePerson
) -> None:
    """Spam waiting for its key when the bot restarts is kept in the ledger: its key arriving
    after the restart brings it back, and it is redacted."""
    w, mod, _, room = await encrypted_world(synapse, tmp_path, encrypted_person, SPAM)
    try:
        spammer = await encrypted_person(w, "late")
        await mod.invite(room, spammer.user_id)
        await spammer.join(room)
        await w.start_bot()
        raw = raw_of(w.synapse.url, spammer)
        shares = await withheld_session(spammer, room, [w.bot_account.user_id])
        spam = await send_encrypted(
            raw, room, encrypt(spammer, room, "m.room.message", {"msgtype": "m.text", "body": "buy cheap pills here"})
        )
        await eventually(lambda: waiting(w) >= 1, 20, "waiting")
        await w.stop_bot()
        await w.start_bot()
        for body in shares:
            await raw.call("PUT", f"{API}/sendToDevice/m.room.encrypted/rs{time.time_ns()}", body)
        await raw.close()
        await w.mod.wait_for(room, is_redaction_of(spam), timeout=15)
    finally:
        await w.close()
