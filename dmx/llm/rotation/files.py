"""Rotation files (safetensors) and the provenance and cache keys that name a model's rotation.

A rotation file holds the description (:meth:`dmx.llm.rotation.spec.RotationSpec.description`) in
its metadata under ``dmx_rotation`` (JSON) and, for a learned rotation, the matrices ``r1``,
``r2.<layer>``; a fixed rotation is rebuilt from its description (the file then holds its seed).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from dmx.files import atomic_write_bytes, sha256_file
from dmx.llm.rotation.state import RotationState, rotation_state

__all__ = ["save_rotation", "load_rotation", "rotation_provenance", "save_rotation_beside", "rotated_model_id"]


def save_rotation(state: RotationState, path: str | Path) -> Path:
    """Write the description and (for ``learned``) the matrices to ``path`` (safetensors, atomic)."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    if state.spec.kind == "learned":
        tensors["r1"] = state.r1.detach().cpu().float().contiguous()
        for i, m in enumerate(state.r2):
            tensors[f"r2.{i}"] = m.detach().cpu().float().contiguous()
    else:  # safetensors needs at least one tensor; the fixed kind is rebuilt from the seed
        tensors["seed"] = torch.tensor([state.spec.seed], dtype=torch.int64)
    return atomic_write_bytes(path, save(tensors, metadata={"dmx_rotation": json.dumps(state.describe())}))


def load_rotation(path: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(description, matrices or None)`` from :func:`save_rotation`'s file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"rotation file {path} does not exist; `dmx calibrate --rotation ...` and `dmx export` write one")
    try:
        handle_cm = safe_open(str(path), framework="pt")
    except SafetensorError as err:
        raise ValueError(f"{path} is not a safetensors rotation file ({err}); pass the .rotation.safetensors "
                         "written by `dmx calibrate` or `dmx export`") from err
    with handle_cm as handle:
        meta = handle.metadata() or {}
        if "dmx_rotation" not in meta:
            raise ValueError(f"{path} holds no dMX rotation (no 'dmx_rotation' metadata); write it with save_rotation")
        description = json.loads(meta["dmx_rotation"])
        if description.get("kind") != "learned":
            return description, None
        keys = sorted((k for k in handle.keys() if k.startswith("r2.")), key=lambda k: int(k.split(".")[1]))
        matrices = {"r1": handle.get_tensor("r1"), "r2": [handle.get_tensor(k) for k in keys]}
    return description, matrices


def rotated_model_id(model_id: str, model: nn.Module) -> str:
    """``model_id`` as a cache key of results that depend on the model's rotation (the KL scores).

    Unrotated: ``model_id`` unchanged. Rotated: ``"<model_id>|rotation=<sha256[:16]>"`` of the
    rotation's description and, for a learned rotation, its matrices (two learned runs differ).
    """
    state = rotation_state(model)
    if state is None:
        return model_id
    digest = hashlib.sha256(json.dumps(state.describe(), sort_keys=True).encode())
    if state.spec.kind == "learned":
        for matrix in [state.r1, *state.r2]:
            digest.update(matrix.detach().cpu().float().contiguous().numpy().tobytes())
    return f"{model_id}|rotation={digest.hexdigest()[:16]}"


def save_rotation_beside(model: nn.Module, assignment_path: str | Path, *, learned_only: bool = False) -> tuple[dict[str, Any], Path | None]:
    """Save the model's rotation next to the assignment about to be written at ``assignment_path``.

    The file is ``<assignment stem>.rotation.safetensors`` (:func:`save_rotation`), written before
    the assignment so that an assignment always finds its rotation; ``learned_only``: fixed
    rotations (rebuilt from their description) get no file. Returns ``(provenance keys of
    :func:`rotation_provenance`, the file or None)``.
    """
    path = Path(assignment_path)
    state = rotation_state(model)
    saved = None
    if state is not None and (state.spec.kind == "learned" or not learned_only):
        path.parent.mkdir(parents=True, exist_ok=True)
        saved = save_rotation(state, path.with_name(path.stem + ".rotation.safetensors"))
    return rotation_provenance(state, saved, path.parent), saved


def rotation_provenance(state: RotationState | None, file: str | Path | None, relative_to: str | Path) -> dict[str, Any]:
    """Provenance keys recording the rotation an assignment was made under.

    ``rotation``: ``state.describe()`` or None; when the rotation was saved in ``file``
    (:func:`save_rotation`) also ``rotation_file`` (relative to ``relative_to``, the assignment's
    directory, so the pair can be moved together) and ``rotation_sha256`` of the file.
    :func:`dmx.llm.rotation.recorded_rotation` reads them back.
    """
    record: dict[str, Any] = {"rotation": None if state is None else state.describe()}
    if state is not None and file is not None:
        record["rotation_file"] = os.path.relpath(Path(file).resolve(), Path(relative_to).resolve())
        record["rotation_sha256"] = sha256_file(file)
    return record
