"""Nothing but the outbox calls the homeserver's write API (the outbox's docstring promises it)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The write methods of :class:`abusebot.matrix.Api` that act on rooms and people.
WRITES = {"ban", "unban", "kick", "redact", "put_state", "send"}
#: Where they may be called: the outbox (the one executor) and the API itself.
ALLOWED = {ROOT / "abusebot" / "outbox.py", ROOT / "abusebot" / "matrix.py"}


def calls_to_the_write_api(path: Path) -> list[str]:
    """``api.ban(…)``-shaped calls (on anything named ``api``) in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        target = node.func.value
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if node.func.attr in WRITES and name == "api":
            where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
            found.append(f"{where}:{node.lineno} {name}.{node.func.attr}")
    return found


def test_only_the_outbox_calls_the_write_api() -> None:
    """Protections, policy lists, commands, the scheduler and features produce intents; no module but
    the outbox calls ``api.ban``/``unban``/``kick``/``redact``/``put_state``/``send``."""
    sources = [p for d in ("abusebot", "policies", "protections") for p in (ROOT / d).rglob("*.py")]
    offenders = [call for path in sources if path not in ALLOWED for call in calls_to_the_write_api(path)]
    assert offenders == []


def test_the_check_finds_a_direct_call(tmp_path: Path) -> None:
    """The check above would see a direct call (so its silence means something)."""
    sample = tmp_path / "sample.py"
    sample.write_text("async def f(self):\n    await self.api.ban('!r', '@u', 'x')\n", encoding="utf-8")
    assert calls_to_the_write_api(sample) == ["sample.py:2 api.ban"]
