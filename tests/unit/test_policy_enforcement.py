"""Policy enforcement: a new rule finds exactly the members it matches and bans them off the
handler, through the executor; a rule removed mid-way leaves no stray ban; the safety filter
follows power-level changes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from abusebot.actions import Moderation
from abusebot.config import Config
from abusebot.ledger import Ledger
from abusebot.rooms import RoomStore
from abusebot.testing.fakes import FakeHomeserver
from policies.lists import ListOptions, PolicyManager

BOT = "@bot:example.org"
MOD = "@mod:example.org"
MANAGEMENT = "!management:example.org"
ROOM = "!room:example.org"
LIST = "!list:example.org"
MEMBERS = [f"@member{n}:members.example" for n in range(30)] + ["@MixedCase:members.example"]


class World:
    """A policy manager over one protected room, a real ledger and the fake homeserver."""

    def __init__(self, tmp: Path, ledger: Ledger) -> None:
        self.hs = FakeHomeserver(BOT)
        self.store = RoomStore()
        self.store.management_id = MANAGEMENT
        config = Config(
            homeserver="http://127.0.0.1:9",
            user_id=BOT,
            data_dir=tmp,
            management_room=MANAGEMENT,
            protected_rooms=(ROOM,),
            password="unused",
        )
        self.state(MANAGEMENT, "m.room.power_levels", {"users": {BOT: 100, MOD: 50}})
        for user in (BOT, MOD):
            self.state(MANAGEMENT, "m.room.member", {"membership": "join"}, user)
        self.state(ROOM, "m.room.power_levels", {"users": {BOT: 100}})
        for user in (BOT, *MEMBERS):
            self.state(ROOM, "m.room.member", {"membership": "join"}, user)
        self.store.protect(ROOM)
        self.moderation = Moderation(config=config, ledger=ledger, api=self.hs, store=self.store, bot_user_id=BOT)
        self.policies = PolicyManager(config, self.store, self.moderation, ledger)
        self.policies.lists[LIST] = ListOptions()

    def state(self, room: str, event_type: str, content: dict[str, Any], key: str = "") -> None:
        """Set state in the fake homeserver and in the bot's view of the room."""
        self.hs.put(room, event_type, content, key)
        self.store.room(room).apply({"type": event_type, "state_key": key, "content": content, "sender": MOD})

    async def rule(self, entity: str, key: str | None = None, *, remove: bool = False) -> None:
        """A list publishes (or empties) a ban rule."""
        content = {} if remove else {"entity": entity, "recommendation": "m.ban", "reason": "spam"}
        raw = {
            "type": "m.policy.rule.user",
            "state_key": key or f"rule:{entity}",
            "sender": "@owner:lists.example",
            "event_id": f"$rule-{entity}-{remove}",
            "content": content,
        }
        await self.policies.on_rule_event(raw, LIST)

    async def settle(self) -> None:
        """Wait for every fan-out in flight."""
        while self.policies._fan_outs:
            await asyncio.gather(*list(self.policies._fan_outs.values()), return_exceptions=True)

    def banned(self) -> list[str]:
        return sorted(user for kind, room, user in self.hs.writes if kind == "ban" and room == ROOM)

    def posts(self) -> list[str]:
        return [content["body"] for room, content in self.hs.sent if room == MANAGEMENT]


@pytest.fixture
def world(tmp_path: Path, ledger: Ledger) -> World:
    return World(tmp_path, ledger)


async def test_an_exact_rule_bans_only_the_member_it_names(world: World) -> None:
    """An exact rule bans the one member it names, and nobody else."""
    await world.rule("@member7:members.example")
    await world.settle()
    assert world.banned() == ["@member7:members.example"]


async def test_an_exact_rule_finds_a_member_whose_id_has_capitals(world: World) -> None:
    """Rules ignore case: an exact rule in lower case finds a member id with capitals."""
    await world.rule("@mixedcase:members.example")
    await world.settle()
    assert world.banned() == ["@MixedCase:members.example"]


async def test_a_glob_rule_bans_exactly_the_members_it_matches(world: World) -> None:
    """A glob bans the members it matches (member1, member10–19), one summary line says how many."""
    await world.rule("@member1*:members.example")
    await world.settle()
    expected = sorted(["@member1:members.example", *(f"@member{n}:members.example" for n in range(10, 20))])
    assert world.banned() == expected
    summaries = [body for body in world.posts() if body.startswith("Policy list")]
    assert len(summaries) == 1
    assert "banned 11 member(s)" in summaries[0]


async def test_the_bans_of_a_rule_run_after_its_handler_returns(world: World) -> None:
    """The handler returns before the bans are sent (they fan out off the sync loop)."""
    await world.rule("@member2*:members.example")
    assert world.banned() == []
    assert world.policies._fan_outs
    await world.settle()
    assert len(world.banned()) == 11


async def test_a_rule_removed_during_its_fan_out_leaves_no_ban(world: World) -> None:
    """A glob removed while its bans go out: the fan-out stops, and the bans it made are lifted."""
    gate = asyncio.Event()

    async def slow(kind: str, room: str) -> None:
        if kind == "ban":
            await gate.wait()

    world.hs.before_write = slow
    await world.rule("@member*:members.example", key="wave")
    await asyncio.sleep(0.05)  # the first bans are waiting at the homeserver
    removal = asyncio.create_task(world.rule("@member*:members.example", key="wave", remove=True))
    await asyncio.sleep(0.05)
    gate.set()
    await removal
    await world.settle()
    still_banned = [user for user in MEMBERS if world.hs.membership(ROOM, user) == "ban"]
    assert still_banned == []
    assert len(world.banned()) < len(MEMBERS)  # the fan-out stopped early


async def test_a_new_admin_is_protected_from_the_next_rule(world: World) -> None:
    """The safety filter is cached, but a power-level change (a member made admin) is seen by the
    next rule: the rule naming them is refused."""
    await world.rule("@nobody:else.example")
    world.state(ROOM, "m.room.power_levels", {"users": {BOT: 100, "@member3:members.example": 100}})
    await world.rule("@member3:members.example")
    await world.settle()
    assert world.banned() == []
    assert any("@member3:members.example" in body for body in world.posts())
