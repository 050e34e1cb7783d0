"""The bot's files on disk: a private ``data_dir``, and warnings about secrets others can read.

The ledger holds the bot's access token (and the community's confidential records), so anyone
who can read it can become the bot. ``data_dir`` is therefore created 0700 and every file the
bot writes there 0600 (SQLite gives its WAL and SHM files the database file's mode); at start
whatever is looser is tightened, and said once. A bad directory (a file in the way, a parent
that cannot hold it, a read-only disk) is one :class:`DataDirError` line, never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

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
        files = [entry for entry in path.iterdir() if entry.is_file() and not entry.is_symlink()]
    except OSError as err:
        raise DataDirError(f"data_dir: cannot read {path}: {_describe(err)}") from err
    tightened += tighten(files, FILE_MODE)
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
