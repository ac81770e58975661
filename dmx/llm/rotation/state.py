"""What was done to a rotated model: its request, sizes, matrices and online Hadamards (``model.dmx_rotation``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dmx.llm.rotation.online import OnlineHadamard
from dmx.llm.rotation.spec import RotationSpec

__all__ = ["RotationState", "rotation_state"]


@dataclass
class RotationState:
    """The tensors of an applied :class:`~dmx.llm.rotation.spec.RotationSpec`; ``model.dmx_rotation`` holds it.

    ``hidden``/``head_dim``: the model sizes the matrices fit; ``r1``/``r2``: the residual and
    per-layer V/O rotations (float32 tensors; ``nn.Parameter`` while learning; None in the online
    layout), ``online``: ``{module path: OnlineHadamard}``, ``baked``: True once the matrices are
    folded into the weights (always for ``hadamard``; after :func:`dmx.llm.rotation.bake_rotation`
    for ``learned``).
    """

    spec: RotationSpec
    hidden: int
    head_dim: int
    r1: torch.Tensor | None = None
    r2: list[torch.Tensor] = field(default_factory=list)
    online: dict[str, OnlineHadamard] = field(default_factory=dict)
    baked: bool = True
    #: set by :func:`dmx.llm.rotation.shared_rotated_weights` while an optimiser step is running
    step_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = field(default=None, repr=False, compare=False)

    @property
    def learning(self) -> bool:
        """True while a learned rotation's matrices are trainable (not yet baked)."""
        return self.spec.kind == "learned" and not self.baked

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description (:meth:`RotationSpec.description` for this model's sizes)."""
        return self.spec.description(self.hidden, self.head_dim)


def rotation_state(model: nn.Module) -> RotationState | None:
    """The :class:`RotationState` of a rotated model, or None."""
    return getattr(model, "dmx_rotation", None)
