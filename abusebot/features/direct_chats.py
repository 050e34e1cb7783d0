"""Direct chats with the bot: the rooms where one person and the bot talk. Two kinds: a chat a
member opens (Element opens them encrypted), and the room the bot made to send someone notices.
Both have the ``DIRECT`` role; ModMail (:mod:`abusebot.features.cases`) reads them.

Who may open one is ``community.modmail.accept_from``: ``members`` — of a protected room or of
the management room, former and banned members included (a banned user appeals from here) — or
``anyone``. Anyone else's direct invite is declined (by the bot, a few a minute), so the bot
cannot be pulled into thousands of rooms; a room of more than the person and the bot, marked
"direct", is left at once. A person has at most :data:`MAX_ROOMS_PER_USER` direct chats with it.

With ModMail off, the bot answers each member at most once per :data:`ANSWER_EVERY_S` and says
only what it does: it does not pass messages on to the moderators.
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
        #: room id → the user the bot made it for, to send them notices (their replies are read).
        self.notice_rooms: dict[str, str] = {}

    async def start(self) -> None:
        """Load the direct chats and the notices rooms; they have the DIRECT role from now on."""
        rows = await self.bot.ledger.fetch("SELECT room_id, user_id FROM direct_chats")
        self.rooms = {str(room): str(user) for room, user in rows}
        rows = await self.bot.ledger.fetch("SELECT room_id, user_id FROM dm_rooms")
        self.notice_rooms = {str(room): str(user) for room, user in rows}
        self.bot.outbox.dm_room_listeners.append(self._notice_room)
        self.bot.host.add_role(Role.DIRECT, lambda room: room in self.rooms or room in self.notice_rooms)

    def _notice_room(self, user_id: str, room_id: str) -> None:
        self.notice_rooms[room_id] = user_id

    def user_of(self, room_id: str) -> str | None:
        """The one person the bot talks to in ``room_id``, if it is a direct chat."""
        return self.rooms.get(room_id) or self.notice_rooms.get(room_id)

    def may_write(self, user_id: str) -> bool:
        """Whether ``user_id`` may reach the moderators here (``accept_from``)."""
        if self.bot.config.modmail.enabled and self.bot.config.modmail.accept_from == "anyone":
            return True
        store = self.bot.store
        known = ("join", "leave", "ban") if self.bot.config.modmail.enabled else ("join",)
        rooms = [store.management_id, *store.protected]
        return any(store.room(r).membership(user_id) in known for r in rooms if store.known(r))

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
        return self.may_write(inviter)

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
        """With ModMail off, a message from the member: answer, at most once per :data:`ANSWER_EVERY_S`."""
        if self.bot.config.modmail.enabled:
            return  # ModMail reads it
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
        if not self.rooms and not self.notice_rooms:
            return []
        return [f"Direct chats: {len(self.rooms)} opened by members, {len(self.notice_rooms)} for notices"]


@feature("direct_chats")
def make(bot: Any) -> Feature:
    """The direct-chats feature."""
    return DirectChats(bot)
