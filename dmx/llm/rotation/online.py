"""The online randomized Hadamard transform and the forward hooks that apply rotations at run time.

An online rotation cannot be folded into a weight on both sides (a nonlinearity or a per-token
product sits before it), so it runs as a forward pre-hook of the module at a path, BEFORE that
module's forward: for a ``dmx.linear.DMXLinear`` before its input quantiser, so the rotated
activation is what gets MX-quantised (the point).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

from dmx.llm.rotation.hadamard import hadamard_transform, random_signs, supports_hadamard

__all__ = ["OnlineHadamard", "derived_seed", "remove_hooks", "has_pre_hook"]


def derived_seed(seed: int, tag: str) -> int:
    """A 63-bit seed for the rotation called ``tag`` (``"r1"``, ``"r2.3"``, ``"down_proj.3"``).

    Hash-derived, so each matrix is a pure function of ``(seed, tag)`` and independent of the
    order in which matrices are built.
    """
    digest = hashlib.sha256(f"dmx-rotation/{int(seed)}/{tag}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class OnlineHadamard:
    """``x -> x @ Q`` with ``Q = diag(s) H^T / sqrt(n)`` (:func:`dmx.llm.rotation.hadamard.random_hadamard_matrix`).

    With ``hadamard_size``: ``Q = diag(s) (I ⊗ H_size^T) / sqrt(size)``, a block-diagonal Hadamard
    that mixes channels only inside consecutive groups of ``hadamard_size`` (32 is the MX block
    size, so each MX block is rotated on its own and keeps its own scale). Computed by the fast
    transform, in the input's dtype and device; callable as a forward pre-hook (``hook(module,
    args) -> args``). A plain object (not a registered module) so that the model's ``state_dict``
    is unchanged; it is deep-copied together with the model.
    """

    def __init__(self, signs: torch.Tensor, hadamard_size: int | None = None) -> None:
        self.signs = signs.to(torch.float64)
        if hadamard_size is not None and (self.width % hadamard_size or not supports_hadamard(hadamard_size)):
            raise ValueError(f"Hadamard size {hadamard_size} must divide {self.width} and be a Hadamard order")
        self.hadamard_size = hadamard_size

    @classmethod
    def seeded(cls, width: int, seed: int, tag: str, hadamard_size: int | None = None) -> OnlineHadamard:
        """The randomized Hadamard of ``width`` whose signs :func:`derived_seed` ``(seed, tag)`` draws."""
        return cls(random_signs(width, derived_seed(seed, tag)), hadamard_size)

    @property
    def width(self) -> int:
        """The size of the axis it rotates."""
        return int(self.signs.numel())

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ Q`` along the last axis."""
        y = x * self.signs.to(device=x.device, dtype=x.dtype)
        size = self.hadamard_size
        if size is None or size == self.width:
            return hadamard_transform(y)
        return hadamard_transform(y.reshape(*y.shape[:-1], -1, size)).reshape(y.shape)

    def matrix(self) -> torch.Tensor:
        """The dense float64 ``Q`` (for folding ``W <- W Q``)."""
        return self.rotate(torch.eye(self.width, dtype=torch.float64))

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return (self.rotate(args[0]), *args[1:])


def remove_hooks(module: nn.Module, kinds: tuple[type, ...]) -> None:
    """Drop the forward (pre-)hooks of ``module`` that are instances of ``kinds``."""
    for store in (module._forward_pre_hooks, module._forward_hooks):
        for key in [k for k, h in store.items() if isinstance(h, kinds)]:
            del store[key]


def has_pre_hook(module: nn.Module, hook: Any) -> bool:
    """True if ``hook`` itself is one of the forward pre-hooks of ``module``."""
    return any(h is hook for h in module._forward_pre_hooks.values())
