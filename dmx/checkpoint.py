"""Calibration checkpoints that survive Ctrl-C, SIGTERM, crashes and corruption.

A checkpoint is written atomically (:mod:`dmx.files`) with the one it replaces kept as the
previous version; :func:`load_checkpoint` falls back to that one when the latest is missing or
corrupt, so a damaged checkpoint costs one checkpoint interval, not the whole run.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from dmx.files import atomic_write_bytes, exists_or_previous, load_or_previous, previous_path

__all__ = [
    "CHECKPOINT_NAME",
    "CHECKPOINT_VERSION",
    "CheckpointError",
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
        raise CheckpointError(f"no checkpoint at {path}; run without resume=True to start a new calibration")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated / foreign files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a dMX checkpoint ({type(err).__name__}: {err}); "
            f"delete it (or choose another checkpoint_dir) and run without resume=True"
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
