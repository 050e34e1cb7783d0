"""Spaces for the Space tests: create one, add and remove children."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from abusebot.matrix import API
from abusebot.testing.world import Person, World


async def create_space(person: Person, name: str, *, public: bool = True) -> str:
    """A Space (``type: m.space``) created by ``person``."""
    body: dict[str, Any] = {
        "preset": "public_chat" if public else "private_chat",
        "name": name,
        "creation_content": {"type": "m.space"},
        "power_level_content_override": {"events_default": 100},
    }
    reply = await person.call("POST", f"{API}/createRoom", body)
    return str(reply["room_id"])


def server_of(person: Person) -> str:
    """The server part of ``person``'s id (what a child's ``via`` names)."""
    return person.user_id.split(":", 1)[1]


async def add_child(person: Person, space: str, room: str, content: Mapping[str, Any] | None = None) -> str:
    """Name ``room`` a child of ``space`` (``content``: something else than a plain ``via``)."""
    body = {"via": [server_of(person)]} if content is None else dict(content)
    return await person.put_state(space, "m.space.child", body, state_key=room)


async def remove_child(person: Person, space: str, room: str) -> str:
    """Take ``room`` out of ``space`` (an empty child event, as clients do)."""
    return await person.put_state(space, "m.space.child", {}, state_key=room)


async def start_with_space(w: World, *members: Person) -> tuple[str, str]:
    """A Space "Community" with one room "Main" (the bot at 100 there, ``members`` in it), the
    only thing the bot protects; the bot started. Returns (the Space, Main)."""
    space = await create_space(w.mod, "Community")
    main = await w.mod.create_room(name="Main", power={w.bot_account.user_id: 100})
    await add_child(w.mod, space, main)
    for member in members:
        await member.join(main)
    w.write_config({"protected_rooms": [], "protected_spaces": [space]})
    await w.mod.start_watching()
    await w.start_bot()
    return space, main
