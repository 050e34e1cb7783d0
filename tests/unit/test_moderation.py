"""Moderation over the outbox: record the infraction with its intents first, carry them out, settle it;
resume what a crash left pending; never act twice for one request; never act on the bot or its staff.

A real :class:`Moderation` over a real ledger (an SQLite file in ``tmp_path``) and the
:class:`FakeHomeserver`; the room store is given the same state the fake holds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from abusebot.actions import Actor, Moderation, Outcome, Scope
from abusebot.config import Config
from abusebot.ledger import Infraction, Ledger, NewIntent, now_ms
from abusebot.matrix import MatrixError
from abusebot.outbox import intent
from abusebot.rooms import RoomStore
from abusebot.testing.fakes import FakeHomeserver

BOT = "@abusebot:example.org"
MOD = "@mod:example.org"
ADMIN = "@admin:example.org"
ALICE = "@alice:example.org"
MANAGEMENT = "!management:example.org"
LOBBY = "!lobby:example.org"
FORUM = "!forum:example.org"
ROOMS = (LOBBY, FORUM)
POWER = "m.room.power_levels"
HOUR = 3600


class Crash(BaseException):
    """The process dies here: nothing after it runs (not even an ``except Exception``)."""


def seed(hs: FakeHomeserver) -> RoomStore:
    """The management room (MOD a moderator) and two protected rooms on the fake, and a store that holds
    the same state. In LOBBY ALICE has level 10 and ADMIN the bot's own 100; in FORUM ALICE has no entry."""
    rooms: dict[str, tuple[dict[str, int], tuple[str, ...]]] = {
        MANAGEMENT: ({BOT: 100, MOD: 50}, (BOT, MOD)),
        LOBBY: ({BOT: 100, ADMIN: 100, ALICE: 10}, (BOT, ADMIN, ALICE, MOD)),
        FORUM: ({BOT: 100}, (BOT, ALICE)),
    }
    store = RoomStore()
    store.management_id = MANAGEMENT
    for room_id, (users, members) in rooms.items():
        hs.put(room_id, "m.room.create", {"room_version": "10"})
        hs.put(room_id, POWER, {"users": users, "events_default": 0, "users_default": 0, "ban": 50})
        for user in members:
            hs.put(room_id, "m.room.member", {"membership": "join"}, user)
        store.room(room_id).apply_all(hs.state_events(room_id))
    for room_id in ROOMS:
        store.protect(room_id)
    return store


def make_moderation(ledger: Ledger, hs: FakeHomeserver, store: RoomStore) -> Moderation:
    """A real Moderation (with its own new Outbox) over the ledger, the fake and the store."""
    config = Config(
        homeserver="http://127.0.0.1:8008",
        user_id=BOT,
        data_dir=Path("unused"),
        management_room=MANAGEMENT,
        protected_rooms=ROOMS,
        password="unused",
    )
    return Moderation(config=config, ledger=ledger, api=hs, store=store, bot_user_id=BOT)


def command(event_id: str = "$cmd1", room_id: str = MANAGEMENT) -> Actor:
    """A moderator's command from ``room_id`` (the management room's reply is the audit line)."""
    return Actor(MOD, "command", event_id, room_id=room_id, reply_is_audit=room_id == MANAGEMENT)


def messages(hs: FakeHomeserver, room_id: str) -> list[dict[str, Any]]:
    """Contents of the messages the bot sent to ``room_id``, in order."""
    return [content for room, content in hs.sent if room == room_id]


def bodies(hs: FakeHomeserver, room_id: str) -> list[str]:
    """The plain bodies of the messages the bot sent to ``room_id``."""
    return [str(content["body"]) for content in messages(hs, room_id)]


async def dms(hs: FakeHomeserver, ledger: Ledger, user: str = ALICE) -> list[str]:
    """The bodies of the notices the bot sent ``user``."""
    room = await ledger.dm_room(user)
    return [] if room is None else bodies(hs, room)


def membership_writes(hs: FakeHomeserver, kind: str = "ban") -> list[tuple[str, Any]]:
    """(room, user) of each ``kind`` write the fake received."""
    return [(room, detail) for what, room, detail in hs.writes if what == kind]


@pytest.fixture
def hs() -> FakeHomeserver:
    """The fake homeserver (seeded by the ``store`` fixture)."""
    return FakeHomeserver(BOT)


@pytest.fixture
def store(hs: FakeHomeserver) -> RoomStore:
    """The rooms of :func:`seed`, on the fake and in the store."""
    return seed(hs)


@pytest.fixture
def moderation(ledger: Ledger, hs: FakeHomeserver, store: RoomStore) -> Moderation:
    """A real Moderation over the ledger and the fake."""
    return make_moderation(ledger, hs, store)


async def only_infraction(ledger: Ledger, subject: str = ALICE) -> Infraction:
    """The one infraction ``subject`` has."""
    [inf] = await ledger.history(subject)
    return inf


class TestBan:
    async def test_ban_is_recorded_pending_with_its_intents_in_one_transaction_before_acting(
        self, moderation: Moderation, ledger: Ledger, hs: FakeHomeserver, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """At the first ban write, one transaction has recorded the pending infraction with its bans and notice."""
        transactions = 0
        real = ledger.transaction

        @contextlib.asynccontextmanager
        async def counted() -> AsyncIterator[Any]:
            nonlocal transactions
            transactions += 1
            async with real() as db:
                yield db

        monkeypatch.setattr(ledger, "transaction", counted)
        seen: list[tuple[int, str, list[tuple[str, str]], str]] = []
        calls: list[str] = []

        async def before(what: str, room_id: str) -> None:
            calls.append(what)
            if calls == ["ban"]:  # the first write of all
                at = transactions
                inf = await only_infraction(ledger)
                rows = await ledger.intents_for(inf.id)
                this = next(r for r in rows if r.kind == "ban" and r.room_id == room_id)
                seen.append((at, inf.state, [(r.kind, r.room_id) for r in rows], this.state))

        hs.before_write = before
        outcome = await moderation.ban(ALICE, "spam", command(), Scope.everywhere(moderation.store), duration_s=HOUR)
        assert outcome.ok
        assert seen == [(1, "pending", [("ban", LOBBY), ("ban", FORUM), ("dm", "")], "pending")]

    async def test_temporary_ban_ends_active_with_its_lift_job(
        self, moderation: Moderation, ledger: Ledger, hs: FakeHomeserver
    ) -> None:
        """A temporary ban bans in every room, tells the user, ends ``active`` and has its lift scheduled."""
        outcome = await moderation.ban(ALICE, "spam", command(), Scope.everywhere(moderation.store), duration_s=HOUR)
        inf = await only_infraction(ledger)
        job = await ledger.pending_job("lift", str(inf.id))
        assert outcome.ok
        assert outcome.infraction is not None
        assert outcome.infraction.id == inf.id
        assert inf.state == "active"
        assert job is not None
        assert job.due_at == inf.expires_at
        assert job.infraction_id == inf.id
        assert [hs.membership(room, ALICE) for room in ROOMS] == ["ban", "ban"]
        assert {r.state for r in await ledger.intents_for(inf.id)} == {"done"}
        [notice] = await dms(hs, ledger)
        assert "You have been banned" in notice
        assert f"#{inf.id}" in notice
        assert moderation.wake_scheduler.is_set()

    async def test_permanent_ban_has_no_lift_job(self, moderation: Moderation, ledger: Ledger) -> None:
        """A ban without a duration is active with nothing scheduled to lift it."""
        await moderation.ban(ALICE, "spam", command(), Scope.everywhere(moderation.store))
        inf = await only_infraction(ledger)
        assert (inf.state, inf.expires_at) == ("active", None)
        assert await ledger.pending_job("lift", str(inf.id)) is None

    async def test_protection_ban_posts_its_line_to_the_management_room(
        self, moderation: Moderation, ledger: Ledger, hs: FakeHomeserver
    ) -> None:
        """A protection's ban posts one line in the management room naming the infraction."""
        actor = Actor("spam-protection", "protection", "$spam1", room_id=LOBBY)
        await moderation.ban(ALICE, "spam", actor, Scope.everywhere(moderation.store))
        inf = await only_infraction(ledger)
        [line] = bodies(hs, MANAGEMENT)
        assert line.startswith(f"Banned {ALICE}")
        assert f"infraction #{inf.id}" in line
        assert messages(hs, LOBBY) == []

    async def test_ban_failing_in_every_room_ends_failed_and_sends_no_dm(
        self, moderation: Moderation, ledger: Ledger, hs: FakeHomeserver
    ) -> None:
        """A ban refused in every room ends failed: no lift job, no DM room, its notice failed, a FAILED line."""
        hs.fail["ban"] = MatrixError(403, {"errcode": "M_FORBIDDEN", "error": "no"})
        actor = Actor("spam-protection", "protection", "$spam1", room_id=LOBBY)
        outcome = await moderation.ban(ALICE, "spam", actor, Scope.everywhere(moderation.store), duration_s=HOUR)
        inf = await only_infraction(ledger)
        rows = {r.kind + ":" + r.room_id: (r.state, r.error) for r in await ledger.intents_for(inf.id)}
        assert not outcome.ok
        assert inf.state == "failed"
        assert await ledger.pending_job("lift", str(inf.id)) is None
        assert rows["dm:"] == ("failed", "not sent: the sanction did not take")
        assert await ledger.dm_room(ALICE) is None
        assert membership_writes(hs, "create_room") == []
        [line] = bodies(hs, MANAGEMENT)
        assert line.startswith(f"FAILED to ban {ALICE}")

    async def test_ban_failing_in_one_room_is_active_and_names_the_room(
        self, moderation: Moderation, ledger: Ledger, hs: FakeHomeserver
    ) -> None:
        """A ban that takes in one room of two is ``active``; its line names the room where it failed."""

        async def refuse_forum(what: str, room_id: str) -> None:
            if what == "ban" and room_id == FORUM:
                raise MatrixError(403, {"errcode": "M_FORBIDDEN", "error": "no"})

        hs.before_write = refuse_forum
        outcome = await moderation.ban(ALICE, "spam", command(), Scope.everywhere(moderation.store))
        assert outcome.ok
        assert (await only_infraction(ledger)).state == "active"
        assert f"failed in: {FORUM}" in outcome.summary
        assert [hs.membership(room, ALICE) for room in ROOMS] == ["ban", "join"]

    async def test_ban_tells_a_user_with_a_dm_room_first(
        self, moderation: Moderation, ledger: Ledger, hs: FakeHomeserver
    ) -> None:
        """With a DM room already there, the notice is sent before the bans."""
        room = await hs.create_room({"invite": [ALICE], "name": "Moderation notices"})
        await ledger.set_dm_room(ALICE, room)
        order: list[tuple[str, str]] = []

        async def note(what: str, room_id: str) -> None:
            order.append((what, room_id))

        hs.before_write = note
        await moderation.ban(ALICE, "spam", command(), Scope.everywhere(moderation.store))
        assert order[0] == ("send", room)
        assert set(order[1:3]) == {("ban", LOBBY), ("ban", FORUM)}

    async def test_same_request_twice_records_one_infraction_and_acts_once(
        self, moderation: Moderation, ledger: Ledger, hs: FakeHomeserver
    ) -> None:
        """The same (source event, kind, subject) again: one infraction, one ban per room, one notice."""
        scope = Scope.everywhere(moderation.store)
        first = await moderation.ban(ALICE, "spam", command("$cmd1"), scope)
        second = await moderation.ban(ALICE, "spam", command("$cmd1"), scope)
        inf = await only_infraction(ledger)
        assert first.ok
        assert second.ok
        assert second.summary.startswith(f"Already handled: infraction #{inf.id}")
        assert membership_writes(hs) == [(LOBBY, ALICE), (FORUM, ALICE)]
        assert len(await dms(hs, ledger)) == 1

    async def test_same_request_twice_at_once_acts_once(
        self, moderation: Moderation, ledger: Ledger, hs: FakeHomeserver
    ) -> None:
        """A replay racing its original (both in flight together) also records one infraction and acts once."""
        scope = Scope.everywhere(moderation.store)
        actor = Actor("spam-protection", "protection", "$spam1", room_id=LOBBY)
        outcomes = await asyncio.gather(*(moderation.ban(ALICE, "spam", actor, scope) for _ in range(3)))
        assert all(o.ok for o in outcomes)
        assert len(await ledger.history(ALICE)) == 1
        assert membership_writes(hs) == [(LOBBY, ALICE), (FORUM, ALICE)]
        assert len(bodies(hs, MANAGEMENT)) == 1
        assert len(await dms(hs, ledger)) == 1

    async def test_different_requests_record_different_infractions(
        self, moderation: Moderation, ledger: Ledger
    ) -> None:
        """Two commands (two source events) are two infractions; the second supersedes the first."""
        scope = Scope.everywhere(moderation.store)
        await moderation.ban(ALICE, "spam", command("$cmd1"), scope)
        await moderation.ban(ALICE, "more spam", command("$cmd2"), scope)
        assert [inf.state for inf in await ledger.history(ALICE)] == ["active", "lifted"]


class TestRefusals:
    @pytest.mark.parametrize("subject", [BOT, MOD, ADMIN])
    async def test_command_refused_never_writes(
        self, moderation: Moderation, ledger: Ledger, hs: FakeHomeserver, subject: str
    ) -> None:
        """Banning, muting or kicking the bot, a moderator or one at the bot's level writes and sends nothing."""
        scope = Scope.everywhere(moderation.store)
        outcomes: list[Outcome] = [
            await moderation.ban(subject, "x", command("$1"), scope),
            await moderation.mute(subject, "x", command("$2"), scope, duration_s=None),
            await moderation.kick(subject, "x", command("$3"), scope),
        ]
        assert [o.refused for o in outcomes] == [True, True, True]
        assert (hs.writes, hs.sent) == ([], [])
        assert await ledger.history(subject) == []
        assert [row["outcome"] for row in await ledger.audit_rows()] == ["refused"] * 3

    async def test_protection_refused_tells_the_moderators_and_bans_nothing(
        self, moderation: Moderation, hs: FakeHomeserver
    ) -> None:
        """A protection asking to ban a moderator is refused: no ban, one notice to the management room."""
        actor = Actor("spam-protection", "protection", "$spam1", room_id=LOBBY)
        outcome = await moderation.ban(MOD, "spam", actor, Scope.everywhere(moderation.store))
        assert outcome.refused
        assert hs.writes == []
        [line] = bodies(hs, MANAGEMENT)
        assert "I refused" in line
        assert MOD in line


class TestResume:
    def intents(self, subject: str = ALICE, rooms: Sequence[str] = ROOMS) -> Callable[[int], Sequence[NewIntent]]:
        """The intents a ban in ``rooms`` records, as Moderation.ban builds them."""

        def build(infraction_id: int) -> list[NewIntent]:
            rows = [
                intent("ban", room, key=f"ban:{infraction_id}:{room}", user=subject, reason="spam") for room in rooms
            ]
            notice = {"msgtype": "m.notice", "body": f"You have been banned (#{infraction_id})"}
            return [*rows, intent("dm", "", key=f"dm:{infraction_id}", user=subject, content=notice)]

        return build

    async def record(self, ledger: Ledger, source_room: str = MANAGEMENT) -> Infraction:
        """A temporary ban by a command, recorded with its intents and left (the crash came right after):
        a moderator's everywhere from the management room, a room admin's in their room (LOBBY)."""
        admin = source_room == LOBBY
        rec = await ledger.record_infraction(
            subject=ALICE,
            kind="ban",
            scope=LOBBY if admin else "*",
            reason="spam",
            actor=ADMIN if admin else MOD,
            origin="command",
            expires_at=now_ms() + HOUR * 1000,
            source_event="$cmd1",
            source_room=source_room,
            intents=self.intents(rooms=(LOBBY,) if admin else ROOMS),
            claim=("$cmd1", "ban"),
        )
        assert rec.infraction.state == "pending"
        return rec.infraction

    async def test_resume_settles_a_pending_infraction(
        self, ledger: Ledger, hs: FakeHomeserver, store: RoomStore
    ) -> None:
        """A pending ban left by a crash is carried out at start: active, lift scheduled, line posted, user told."""
        inf = await self.record(ledger)
        assert await make_moderation(ledger, hs, store).resume() == 1
        settled = await ledger.get_infraction(inf.id)
        assert settled is not None
        assert settled.state == "active"
        assert await ledger.pending_job("lift", str(inf.id)) is not None
        assert [hs.membership(room, ALICE) for room in ROOMS] == ["ban", "ban"]
        [line] = bodies(hs, MANAGEMENT)
        assert line.startswith(f"✅ Banned {ALICE}")  # the reply to the command, which is its line
        assert f"#{inf.id}" in line
        assert len(await dms(hs, ledger)) == 1
        assert await ledger.outbox_depth() == 0

    async def test_resumed_command_answers_in_its_room_once(
        self, ledger: Ledger, hs: FakeHomeserver, store: RoomStore
    ) -> None:
        """A resumed command is answered once in its room (reply:<event>, m.in_reply_to), even if resumed twice."""
        await self.record(ledger, source_room=LOBBY)
        await make_moderation(ledger, hs, store).resume()
        assert await make_moderation(ledger, hs, store).resume() == 0
        [reply] = messages(hs, LOBBY)
        [row] = await ledger.intents_by_key(["reply:$cmd1"])
        assert reply["m.relates_to"] == {"m.in_reply_to": {"event_id": "$cmd1"}}
        assert reply["body"].startswith("✅ Banned")
        assert (row.room_id, row.state) == (LOBBY, "done")
        assert len(bodies(hs, MANAGEMENT)) == 1
        assert await ledger.is_processed("$cmd1", "command")

    async def test_resumed_management_command_reply_is_its_only_line(
        self, ledger: Ledger, hs: FakeHomeserver, store: RoomStore
    ) -> None:
        """A resumed command from the management room posts one message there: the reply, which is the line."""
        await self.record(ledger, source_room=MANAGEMENT)
        await make_moderation(ledger, hs, store).resume()
        [reply] = messages(hs, MANAGEMENT)
        assert reply["m.relates_to"] == {"m.in_reply_to": {"event_id": "$cmd1"}}

    async def test_reply_cut_short_by_a_second_crash_is_sent_once(
        self, ledger: Ledger, hs: FakeHomeserver, store: RoomStore
    ) -> None:
        """A crash right after the resumed reply was sent: the next resume resends it deduplicated, one reply."""
        await self.record(ledger, source_room=LOBBY)

        async def die(what: str, room_id: str) -> None:
            if what == "send" and room_id == LOBBY:
                raise Crash

        hs.after_write = die
        with pytest.raises(Crash):
            await make_moderation(ledger, hs, store).resume()
        hs.after_write = None
        await make_moderation(ledger, hs, store).resume()
        assert len(messages(hs, LOBBY)) == 1
        assert len(bodies(hs, MANAGEMENT)) == 1
        assert await ledger.outbox_depth() == 0

    async def test_crash_mid_ban_is_settled_by_resume(
        self, moderation: Moderation, ledger: Ledger, hs: FakeHomeserver, store: RoomStore
    ) -> None:
        """A crash after the first room's ban: resume bans in the other, settles it, posts line and notice once."""

        async def die(what: str, room_id: str) -> None:
            if what == "ban" and room_id == LOBBY:
                raise Crash

        hs.after_write = die
        actor = Actor("spam-protection", "protection", "$spam1", room_id=LOBBY)
        with pytest.raises(Crash):
            await moderation.ban(ALICE, "spam", actor, Scope.everywhere(store), duration_s=HOUR)
        inf = await only_infraction(ledger)
        assert inf.state == "pending"
        hs.after_write = None

        assert await make_moderation(ledger, hs, store).resume() == 1
        inf = await only_infraction(ledger)
        assert inf.state == "active"
        assert await ledger.pending_job("lift", str(inf.id)) is not None
        assert [hs.membership(room, ALICE) for room in ROOMS] == ["ban", "ban"]
        assert len(bodies(hs, MANAGEMENT)) == 1
        assert len(await dms(hs, ledger)) == 1

    async def test_resumed_mute_restores_the_original_level(
        self, moderation: Moderation, ledger: Ledger, hs: FakeHomeserver, store: RoomStore
    ) -> None:
        """A crash after the mute's write: the resumed infraction remembers 10, not -1, and the unmute restores 10."""

        async def die(what: str, room_id: str) -> None:
            if what == "state":
                raise Crash

        hs.after_write = die
        with pytest.raises(Crash):
            await moderation.mute(ALICE, "flood", command(), Scope.room(LOBBY), duration_s=None)
        assert hs.users(LOBBY)[ALICE] == -1
        hs.after_write = None
        after = make_moderation(ledger, hs, store)
        await after.resume()
        inf = await only_infraction(ledger)
        assert (inf.state, inf.undo["rooms"][LOBBY]) == ("active", {"previous": 10, "muted_level": -1})
        assert (await after.unmute(ALICE, "ok", command("$cmd2"), Scope.room(LOBBY))).ok
        assert hs.users(LOBBY)[ALICE] == 10


class TestMute:
    async def test_mute_then_unmute_restores_the_previous_levels(
        self, moderation: Moderation, ledger: Ledger, hs: FakeHomeserver
    ) -> None:
        """Mute then unmute puts back each room's level (10 in LOBBY, no entry in FORUM) and lifts the infraction."""
        scope = Scope.everywhere(moderation.store)
        assert (await moderation.mute(ALICE, "flood", command(), scope, duration_s=HOUR)).ok
        assert [hs.users(room).get(ALICE) for room in ROOMS] == [-1, -1]
        inf = await only_infraction(ledger)
        assert inf.undo == {
            "rooms": {LOBBY: {"previous": 10, "muted_level": -1}, FORUM: {"previous": None, "muted_level": -1}}
        }
        assert await ledger.pending_job("lift", str(inf.id)) is not None

        assert (await moderation.unmute(ALICE, "calm now", command("$cmd2"), scope)).ok
        assert hs.users(LOBBY)[ALICE] == 10
        assert ALICE not in hs.users(FORUM)
        assert (await only_infraction(ledger)).state == "lifted"
        assert await ledger.pending_job("lift", str(inf.id)) is None

    async def test_second_mute_carries_the_level_from_before_the_first(
        self, moderation: Moderation, ledger: Ledger, hs: FakeHomeserver
    ) -> None:
        """Muting someone already muted keeps the level from before the first mute, so the unmute restores 10."""
        scope = Scope.room(LOBBY)
        await moderation.mute(ALICE, "flood", command("$cmd1"), scope, duration_s=HOUR)
        await moderation.mute(ALICE, "flood again", command("$cmd2"), scope, duration_s=2 * HOUR)
        newest, first = await ledger.history(ALICE)
        assert (newest.state, first.state) == ("active", "lifted")
        assert newest.undo["rooms"][LOBBY]["previous"] == 10
        await moderation.unmute(ALICE, "ok", command("$cmd3"), scope)
        assert hs.users(LOBBY)[ALICE] == 10

    async def test_unmute_leaves_a_level_changed_since_alone(
        self, moderation: Moderation, ledger: Ledger, hs: FakeHomeserver
    ) -> None:
        """When a room admin set ALICE's level by hand after the mute, the unmute does not overwrite it."""
        scope = Scope.room(LOBBY)
        await moderation.mute(ALICE, "flood", command(), scope, duration_s=None)
        hs.put(LOBBY, POWER, {**hs.state[LOBBY][(POWER, "")]["content"], "users": {BOT: 100, ALICE: 30}})
        await moderation.unmute(ALICE, "ok", command("$cmd2"), scope)
        assert hs.users(LOBBY)[ALICE] == 30


class TestExpire:
    async def test_expire_lifts_a_temporary_ban_and_posts_once(
        self, moderation: Moderation, ledger: Ledger, hs: FakeHomeserver
    ) -> None:
        """Expiry unbans everywhere, marks the ban expired, and posts its line and notice once even when run twice."""
        await moderation.ban(ALICE, "spam", command(), Scope.everywhere(moderation.store), duration_s=HOUR)
        inf = await only_infraction(ledger)
        assert await moderation.expire(inf)
        assert await moderation.expire(inf)
        assert [hs.membership(room, ALICE) for room in ROOMS] == ["leave", "leave"]
        assert membership_writes(hs, "unban") == [(LOBBY, ALICE), (FORUM, ALICE)]
        assert (await only_infraction(ledger)).state == "expired"
        lines = [line for line in bodies(hs, MANAGEMENT) if line.startswith("Unbanned")]
        assert len(lines) == 1
        assert f"#{inf.id} expired" in lines[0]
        assert [text for text in await dms(hs, ledger) if "has been lifted" in text] != []
        assert len(await dms(hs, ledger)) == 2  # the ban's notice and the lift's

    async def test_expire_lifts_a_temporary_mute(
        self, moderation: Moderation, ledger: Ledger, hs: FakeHomeserver
    ) -> None:
        """An expired mute restores the level ALICE had."""
        await moderation.mute(ALICE, "flood", command(), Scope.room(LOBBY), duration_s=HOUR)
        assert await moderation.expire(await only_infraction(ledger))
        assert hs.users(LOBBY)[ALICE] == 10
        assert (await only_infraction(ledger)).state == "expired"

    async def test_expire_that_cannot_unban_is_not_done(
        self, moderation: Moderation, ledger: Ledger, hs: FakeHomeserver
    ) -> None:
        """When the unban fails, expire says so (for a retry) and the infraction stays active, unposted."""
        await moderation.ban(ALICE, "spam", command(), Scope.everywhere(moderation.store), duration_s=HOUR)
        hs.fail["unban"] = MatrixError(500, {"error": "down"})
        assert not await moderation.expire(await only_infraction(ledger))
        assert (await only_infraction(ledger)).state == "active"
        assert [line for line in bodies(hs, MANAGEMENT) if line.startswith("Unbanned")] == []


class TestResumeChecksAgain:
    """What a crash left half done is checked again at the restart (the authority of the commander,
    the safety of the subject); a record from before the outbox is carried out, not assumed done."""

    async def pending_ban(self, ledger: Ledger, subject: str = ALICE) -> Infraction:
        rec = await ledger.record_infraction(
            subject=subject,
            kind="ban",
            scope="*",
            reason="spam",
            actor=MOD,
            origin="command",
            source_event="$cmd9",
            source_room=MANAGEMENT,
            intents=TestResume().intents(subject),
        )
        return rec.infraction

    async def test_a_moderator_demoted_while_the_bot_was_down_is_not_obeyed(
        self, ledger: Ledger, hs: FakeHomeserver, store: RoomStore
    ) -> None:
        """The moderator lost their level before the restart: the ban is not carried out, the
        infraction ends failed, and the reply says why."""
        inf = await self.pending_ban(ledger)
        store.room(MANAGEMENT).apply(
            {"type": POWER, "state_key": "", "sender": BOT, "content": {"users": {BOT: 100, MOD: 0}}}
        )
        await make_moderation(ledger, hs, store).resume()
        assert [hs.membership(room, ALICE) for room in ROOMS] == ["join", "join"]
        assert (await ledger.get_infraction(inf.id)).state == "failed"  # type: ignore[union-attr]
        [reply] = messages(hs, MANAGEMENT)
        assert "Not carried out after my restart" in reply["body"]
        assert reply["m.relates_to"] == {"m.in_reply_to": {"event_id": "$cmd9"}}
        assert await ledger.outbox_depth() == 0

    async def test_a_subject_made_a_moderator_meanwhile_is_not_banned_and_a_landed_ban_is_lifted(
        self, ledger: Ledger, hs: FakeHomeserver, store: RoomStore
    ) -> None:
        """ALICE became a moderator while the bot was down; the ban had reached one room already:
        it is lifted there, and the other room is never banned."""
        inf = await self.pending_ban(ledger)
        [first, *_] = [row for row in await ledger.intents_for(inf.id) if row.kind == "ban"]
        hs.put(first.room_id, "m.room.member", {"membership": "ban"}, ALICE)
        await ledger.finish_intent(first.id, "done")
        store.room(MANAGEMENT).apply(
            {"type": POWER, "state_key": "", "sender": BOT, "content": {"users": {BOT: 100, MOD: 50, ALICE: 50}}}
        )
        store.room(MANAGEMENT).apply(
            {"type": "m.room.member", "state_key": ALICE, "sender": ALICE, "content": {"membership": "join"}}
        )
        await make_moderation(ledger, hs, store).resume()
        assert [hs.membership(room, ALICE) for room in ROOMS] == ["leave", "join"]
        assert (await ledger.get_infraction(inf.id)).state == "failed"  # type: ignore[union-attr]

    async def test_a_pending_mute_from_before_the_outbox_is_carried_out(
        self, ledger: Ledger, hs: FakeHomeserver, store: RoomStore
    ) -> None:
        """A pending mute with no intents (an older abusebot crashed after its write): the mute is
        put in force now, with a lift that restores the room's default level, not the muted one."""
        inf = await ledger.add_infraction(
            subject=ALICE,
            kind="mute",
            scope=LOBBY,
            reason="flood",
            actor=MOD,
            origin="command",
            expires_at=now_ms() + HOUR * 1000,
        )
        await make_moderation(ledger, hs, store).resume()
        settled = await ledger.get_infraction(inf.id)
        assert settled is not None
        assert settled.state == "active"
        assert hs.users(LOBBY)[ALICE] == -1
        assert settled.undo["rooms"][LOBBY]["previous"] is None
        assert await make_moderation(ledger, hs, store).expire(settled)
        assert ALICE not in hs.users(LOBBY)


class TestRedactRunTwice:
    async def test_a_redaction_command_run_again_removes_the_same_messages(
        self, moderation: Moderation, ledger: Ledger, hs: FakeHomeserver
    ) -> None:
        """``redact ALICE 3`` run twice (a crash, the command again): the second run redacts the
        same three messages, never three older ones."""
        hs.timeline[LOBBY] = [
            {"event_id": f"$m{n}", "sender": ALICE, "type": "m.room.message", "content": {"body": f"m{n}"}}
            for n in range(10)
        ]
        actor = Actor(MOD, "command", "$redact-cmd", room_id=MANAGEMENT, reply_is_audit=True)
        first = await moderation.redact(ALICE, 3, "spam", actor, Scope.room(LOBBY))
        hs.timeline[LOBBY] = [e for e in hs.timeline[LOBBY] if e["event_id"] not in hs.redacted]
        second = await moderation.redact(ALICE, 3, "spam", actor, Scope.room(LOBBY))
        assert (first.ok, second.ok) == (True, True)
        assert sorted(hs.redacted) == ["$m7", "$m8", "$m9"]
