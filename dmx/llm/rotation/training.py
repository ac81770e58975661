"""A learned rotation as a trainable of the dMX calibration loop.

``dmx.calibrate.calibrate`` knows nothing about rotations; the caller plugs one in with
:func:`rotation_trainables` (the learned ``R1``/``R2`` matrices, trained jointly with the offsets
from the same loss by Cayley SGD at ``CalibrationConfig.rotation_lr``, folded into the weights
after the last step) and records which rotation the model carries with :func:`rotation_setup`
(any kind, so a checkpoint is never resumed under another rotation).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from torch import nn

from dmx.calibrate import CalibrationConfig
from dmx.llm.rotation.cayley import CayleySGD
from dmx.llm.rotation.learned import bake_rotation, rotation_parameters, shared_rotated_weights
from dmx.llm.rotation.state import rotation_state
from dmx.trainable import Trainable

__all__ = ["rotation_setup", "rotation_trainables"]


def rotation_setup(model: nn.Module) -> dict[str, Any]:
    """``{"rotation": description}`` of the model's rotation (``None`` without one), for ``calibrate(model_setup=)``."""
    state = rotation_state(model)
    return {"rotation": None if state is None else state.describe()}


def rotation_trainables(model: nn.Module, cfg: CalibrationConfig) -> list[Trainable]:
    """The model's learned rotation as ``[Trainable]`` for ``calibrate(trainables=)``; ``[]`` when nothing is learned.

    With several micro-batches per step the rotated weights are built once per step
    (:func:`dmx.llm.rotation.shared_rotated_weights`); ``finish`` folds the learned matrices into the
    weights (:func:`dmx.llm.rotation.bake_rotation`) before the formats are deployed.
    """
    matrices = rotation_parameters(model)
    if not matrices:
        return []
    return [Trainable(
        parameters=tuple(matrices),
        make_optimizer=lambda params: CayleySGD(params, lr=cfg.rotation_lr),
        checkpoint_keys=("rotation_matrices", "rotation_optimizer"),
        step_context=(lambda: shared_rotated_weights(model)) if cfg.grad_accum > 1 else nullcontext,
        finish=lambda: bake_rotation(model),
    )]
