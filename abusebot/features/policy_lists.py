"""Matrix moderation policy lists (watched, applied, published), as a feature, with its
``!mod lists`` command."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from abusebot.actions import Actor
from abusebot.audit import Message, bullet_list
from abusebot.commands import ROOM_REF, Authorized, CommandHandler, Parsed, Spec, UsageError, text_message
from abusebot.events import Event
from abusebot.host import Feature, Role, feature
from policies.lists import ListOptions, PolicyManager


class PolicyListsFeature(Feature):
    """Rule changes in the list rooms; joins and manual bans in the protected rooms."""

    name: ClassVar[str] = "policy_lists"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.PROTECTED, Role.POLICY_LIST})

    def __init__(self, policies: PolicyManager) -> None:
        self.policies = policies

    async def start(self) -> None:
        """Join and load every watched list, then apply them (progress in the log)."""
        await self.policies.load()

    async def handle(self, event: Event) -> None:
        """A rule change, or a member event in a protected room."""
        await self.policies.handle(event)

    async def room_added(self, room_id: str) -> None:
        """A room protected while running: its members meet the rules, and it gets the ACL."""
        await self.policies.apply_to_room(room_id)

    async def stop(self) -> None:
        """Stop the debounced ACL writer."""
        await self.policies.close()

    def commands(self) -> Sequence[Spec]:
        """``!mod lists``."""
        return [
            Spec(
                "lists",
                "lists [watch <room> [--dont-apply] [--allow] [--no-auto-unban] | unwatch <room> | preview <room>"
                " | create <#alias:server>]",
                "Policy lists: show them, follow or stop following one, preview what one would do, create ours.",
                parse_lists,
                self.command,
                room_admins=False,
                flags=frozenset({"--dont-apply", "--allow", "--no-auto-unban"}),
                scoped=False,
            )
        ]

    async def command(self, handler: CommandHandler, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        """``!mod lists``: show, watch, unwatch, preview or create policy lists."""
        policies = self.policies
        if not parsed.words:
            return bullet_list("Policy lists:", policies.describe())
        verb, room = parsed.words
        if verb == "watch":
            options = ListOptions(
                apply="--dont-apply" not in parsed.flags,
                allow="--allow" in parsed.flags,
                auto_unban="--no-auto-unban" not in parsed.flags,
            )
            count = await policies.watch(room, options)
            text = f"✅ Watching {room}: {count} rules, {options.describe()}."
        elif verb == "unwatch":
            removed = await policies.unwatch(room)
            if removed < 0:
                raise UsageError("lists", f"I am not watching {room}")
            text = f"✅ No longer watching {room}: {removed} rules dropped (bans already made stay)."
        elif verb == "preview":
            return await policies.preview(room)
        else:
            room_id = await policies.create_list(room)
            text = f"✅ Created the policy list {room} ({room_id}); bans are published there from now on."
        await handler.moderation.ledger.audit(
            actor=actor.name,
            action=f"lists_{verb}",
            outcome="done",
            room=room,
            event_id=actor.event_id,
            detail={"flags": sorted(parsed.flags)},
        )
        return text_message(text)

    def status(self) -> list[str]:
        """The watched lists."""
        return ["Policy lists: " + "; ".join(self.policies.describe())]


def parse_lists(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    """``lists [watch <room> [options] | unwatch <room> | preview <room> | create <#alias:server>]``."""
    if not args:
        if flags:
            raise UsageError("lists", "options go with watch")
        return Parsed("lists")
    verb = args[0].lower()
    if verb not in ("watch", "unwatch", "preview", "create"):
        raise UsageError("lists", f"unknown sub-command {args[0][:30]!r}")
    if len(args) != 2:
        raise UsageError("lists", f"'{verb}' takes one room")
    if verb == "create" and not (args[1].startswith("#") and ":" in args[1]):
        raise UsageError("lists", "create takes an alias like #ourbans:example.org")
    if verb != "create" and not ROOM_REF.fullmatch(args[1]):
        raise UsageError("lists", f"{args[1][:60]!r} is not a room id or alias")
    if flags and verb != "watch":
        raise UsageError("lists", "options go with watch")
    return Parsed("lists", words=(verb, args[1]), flags=flags)


@feature("policy_lists")
def build(services: Any) -> Feature:
    """The policy lists, on the bot's policy manager; their rooms have the policy-list role."""
    services.host.add_role(Role.POLICY_LIST, services.policies.is_list_room)
    return PolicyListsFeature(services.policies)
