"""Atomic file writes and calibration checkpoints that survive Ctrl-C and crashes.

Every write goes to a temporary file in the destination directory, is flushed and fsync'ed, and
then replaces the destination with ``os.replace`` (atomic on POSIX and Windows), so a reader
sees either the previous complete file or the new complete file, never a torn one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CHECKPOINT_NAME",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_text",
    "read_json",
    "sha256_file",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_path",
]

CHECKPOINT_NAME = "calibration_state.pt"
CHECKPOINT_VERSION = 1
_REQUIRED_KEYS = ("version", "step", "beta_hat", "optimizer", "rng", "config", "layers")


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable, truncated, or belongs to a different run."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same directory + fsync + os.replace)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
        raise
    return target


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text variant of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


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


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB chunks (identifies exported tensors and
    rotation files across copies)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_path(directory: str | os.PathLike) -> Path:
    """Path of the calibration checkpoint inside ``directory``."""
    return Path(directory) / CHECKPOINT_NAME


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Serialise ``state`` (must contain the keys of a calibration checkpoint) atomically."""
    missing = [k for k in _REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks keys {missing}")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(checkpoint_path(directory), buffer.getvalue())


def load_checkpoint(directory: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; ``CheckpointError`` if absent or corrupt.

    ``weights_only=True``: only tensors and plain containers are unpickled, never arbitrary code.
    """
    path = checkpoint_path(directory)
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
