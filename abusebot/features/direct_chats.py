"""Direct chats with the bot: a member of the community may open one (Element opens them
encrypted), and the bot answers there.

Only a member of a protected room or of the management room gets an answer: an invite from
anyone else is ignored, so the bot cannot be pulled into thousands of rooms; a room of more than
the member and the bot, marked "direct", is left at once. A member has at
most :data:`MAX_ROOMS_PER_USER` direct chats with it. The bot answers each member at most once
per :data:`ANSWER_EVERY_S` (a member writing ten lines gets one answer, not ten), and says only
what it does: it does not pass messages on to the moderators yet.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import structlog

from abusebot.audit import Message
from abusebot.events import Event
from abusebot.host import Feature, Role, feature

log = structlog.get_logger("abusebot.direct_chats")

MAX_ROOMS_PER_USER = 3
MAX_ROOMS = 10_000
ANSWER_EVERY_S = 600.0


class DirectChats(Feature):
    """Accept a member's direct chat and answer in it."""

    name: ClassVar[str] = "direct_chats"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.DIRECT})
    event_types: ClassVar[frozenset[str] | None] = frozenset({"m.room.message"})
    migrations: ClassVar[tuple[str, ...]] = (
        """
        CREATE TABLE direct_chats (
            room_id    TEXT PRIMARY KEY,
            user_id    TEXT NOT NULL,
            joined_at  INTEGER NOT NULL
        );
        CREATE INDEX direct_chats_by_user ON direct_chats (user_id);
        """,
    )

    def __init__(self, bot: Any) -> None:
        self.bot = bot
        #: room id → the member it is a direct chat with.
        self.rooms: dict[str, str] = {}
        self._answered: dict[str, float] = {}
        #: member → "direct" rooms of more people they pulled the bot into (and it left).
        self._refused: dict[str, int] = {}

    async def start(self) -> None:
        """Load the direct chats; rooms in it have the DIRECT role from now on."""
        rows = await self.bot.ledger.fetch("SELECT room_id, user_id FROM direct_chats")
        self.rooms = {str(room): str(user) for room, user in rows}
        self.bot.host.add_role(Role.DIRECT, self.rooms.__contains__)

    def wants_invite(self, room_id: str, inviter: str, direct: bool) -> bool:
        """Whether to accept an invite: a direct chat from a member, within the limits (rooms
        the bot left as not direct count too, so crowds of three cannot pull it in without end);
        the member's own chat again after a kick."""
        if self.rooms.get(room_id) == inviter:
            return True
        if not direct or room_id in self.rooms or len(self.rooms) >= MAX_ROOMS:
            return False
        tried = sum(1 for user in self.rooms.values() if user == inviter) + self._refused.get(inviter, 0)
        if tried >= MAX_ROOMS_PER_USER:
            log.info("direct_chat_refused", inviter=inviter, why="too many direct chats")
            return False
        store = self.bot.store
        rooms = [store.management_id, *store.protected]
        return any(store.room(r).membership(inviter) == "join" for r in rooms if store.known(r))

    async def accepted(self, room_id: str, inviter: str) -> None:
        """The bot joined the direct chat: remember it, unless it is a room of more people
        marked "direct" (the bot leaves it: it answers one member in a room of two)."""
        state = self.bot.store.room(room_id)
        people = set(state.members("join")) | set(state.members("invite"))
        if people - {inviter, self.bot.hs.user_id}:
            self._refused[inviter] = self._refused.get(inviter, 0) + 1
            log.info("direct_chat_refused", room_id=room_id, inviter=inviter, why="more than two people")
            await self.bot.api.leave(room_id)
            return
        async with self.bot.ledger.transaction() as db:
            await db.execute(
                "INSERT OR REPLACE INTO direct_chats (room_id, user_id, joined_at) VALUES (?, ?, ?)",
                (room_id, inviter, int(time.time() * 1000)),
            )
        self.rooms[room_id] = inviter
        log.info("direct_chat_opened", room_id=room_id, user_id=inviter)

    async def handle(self, event: Event) -> None:
        """A message from the member: answer, at most once per :data:`ANSWER_EVERY_S`."""
        if self.rooms.get(event.room_id) != event.sender or not event.body:
            return
        now = time.monotonic()
        if now - self._answered.get(event.sender, -ANSWER_EVERY_S) < ANSWER_EVERY_S:
            return
        self._answered[event.sender] = now
        moderation = self.bot.moderation
        rules = f" The rules: {moderation.config.rules_url}" if moderation.config.rules_url else ""
        text = (
            f"Hello! I am the moderation bot of {moderation.community}. I do not pass messages on to the"
            f" moderators yet: to reach them, write to a moderator directly.{rules}"
        )
        intent = moderation.send_intent(event.room_id, Message(text, text), key=f"reply:{event.event_id}")
        result = await moderation.outbox.do(intent)
        if not result.ok:
            log.warning("direct_answer_failed", room_id=event.room_id, error=result.error)

    def status(self) -> list[str]:
        """One line: how many direct chats."""
        return [f"Direct chats: {len(self.rooms)}"] if self.rooms else []


@feature("direct_chats")
def make(bot: Any) -> Feature:
    """The direct-chats feature."""
    return DirectChats(bot)
