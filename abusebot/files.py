"""The bot's files on disk: a private ``data_dir``, and warnings about secrets others can read.

The session file holds the bot's access token (anyone who can read it can become the bot) and
the ledger the community's confidential records. ``data_dir`` is therefore created 0700 and every file the
bot writes there 0600 (SQLite gives its WAL and SHM files the database file's mode); at start
whatever is looser is tightened, and said once. A bad directory (a file in the way, a parent
that cannot hold it, a read-only disk) is one :class:`DataDirError` line, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

DIR_MODE = 0o700
FILE_MODE = 0o600
#: Bits that let anyone but the owner in.
_OTHERS = 0o077


class DataDirError(Exception):
    """``data_dir`` cannot be used; the message names the path and what was expected."""


def _describe(err: OSError) -> str:
    return err.strerror or type(err).__name__


def check_data_dir(path: Path) -> str:
    """Check, without changing anything, that ``path`` is or can become the data directory.

    Returns a short description for ``check-config``; raises :class:`DataDirError`.
    """
    try:
        return _check_data_dir(path)
    except OSError as err:  # a name too long, a loop of links …
        raise DataDirError(f"data_dir: cannot use {str(path)[:200]}: {_describe(err)}") from err


def _check_data_dir(path: Path) -> str:
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise DataDirError(f"data_dir: expected a directory, but {path} is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise DataDirError(f"data_dir: expected a directory the bot can write, but {path} is not writable")
        mode = stat.S_IMODE(path.stat().st_mode)
        loose = " (others may read it now; it will be made private at start)" if mode & _OTHERS else ""
        return f"data_dir {path} exists{loose}"
    ancestor = path.parent
    while not ancestor.exists():
        if ancestor == ancestor.parent:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise DataDirError(f"data_dir: cannot create {path}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise DataDirError(f"data_dir: cannot create {path}: {ancestor} is not writable")
    return f"data_dir {path} will be created (mode 700)"


def prepare_data_dir(path: Path) -> list[str]:
    """Create ``path`` (mode 0700) or tighten it, tighten the files in it to 0600, and prove it
    is writable. Returns what was tightened (for one log line); raises :class:`DataDirError`."""
    try:
        return _prepare_data_dir(path)
    except OSError as err:
        raise DataDirError(f"data_dir: cannot use {str(path)[:200]}: {_describe(err)}") from err


def _prepare_data_dir(path: Path) -> list[str]:
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        raise DataDirError(f"data_dir: expected a directory, but {path} is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    except OSError as err:
        raise DataDirError(f"data_dir: cannot create {path}: {_describe(err)}") from err
    tightened = tighten([path], DIR_MODE)
    try:
        # The ledger and session file, and the key store's directory (``crypto/``) and files.
        dirs = [entry for entry in path.iterdir() if entry.is_dir() and not entry.is_symlink()]
        files = [entry for d in (path, *dirs) for entry in d.iterdir() if entry.is_file() and not entry.is_symlink()]
    except OSError as err:
        raise DataDirError(f"data_dir: cannot read {path}: {_describe(err)}") from err
    tightened += tighten(dirs, DIR_MODE) + tighten(files, FILE_MODE)
    probe = path / ".write-test"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, FILE_MODE)
        os.close(fd)
        probe.unlink()
    except OSError as err:
        raise DataDirError(f"data_dir: expected a directory the bot can write, but {path}: {_describe(err)}") from err
    return tightened


def tighten(paths: Iterable[Path], mode: int) -> list[str]:
    """chmod each path whose mode lets others in down to ``mode``; return those changed."""
    changed: list[str] = []
    for entry in paths:
        try:
            current = stat.S_IMODE(entry.stat().st_mode)
            if current & _OTHERS:
                entry.chmod(mode)
                changed.append(f"{entry} ({current:o} -> {mode:o})")
        except OSError as err:
            raise DataDirError(f"data_dir: cannot make {entry} private: {_describe(err)}") from err
    return changed


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (before SQLite opens it, so the
    database, and the WAL and SHM files SQLite derives from it, are never readable by others)."""
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
        os.close(fd)


def readable_by_others(path: Path) -> str | None:
    """The octal mode of ``path`` when group or others may read it, else ``None``."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    return f"{mode:o}" if mode & 0o044 else None


#: The bot's session (access token, device id) lives in this file of ``data_dir``, mode 0600:
#: not in the ledger, which moderators may copy or query for the record.
SESSION_FILE = "session.json"


@attrs.frozen
class Session:
    """A login to reuse: whose it is, its device and its access token."""

    user_id: str
    device_id: str
    access_token: str


def load_session(data_dir: Path) -> Session | None:
    """The stored session, or ``None`` (none yet, unreadable, or not a session)."""
    try:
        data = json.loads((data_dir / SESSION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    user_id, device_id, token = (data.get(name) for name in ("user_id", "device_id", "access_token"))
    if not (isinstance(user_id, str) and isinstance(device_id, str) and isinstance(token, str) and token):
        return None
    return Session(user_id, device_id, token)


def save_session(data_dir: Path, session: Session | None) -> None:
    """Store (or, with ``None``, forget) the session: written 0600 to a temporary file, synced,
    then renamed over the old one, so a crash leaves the old session or the new, never half."""
    path = data_dir / SESSION_FILE
    if session is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    write_private(path, json.dumps(attrs.asdict(session)))


def write_private(path: Path, text: str) -> None:
    """Write a secret: mode 0600 from the start, to a temporary file, synced, then renamed over
    the old one, so a crash leaves the old file or the new, never half of one."""
    temporary = path.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


async def take_session_from_ledger(ledger: Any, data_dir: Path, user_id: str) -> Session | None:
    """Move a session an older abusebot kept in the ledger's ``kv`` to the session file."""
    token = await ledger.get_kv("access_token")
    device = await ledger.get_kv("device_id") or ""
    if token is None and not await ledger.get_kv("device_id"):
        return None
    session = Session(user_id, device, token) if token else None
    if session is not None and load_session(data_dir) is None:
        save_session(data_dir, session)
    await ledger.delete_kv("access_token")
    await ledger.delete_kv("device_id")
    return session
