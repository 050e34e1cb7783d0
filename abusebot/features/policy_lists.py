"""Matrix moderation policy lists (watched, applied, published), as a feature."""

from __future__ import annotations

from typing import Any, ClassVar

from abusebot.events import Event
from abusebot.host import Feature, Role, feature
from policies.lists import PolicyManager


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

    async def stop(self) -> None:
        """Stop the debounced ACL writer."""
        await self.policies.close()

    def status(self) -> list[str]:
        """The watched lists."""
        return ["Policy lists: " + "; ".join(self.policies.describe())]


@feature("policy_lists")
def build(services: Any) -> Feature:
    """The policy lists, on the bot's policy manager; their rooms have the policy-list role."""
    services.host.add_role(Role.POLICY_LIST, services.policies.is_list_room)
    return PolicyListsFeature(services.policies)
