"""Atomic file writes: the one implementation, shared by ``mx_spec`` (golden files) and ``dmx``
(checkpoints, results, assignments; through :mod:`dmx.files`, since ``mx_spec`` never imports ``dmx``).

Every write goes to a temporary file in the destination directory, is flushed and fsync'ed, and
then replaces the destination with ``os.replace`` (atomic on POSIX and Windows), so a reader
sees either the previous complete file or the new complete file, never a torn one. The file
gets the permissions any other new file would get (``0o666`` less the user's umask), not the
owner-only ``0o600`` of the temporary-file API.

``keep_previous=True`` keeps the version being replaced as ``<name>.prev``
(:func:`previous_path`), for files whose readers fall back to it when the latest is corrupt.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "previous_path"]


def _umask() -> int:
    """The process umask: from /proc on Linux, else by setting it and straight back (os.umask can
    only be read that way, which a thread creating a file at that instant could notice)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def previous_path(path: str | os.PathLike) -> Path:
    """Where :func:`atomic_write_bytes` with ``keep_previous=True`` keeps the replaced version:
    ``<name>.prev`` beside ``path`` (``results.json`` -> ``results.json.prev``; not ``*.json``, so
    tools that collect a folder's JSON files do not take it for a result)."""
    target = Path(path)
    return target.with_name(target.name + ".prev")


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, keep_previous: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same directory + fsync + os.replace).

    The file gets ``0o666`` less the umask, like any file the user creates. ``keep_previous``:
    the file being replaced is moved to :func:`previous_path` first (both moves are atomic; a
    crash between them leaves only the previous version, which the readers fall back to).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~_umask())  # mkstemp creates 0o600
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if keep_previous and target.exists():
            os.replace(target, previous_path(target))
        os.replace(temp_name, target)
    except BaseException:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
        raise
    return target


def atomic_write_text(path: str | os.PathLike, text: str, *, keep_previous: bool = False) -> Path:
    """UTF-8 text variant of :func:`atomic_write_bytes` (``\\n`` line ends kept as given)."""
    return atomic_write_bytes(path, text.encode("utf-8"), keep_previous=keep_previous)
