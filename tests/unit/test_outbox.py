"""The outbox: record an intent, do it idempotently, mark it; resume what a crash left pending.

Every test runs a real :class:`Outbox` over a real ledger (an SQLite file in ``tmp_path``) and the
:class:`FakeHomeserver`, whose every call yields to the loop as real I/O does.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from abusebot import outbox as outbox_module
from abusebot.ledger import IntentRow, Ledger, NewIntent
from abusebot.matrix import MatrixError
from abusebot.outbox import DM_ROOM_NAME, Outbox, intent, text_content
from abusebot.testing.fakes import FakeHomeserver, WriteHook

BOT = "@bot:example.org"
ALICE = "@alice:example.org"
BOB = "@bob:example.org"
ROOM = "!lobby:example.org"
OTHER = "!forum:example.org"
POWER = "m.room.power_levels"


class Crash(BaseException):
    """The process dies here: nothing after it runs (not even an ``except Exception``)."""


@pytest.fixture
def hs() -> FakeHomeserver:
    """The fake homeserver with one room whose power levels give the bot 100 and ALICE 10."""
    server = FakeHomeserver(BOT)
    server.put(ROOM, POWER, {"users": {BOT: 100, ALICE: 10}, "events_default": 0, "users_default": 0})
    server.put(ROOM, "m.room.member", {"membership": "join"}, ALICE)
    return server


@pytest.fixture
def outbox(ledger: Ledger, hs: FakeHomeserver) -> Outbox:
    """An outbox over the ledger and the fake homeserver."""
    return Outbox(ledger, hs)


async def row_of(ledger: Ledger, key: str) -> IntentRow:
    """The outbox row with ``key`` as the ledger holds it now."""
    [row] = await ledger.intents_by_key([key])
    return row


def ban(key: str = "ban:1", room: str = ROOM, user: str = ALICE) -> NewIntent:
    """The intent of banning ``user`` in ``room``."""
    return intent("ban", room, key=key, user=user, reason="spam")


def mute(key: str, user: str = ALICE, room: str = ROOM) -> NewIntent:
    """The intent of muting ``user`` in ``room``."""
    return intent("power", room, key=key, user=user, level="muted")


def dm(key: str, user: str = ALICE, text: str = "You were warned.") -> NewIntent:
    """The intent of telling ``user`` ``text`` by direct message."""
    return intent("dm", "", key=key, user=user, content=text_content(text))


def crash_after(kind: str) -> WriteHook:
    """An ``after_write`` hook that kills the process once a ``kind`` write has taken effect."""

    async def hook(what: str, room_id: str) -> None:
        if what == kind:
            raise Crash

    return hook


class TestRecordDoMark:
    async def test_intent_is_pending_while_the_homeserver_acts_and_done_after(
        self, ledger: Ledger, hs: FakeHomeserver, outbox: Outbox
    ) -> None:
        """The row is recorded ``pending`` before the write is made, stays so until it took effect, then is done."""
        seen: list[tuple[str, str]] = []

        async def before(what: str, room_id: str) -> None:
            seen.append(("before", (await row_of(ledger, "ban:1")).state))

        async def after(what: str, room_id: str) -> None:
            seen.append(("after", (await row_of(ledger, "ban:1")).state))

        hs.before_write, hs.after_write = before, after
        result = await outbox.do(ban())
        assert result.ok
        assert seen == [("before", "pending"), ("after", "pending")]
        assert (await row_of(ledger, "ban:1")).state == "done"
        assert hs.membership(ROOM, ALICE) == "ban"

    async def test_failed_write_is_marked_failed_with_its_error(
        self, ledger: Ledger, hs: FakeHomeserver, outbox: Outbox
    ) -> None:
        """A homeserver error marks the row ``failed`` with the error, and the result says so."""
        hs.fail["send"] = MatrixError(500, {"errcode": "M_UNKNOWN", "error": "boom"})
        result = await outbox.do(intent("send", ROOM, key="send:1", content=text_content("hello")))
        row = await row_of(ledger, "send:1")
        assert (result.ok, result.error) == (False, "500 M_UNKNOWN: boom")
        assert (row.state, row.error) == ("failed", "500 M_UNKNOWN: boom")
        assert (outbox.failed_count, outbox.done_count) == (1, 0)

    async def test_refused_ban_of_someone_present_is_failed(
        self, ledger: Ledger, hs: FakeHomeserver, outbox: Outbox
    ) -> None:
        """A refused ban of a user who is not banned is a failure, not taken for done."""
        hs.fail["ban"] = MatrixError(403, {"errcode": "M_FORBIDDEN", "error": "no power"})
        result = await outbox.do(ban())
        assert not result.ok
        assert (await row_of(ledger, "ban:1")).state == "failed"

    async def test_bug_in_one_intent_fails_it_alone(self, ledger: Ledger, hs: FakeHomeserver, outbox: Outbox) -> None:
        """An unexpected exception fails its own row (named in the error) and the others still run."""

        async def bug(what: str, room_id: str) -> None:
            if what == "send":
                raise RuntimeError("oops")

        hs.before_write = bug
        results = await outbox.do_all([intent("send", ROOM, key="send:1", content=text_content("x")), ban()])
        assert [(r.ok, r.error) for r in results] == [(False, "RuntimeError: oops"), (True, None)]
        assert [(await row_of(ledger, k)).state for k in ("send:1", "ban:1")] == ["failed", "done"]


class TestIdempotentKinds:
    async def test_ban_already_in_place_counts_as_done(
        self, ledger: Ledger, hs: FakeHomeserver, outbox: Outbox
    ) -> None:
        """A ban the homeserver refuses because the user is already banned is done, noted as such."""
        hs.put(ROOM, "m.room.member", {"membership": "ban"}, ALICE)
        hs.fail["ban"] = MatrixError(403, {"errcode": "M_FORBIDDEN", "error": "already banned"})
        result = await outbox.do(ban())
        assert (result.ok, dict(result.value)) == (True, {"already": "ban"})
        assert (await row_of(ledger, "ban:1")).state == "done"

    async def test_unban_of_someone_not_banned_counts_as_done(
        self, ledger: Ledger, hs: FakeHomeserver, outbox: Outbox
    ) -> None:
        """An unban of a user who is not banned (the homeserver refuses it) is done, not failed."""
        result = await outbox.do(intent("unban", ROOM, key="unban:1", user=ALICE, reason="over"))
        assert (result.ok, dict(result.value)) == (True, {"already": "join"})
        assert (await row_of(ledger, "unban:1")).state == "done"
        assert hs.writes == []

    async def test_kick_of_someone_gone_counts_as_done(self, hs: FakeHomeserver, outbox: Outbox) -> None:
        """A kick of a user who already left is done."""
        result = await outbox.do(intent("kick", ROOM, key="kick:1", user=BOB, reason="bye"))
        assert (result.ok, dict(result.value)) == (True, {"already": "none"})

    async def test_same_key_recorded_twice_executes_once(
        self, ledger: Ledger, hs: FakeHomeserver, outbox: Outbox
    ) -> None:
        """The same key again is the same intent: its recorded result, no second write."""
        first = await outbox.do(ban())
        second = await outbox.do(ban())
        assert first.ok
        assert second.ok
        assert hs.writes == [("ban", ROOM, ALICE)]
        assert outbox.done_count == 1

    async def test_same_key_recorded_concurrently_executes_once(self, hs: FakeHomeserver, outbox: Outbox) -> None:
        """Two concurrent requests with one key (a replay racing its original) write once."""
        results = await asyncio.gather(outbox.do(ban()), outbox.do(ban()), outbox.do(ban()))
        assert all(r.ok for r in results)
        assert hs.writes == [("ban", ROOM, ALICE)]

    async def test_request_whose_read_predates_the_mark_does_not_act_again(
        self, ledger: Ledger, hs: FakeHomeserver, outbox: Outbox, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A same-key request whose read (pending) returns only after the first run's mark does not write again."""
        real_read, real_finish = ledger.intents_by_key, ledger.finish_intent
        marked = asyncio.Event()
        reads = 0

        async def late_read(keys: Any) -> list[IntentRow]:
            nonlocal reads
            reads += 1
            rows = await real_read(keys)
            if reads == 2:  # the second request's read: its answer is delayed past the first run's mark
                await marked.wait()
            return rows

        async def finish(*args: Any, **kwargs: Any) -> None:
            await real_finish(*args, **kwargs)
            marked.set()

        monkeypatch.setattr(ledger, "intents_by_key", late_read)
        monkeypatch.setattr(ledger, "finish_intent", finish)
        results = await asyncio.gather(outbox.do(ban()), outbox.do(ban()))
        assert all(r.ok for r in results)
        assert hs.writes == [("ban", ROOM, ALICE)]

    async def test_failed_row_recorded_again_is_retried(
        self, ledger: Ledger, hs: FakeHomeserver, outbox: Outbox
    ) -> None:
        """A failed row re-recorded with its key is pending again and carried out (a moderator's retry)."""
        hs.fail["send"] = MatrixError(502, {"error": "bad gateway"})
        message = intent("send", ROOM, key="send:1", content=text_content("hello"))
        assert not (await outbox.do(message)).ok
        del hs.fail["send"]
        result = await outbox.do(message)
        row = await row_of(ledger, "send:1")
        assert result.ok
        assert (row.state, row.error) == ("done", None)
        assert hs.sent == [(ROOM, text_content("hello"))]

    async def test_send_is_deduplicated_by_its_key(self, ledger: Ledger, hs: FakeHomeserver) -> None:
        """A send run twice (a resume after the answer was lost) has one transaction id: one message."""
        [row] = await ledger.add_intents([intent("send", ROOM, key="send:1", content=text_content("hi"))])
        await Outbox(ledger, hs).run_one(row)
        await Outbox(ledger, hs).run_one(row)  # the same pending snapshot, as a crashed process held it
        assert hs.sent == [(ROOM, text_content("hi"))]


class TestResume:
    async def test_resume_runs_rows_a_crash_left_pending(self, ledger: Ledger, hs: FakeHomeserver) -> None:
        """Rows recorded but never run are carried out by a new outbox's resume(), and marked done."""
        await ledger.add_intents([ban(), intent("send", OTHER, key="send:1", content=text_content("hi"))])
        assert await Outbox(ledger, hs).resume() == 2
        assert hs.membership(ROOM, ALICE) == "ban"
        assert hs.sent == [(OTHER, text_content("hi"))]
        assert [(await row_of(ledger, k)).state for k in ("ban:1", "send:1")] == ["done", "done"]
        assert await ledger.outbox_depth() == 0

    async def test_resume_with_nothing_pending_does_nothing(self, ledger: Ledger, hs: FakeHomeserver) -> None:
        """A second resume finds nothing to do and writes nothing."""
        await ledger.add_intents([ban()])
        await Outbox(ledger, hs).resume()
        assert await Outbox(ledger, hs).resume() == 0
        assert hs.writes == [("ban", ROOM, ALICE)]

    async def test_crash_after_write_leaves_row_pending_for_resume(self, ledger: Ledger, hs: FakeHomeserver) -> None:
        """A crash after the ban took effect, before it was marked, leaves the row pending; resume finishes it."""
        hs.after_write = crash_after("ban")
        with pytest.raises(Crash):
            await Outbox(ledger, hs).do(ban())
        assert (await row_of(ledger, "ban:1")).state == "pending"
        hs.after_write = None
        assert await Outbox(ledger, hs).resume() == 1
        assert (await row_of(ledger, "ban:1")).state == "done"
        assert hs.membership(ROOM, ALICE) == "ban"


class TestPower:
    async def test_mute_records_previous_level_before_writing(
        self, ledger: Ledger, hs: FakeHomeserver, outbox: Outbox
    ) -> None:
        """When the power-level write is made, the row already holds the level it replaces."""
        noted: list[dict[str, Any]] = []

        async def before(what: str, room_id: str) -> None:
            noted.append(dict((await row_of(ledger, "mute:1")).result))

        hs.before_write = before
        result = await outbox.do(mute("mute:1"))
        assert noted == [{"previous": 10, "had_entry": True}]
        assert dict(result.value) == {"previous": 10, "had_entry": True, "level": -1}
        assert hs.users(ROOM)[ALICE] == -1

    async def test_resumed_mute_keeps_the_original_previous_level(self, ledger: Ledger, hs: FakeHomeserver) -> None:
        """After a crash past the mute's write the resumed row keeps previous 10 (not -1); the restore puts 10 back."""
        hs.after_write = crash_after("state")
        with pytest.raises(Crash):
            await Outbox(ledger, hs).do(mute("mute:1"))
        assert hs.users(ROOM)[ALICE] == -1
        assert (await row_of(ledger, "mute:1")).state == "pending"
        hs.after_write = None

        outbox = Outbox(ledger, hs)
        assert await outbox.resume() == 1
        row = await row_of(ledger, "mute:1")
        assert row.state == "done"
        assert row.result["previous"] == 10
        restore = intent("power", ROOM, key="unmute:1", user=ALICE, level=row.result["previous"], only_if=-1)
        assert (await outbox.do(restore)).ok
        assert hs.users(ROOM)[ALICE] == 10

    async def test_restore_of_no_previous_entry_removes_the_user(self, hs: FakeHomeserver, outbox: Outbox) -> None:
        """A user who had no entry before the mute has none after its restore (not an explicit 0)."""
        result = await outbox.do(mute("mute:1", user=BOB))
        assert dict(result.value)["previous"] is None
        await outbox.do(intent("power", ROOM, key="unmute:1", user=BOB, level=None, only_if=-1))
        assert BOB not in hs.users(ROOM)

    async def test_only_if_leaves_a_changed_level_alone(self, hs: FakeHomeserver, outbox: Outbox) -> None:
        """A restore whose user's level was changed since the mute (by someone else) writes nothing."""
        await outbox.do(mute("mute:1"))
        content = {"users": {BOT: 100, ALICE: 25}, "events_default": 0}
        hs.put(ROOM, POWER, content)  # a room admin set ALICE to 25 by hand
        writes = len(hs.writes)
        result = await outbox.do(intent("power", ROOM, key="unmute:1", user=ALICE, level=10, only_if=-1))
        assert result.ok
        assert (result.value["left_alone"], result.value["found"]) == (True, 25)
        assert hs.users(ROOM)[ALICE] == 25
        assert len(hs.writes) == writes

    async def test_muted_level_is_below_the_message_level(self, hs: FakeHomeserver, outbox: Outbox) -> None:
        """``muted`` means one below what sending a message needs (here m.room.message at 5)."""
        hs.put(ROOM, POWER, {"users": {BOT: 100}, "events_default": 10, "events": {"m.room.message": 5}})
        result = await outbox.do(mute("mute:1"))
        assert result.value["level"] == 4
        assert hs.users(ROOM)[ALICE] == 4

    async def test_mute_keeps_the_rest_of_the_power_levels(self, hs: FakeHomeserver, outbox: Outbox) -> None:
        """A mute changes one user's level and leaves every other field of the event as it was."""
        hs.put(ROOM, POWER, {"users": {BOT: 100, BOB: 50}, "ban": 40, "events": {"m.room.name": 60}})
        await outbox.do(mute("mute:1"))
        event = hs.state[ROOM][(POWER, "")]["content"]
        assert event == {"users": {BOT: 100, BOB: 50, ALICE: -1}, "ban": 40, "events": {"m.room.name": 60}}


class TestConcurrentPowerChanges:
    USERS: ClassVar[list[str]] = [f"@user{n}:example.org" for n in range(20)]

    def setup_room(self, hs: FakeHomeserver) -> dict[str, int]:
        """Ten users at their own level to mute, ten muted (at -1, from 5) to unmute; the final levels wanted."""
        users = {BOT: 100}
        users.update({user: n for n, user in enumerate(self.USERS[:10])})
        users.update(dict.fromkeys(self.USERS[10:], -1))
        hs.put(ROOM, POWER, {"users": users, "events_default": 0})
        return {BOT: 100, **dict.fromkeys(self.USERS[:10], -1), **dict.fromkeys(self.USERS[10:], 5)}

    def changes(self) -> list[NewIntent]:
        """The twenty changes, mutes and unmutes interleaved."""
        mutes = [mute(f"mute:{user}", user=user) for user in self.USERS[:10]]
        unmutes = [
            intent("power", ROOM, key=f"unmute:{user}", user=user, level=5, only_if=-1) for user in self.USERS[10:]
        ]
        return [change for pair in zip(mutes, unmutes, strict=True) for change in pair]

    async def test_twenty_concurrent_mutes_and_unmutes_all_hold(self, hs: FakeHomeserver, outbox: Outbox) -> None:
        """Twenty changes of different users in one room, run at once, all end up in the power levels."""
        wanted = self.setup_room(hs)
        results = await asyncio.gather(*(outbox.do(change) for change in self.changes()))
        assert all(r.ok for r in results)
        assert hs.users(ROOM) == wanted

    async def test_twenty_changes_in_one_batch_all_hold(self, hs: FakeHomeserver, outbox: Outbox) -> None:
        """The same twenty changes recorded in one transaction and run concurrently all hold."""
        wanted = self.setup_room(hs)
        assert all(r.ok for r in await outbox.do_all(self.changes()))
        assert hs.users(ROOM) == wanted

    async def test_without_the_lock_and_the_conflict_check_the_fake_loses_updates(
        self, hs: FakeHomeserver, outbox: Outbox, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Control: without the per-room lock, and without applying a change again when the event
        it replaced is not the one read, the fake interleaves the changes and loses some (so the
        tests above can fail)."""
        wanted = self.setup_room(hs)
        monkeypatch.setattr(outbox, "state_lock", lambda room_id, event_type: asyncio.Lock())
        monkeypatch.setattr(outbox_module, "CONFLICT_RETRIES", 1)
        await outbox.do_all(self.changes())
        assert hs.users(ROOM) != wanted

    async def test_without_the_lock_the_conflict_check_alone_keeps_every_change(
        self, hs: FakeHomeserver, outbox: Outbox, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without the lock, the writes cross; each one that replaced an event it had not read
        is applied again on top of it, and every change holds."""
        wanted = self.setup_room(hs)
        monkeypatch.setattr(outbox, "state_lock", lambda room_id, event_type: asyncio.Lock())
        await outbox.do_all(self.changes())
        assert hs.users(ROOM) == wanted

    async def test_a_moderators_change_between_read_and_write_is_kept(
        self, hs: FakeHomeserver, outbox: Outbox
    ) -> None:
        """A moderator sets a level by hand between the bot's read and its write: the bot's write
        replaced theirs, so it is applied again on top, and both changes hold."""
        self.setup_room(hs)
        moved = False

        async def moderator_writes(kind: str, room_id: str) -> None:
            nonlocal moved
            if kind == "state" and not moved:
                moved = True
                users = hs.users(room_id)
                hs.put(room_id, POWER, {"users": {**users, "@helper:example.org": 42}})

        hs.before_write = moderator_writes
        await outbox.do(intent("power", ROOM, user=self.USERS[0], level="muted"))
        assert hs.users(ROOM)["@helper:example.org"] == 42
        assert hs.users(ROOM)[self.USERS[0]] == -1

    async def test_changes_in_different_rooms_do_not_wait_for_each_other(
        self, hs: FakeHomeserver, outbox: Outbox
    ) -> None:
        """The lock is per (room, event type): a mute in one room is not held up by one in another."""
        assert outbox.state_lock(ROOM, POWER) is outbox.state_lock(ROOM, POWER)
        assert outbox.state_lock(ROOM, POWER) is not outbox.state_lock(OTHER, POWER)
        assert outbox.state_lock(ROOM, POWER) is not outbox.state_lock(ROOM, "m.room.join_rules")


class TestDirectMessages:
    def created(self, hs: FakeHomeserver) -> list[str]:
        """The rooms the bot created, in order."""
        return [room for kind, room, _ in hs.writes if kind == "create_room"]

    async def test_concurrent_dms_to_one_user_create_one_room(
        self, ledger: Ledger, hs: FakeHomeserver, outbox: Outbox
    ) -> None:
        """Three DMs to one user at once create one DM room and all arrive there."""
        results = await asyncio.gather(*(outbox.do(dm(f"dm:{n}", text=f"notice {n}")) for n in range(3)))
        [room] = self.created(hs)
        assert [r.value["room_id"] for r in results] == [room] * 3
        assert sorted(content["body"] for sent_to, content in hs.sent if sent_to == room) == [
            "notice 0",
            "notice 1",
            "notice 2",
        ]
        assert await ledger.dm_room(ALICE) == room

    async def test_dm_room_is_reused_later(self, ledger: Ledger, hs: FakeHomeserver, outbox: Outbox) -> None:
        """A later DM to the same user goes to the room made the first time; another user gets their own."""
        await outbox.do(dm("dm:1"))
        await outbox.do(dm("dm:2"))
        await outbox.do(dm("dm:3", user=BOB))
        assert len(self.created(hs)) == 2
        assert await ledger.dm_room(ALICE) != await ledger.dm_room(BOB)

    async def test_dm_cut_short_after_creation_finds_its_room(self, ledger: Ledger, hs: FakeHomeserver) -> None:
        """A crash right after the DM room was made: resume finds it and sends there, making no second room."""
        hs.after_write = crash_after("create_room")
        with pytest.raises(Crash):
            await Outbox(ledger, hs).do(dm("dm:1"))
        row = await row_of(ledger, "dm:1")
        assert (row.state, dict(row.result)) == ("pending", {"creating": True})
        assert await ledger.dm_room(ALICE) is None
        [room] = self.created(hs)
        hs.after_write = None

        assert await Outbox(ledger, hs).resume() == 1
        assert self.created(hs) == [room]
        assert hs.sent == [(room, text_content("You were warned."))]
        assert await ledger.dm_room(ALICE) == room
        assert (await row_of(ledger, "dm:1")).state == "done"

    async def test_dm_marked_creating_from_recorded_rows_finds_existing_room(
        self, ledger: Ledger, hs: FakeHomeserver
    ) -> None:
        """Built by hand: a pending row noted ``{"creating": true}`` and the notices room on the homeserver."""
        existing = await hs.create_room({"invite": [ALICE], "name": DM_ROOM_NAME})
        [row] = await ledger.add_intents([dm("dm:1")])
        await ledger.note_intent(row.id, {"creating": True})
        await Outbox(ledger, hs).resume()
        assert len(self.created(hs)) == 1
        assert await ledger.dm_room(ALICE) == existing
        assert [room for room, _ in hs.sent] == [existing]

    async def test_dm_cut_short_before_creation_creates_the_room(self, ledger: Ledger, hs: FakeHomeserver) -> None:
        """A crash before the room creation reached the homeserver: the resume finds nothing and creates it."""

        async def die(what: str, room_id: str) -> None:
            if what == "create_room":
                raise Crash

        hs.before_write = die
        with pytest.raises(Crash):
            await Outbox(ledger, hs).do(dm("dm:1"))
        hs.before_write = None
        await Outbox(ledger, hs).resume()
        [room] = self.created(hs)
        assert await ledger.dm_room(ALICE) == room
        assert [sent_to for sent_to, _ in hs.sent] == [room]

    async def test_dm_cut_short_does_not_take_another_users_notices_room(
        self, ledger: Ledger, hs: FakeHomeserver
    ) -> None:
        """A notices room made for BOB is not ALICE's: her cut-short DM creates her own."""
        bobs = await hs.create_room({"invite": [BOB], "name": DM_ROOM_NAME})
        [row] = await ledger.add_intents([dm("dm:1")])
        await ledger.note_intent(row.id, {"creating": True})
        await Outbox(ledger, hs).resume()
        mine = await ledger.dm_room(ALICE)
        assert mine is not None
        assert mine != bobs
        assert [room for room, _ in hs.sent] == [mine]
