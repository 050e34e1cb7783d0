"""The bot's features, each one module that registers itself on the host (:mod:`abusebot.host`).

:func:`load_all` imports every module of this package, so adding a capability is adding a
module: the core names none of them.
"""

from __future__ import annotations

import importlib
import pkgutil

from abusebot.host import FACTORIES


def load_all() -> list[str]:
    """Import every feature module (each registers its factory); return the registered names, in
    the order they run (the order of :data:`ORDER`, then the rest by name)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    first = [name for name in ORDER if name in FACTORIES]
    return first + sorted(name for name in FACTORIES if name not in ORDER)


#: Policy lists look at an event before the protections: a listed user who joins is banned
#: before a protection weighs their first message. The lists are loaded before a Space is walked:
#: a list room a Space names is then known as one, never protected.
ORDER = ("policy_lists", "spaces", "protections")
