"""A sub-Space run by someone else, filled with junk children."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from abusebot.features import spaces as spaces_module
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.held_spaces_helpers import add_child, create_space, settle, wait_until


async def test_a_child_the_bot_cannot_join_is_not_retried_at_every_change(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """Eve adds 20 children that do not exist, one by one. Every ``m.space.child`` event walks
    every Space again (``SpacesFeature.handle`` → ``reconcile``), and ``_classify`` tries to join
    again every child it could not join before: n changes cost n²/2 joins (federated joins
    through servers Eve names in ``via``). With the 1,000 rooms ``MAX_ROOMS`` allows, each
    change Eve makes costs 1,000 joins and holds up the sync loop meanwhile."""
    w = await World.create(synapse, tmp_path, rooms=0, members=("eve",))
    try:
        bot_id = w.bot_account.user_id
        eve = w.members["eve"]
        space = await create_space(w.mod, "Community")
        main = await w.mod.create_room(name="Main", power={bot_id: 100})
        await add_child(w.mod, space, main)
        sub = await create_space(eve, "Eve's corner")
        await add_child(w.mod, space, sub)
        w.write_config({"protected_rooms": [], "protected_spaces": [space]})
        await w.mod.start_watching()
        await w.start_bot()

        attempts: Counter[str] = Counter()
        api = w.bot.api
        original = api.join

        async def join(room: str, *args: Any, **kwargs: Any) -> Any:
            attempts[room] += 1
            return await original(room, *args, **kwargs)

        api.join = join
        junk = [f"!junk{n:03d}{w.tag}:localhost" for n in range(20)]
        for room in junk:
            await add_child(eve, sub, room)
            await asyncio.sleep(0.1)  # a change at a time, as a person (or a script) makes them
        spaces = w.bot.host.features["spaces"]

        async def all_seen() -> bool:
            return all(room in spaces.problems for room in junk)

        await wait_until(all_seen, 60, "every junk child being tried")
        await settle(w)
        tried = sum(attempts[room] for room in junk)
        assert tried <= 2 * len(junk), f"{tried} joins for {len(junk)} junk children: {dict(attempts)}"
    finally:
        await w.close()


async def test_junk_in_one_sub_space_does_not_push_out_the_rooms_of_another(
    synapse: SynapseServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sub-Spaces of the community: Eve's, and the moderators' "Teams" with its room Good.
    While the bot is away Eve adds ``MAX_ROOMS`` children that do not exist. ``_walk`` counts every
    child it meets, junk included, against ``MAX_ROOMS`` (for all Spaces together, breadth first,
    in id order), so at the next start Good is "over the limit" and no longer protected: one
    sub-Space admin can switch off the protection of rooms that are not theirs.

    ``MAX_ROOMS`` is lowered to 40 for the test's sake (1,000 junk events and the 1,000 joins the
    start then makes took over 3 minutes here, itself a stall); the walk is the same code."""
    monkeypatch.setattr(spaces_module, "MAX_ROOMS", 40)
    w = await World.create(synapse, tmp_path, rooms=0, members=("eve",))
    try:
        bot_id = w.bot_account.user_id
        eve = w.members["eve"]
        space = await create_space(w.mod, "Community")
        teams = await create_space(w.mod, "Teams")
        corner = await create_space(eve, "Eve's corner")
        while corner > teams:  # the walk goes in id order: Eve's Space first
            corner = await create_space(eve, "Eve's corner")
        good = await w.mod.create_room(name="Good", power={bot_id: 100})
        await add_child(w.mod, space, teams)
        await add_child(w.mod, space, corner)
        await add_child(w.mod, teams, good)
        w.write_config({"protected_rooms": [], "protected_spaces": [space]})
        await w.mod.start_watching()
        await w.start_bot()
        assert w.bot.store.is_protected(good)
        await w.stop_bot()

        gate = asyncio.Semaphore(8)

        async def junk(n: int) -> None:
            async with gate:
                await add_child(eve, corner, f"!junk{n:04d}{w.tag}:localhost")

        await asyncio.gather(*(junk(n) for n in range(spaces_module.MAX_ROOMS)))
        await w.start_bot(timeout=60)
        assert w.bot.store.is_protected(good), "a room of the moderators' sub-Space was pushed out by Eve's junk"
    finally:
        await w.close()
