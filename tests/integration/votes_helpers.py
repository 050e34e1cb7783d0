"""Shared predicates for the attack tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def any_result(bot_id: str, number: int) -> Any:
    """The bot's result line of vote ``number``, whatever the result."""

    def predicate(event: Mapping[str, Any]) -> bool:
        body = (event.get("content") or {}).get("body", "")
        return (
            event.get("sender") == bot_id
            and event.get("type") == "m.room.message"
            and any(f"vote #{number} {word}:" in body for word in ("passed", "failed", "no quorum"))
        )

    return predicate


def results_of(events: list[dict[str, Any]], bot_id: str, number: int) -> list[dict[str, Any]]:
    """Every result line of vote ``number`` among ``events``."""
    match = any_result(bot_id, number)
    return [e for e in events if match(e)]
