"""Atomic file writes and calibration checkpoints that survive Ctrl-C, SIGTERM, crashes and corruption.

Every write goes to a temporary file in the destination directory, is flushed and fsync'ed, and
then replaces the destination with ``os.replace`` (atomic on POSIX and Windows), so a reader
sees either the previous complete file or the new complete file, never a torn one. The file
gets the permissions any other new file would get (``0o666`` less the user's umask), not the
owner-only ``0o600`` of the temporary-file API.

Files that hold resumable work (calibration checkpoints, the sweep's ``results.json``, the KL
score cache) are written with ``keep_previous=True``: the version they replace is kept as
``<name>.prev`` (:func:`previous_path`), and their readers fall back to it when the
latest one is missing or corrupt (:func:`read_json_or_previous`, :func:`load_checkpoint`), so a
damaged file costs one checkpoint interval, not the whole run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

__all__ = [
    "CHECKPOINT_NAME",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_text",
    "previous_path",
    "exists_or_previous",
    "load_or_previous",
    "read_json",
    "read_json_or_previous",
    "sha256_file",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_path",
    "checkpoint_exists",
    "remove_checkpoint",
]

CHECKPOINT_NAME = "calibration_state.pt"
CHECKPOINT_VERSION = 1
_REQUIRED_KEYS = ("version", "step", "beta_hat", "optimizer", "rng", "config", "layers")


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable, truncated, or belongs to a different run."""


T = TypeVar("T")


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


def exists_or_previous(path: str | os.PathLike) -> bool:
    """True when ``path`` or its kept previous version exists."""
    return Path(path).exists() or previous_path(path).exists()


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
    """UTF-8 text variant of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"), keep_previous=keep_previous)


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


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB chunks (identifies exported tensors and
    rotation files across copies)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_path(directory: str | os.PathLike) -> Path:
    """Path of the calibration checkpoint inside ``directory`` (the one before it: :func:`previous_path`)."""
    return Path(directory) / CHECKPOINT_NAME


def checkpoint_exists(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds a calibration checkpoint (the latest or the previous one)."""
    return exists_or_previous(checkpoint_path(directory))


def remove_checkpoint(directory: str | os.PathLike) -> None:
    """Delete the checkpoint and its previous version; then ``directory`` itself if it is empty."""
    folder = Path(directory)
    for path in (checkpoint_path(folder), previous_path(checkpoint_path(folder))):
        path.unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Serialise ``state`` (must contain the keys of a calibration checkpoint) atomically, keeping
    the checkpoint it replaces as the previous one."""
    missing = [k for k in _REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks keys {missing}")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(checkpoint_path(directory), buffer.getvalue(), keep_previous=True)


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """One checkpoint file; ``CheckpointError`` if absent, corrupt or not a dMX checkpoint.

    ``weights_only=True``: only tensors and plain containers are unpickled, never arbitrary code.
    """
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; run without --resume to start a new calibration")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated / foreign files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a dMX checkpoint ({type(err).__name__}: {err}); "
            f"delete it (or choose another --checkpoint-dir) and run without --resume"
        ) from err
    if not isinstance(state, dict) or any(k not in state for k in _REQUIRED_KEYS):
        raise CheckpointError(f"checkpoint {path} lacks required entries {list(_REQUIRED_KEYS)}; it is not a dMX checkpoint")
    if state["version"] != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path} has version {state['version']}, expected {CHECKPOINT_VERSION}")
    return state


def load_checkpoint(directory: str | os.PathLike, *, announce: bool = True) -> dict[str, Any]:
    """Load the checkpoint written by :func:`save_checkpoint`; when it is missing or corrupt, the
    previous one (a warning on stderr says so, ``announce``). ``CheckpointError`` when neither is usable."""
    return load_or_previous(checkpoint_path(directory), _read_checkpoint, what="checkpoint",
                            errors=(CheckpointError,), announce=announce)
