"""File helpers of dMX: atomic writes, JSON reading with clear errors, fallback to the previous
version of a file, sha256 of a file.

The atomic writer itself lives in :mod:`mx_spec.atomic` (``mx_spec`` never imports ``dmx``, and
there is one writer): temp file + fsync + ``os.replace``, umask permissions, and
``keep_previous=True`` keeping the replaced version as ``<name>.prev``. Files that hold resumable
work (calibration checkpoints, the sweep's ``results.json``, the KL score cache) are written that
way, and their readers fall back to the previous version when the latest one is missing or
corrupt (:func:`read_json_or_previous`, :func:`load_or_previous`), so a damaged file costs one
checkpoint interval, not the whole run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mx_spec.atomic import atomic_write_bytes, atomic_write_text, previous_path

__all__ = ["atomic_write_bytes", "atomic_write_text", "previous_path", "exists_or_previous", "load_or_previous",
           "read_json", "read_json_or_previous", "sha256_file", "settings_digest"]

T = TypeVar("T")


def exists_or_previous(path: str | os.PathLike) -> bool:
    """True when ``path`` or its kept previous version exists."""
    return Path(path).exists() or previous_path(path).exists()


def load_or_previous(path: str | os.PathLike, load: Callable[[Path], T], *, what: str,
                     errors: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError),
                     announce: bool = True) -> T:
    """``load(path)``, or ``load`` of its kept previous version when ``path`` is missing or ``load``
    raises one of ``errors`` (a corrupt file); the fallback is announced on stderr (``announce``).

    When both fail (or no previous version exists) the error about ``path`` itself is raised.
    """
    target, previous = Path(path), previous_path(path)
    try:
        return load(target)
    except errors as err:
        if not previous.exists():
            raise
        try:
            value = load(previous)
        except errors:
            raise err from None
        reason = "is missing" if not target.exists() else f"is unusable ({err})"
        if announce:
            print(f"warning: {what} {target} {reason}; using the previous version {previous.name}", file=sys.stderr)
        return value


def read_json(path: str | os.PathLike, *, what: str, fix: str) -> Any:
    """Parse the UTF-8 JSON file ``path`` (the reading side of :func:`atomic_write_text`).

    A file that is not valid UTF-8 JSON (truncated by a crash of a non-atomic writer, edited by
    hand, another kind of file) raises ``ValueError``: ``"<what> <path> is corrupt, not valid
    JSON (<parser error>); <fix>"``, so the user learns which file is bad and what to do about
    it. A missing file raises the usual ``FileNotFoundError``; callers that treat absence as
    "nothing stored yet" check ``Path.exists`` first.
    """
    target = Path(path)
    try:
        return json.loads(target.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {target} is corrupt, not valid JSON ({err}); {fix}") from err


def read_json_or_previous(path: str | os.PathLike, *, what: str, fix: str) -> Any:
    """:func:`read_json` of ``path``, falling back to its kept previous version (:func:`load_or_previous`)."""
    return load_or_previous(path, lambda p: read_json(p, what=what, fix=fix), what=what)


def settings_digest(settings: Any) -> str:
    """8 hex digits of the sha256 of ``settings`` as sorted JSON: names a file or folder after what
    it was made with (checkpoints), so other settings get another name instead of resuming it."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB chunks (identifies exported tensors and
    rotation files across copies)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
