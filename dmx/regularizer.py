"""Target-aware bit-budget regulariser and bit accounting.

Penalty (authors' code)::

    R = max(0, λ · (b̄ − b̄_target)),   λ = 5 by default

with ``b̄`` the average element width over the quantised layers: the plain mean over layers
(default, as in the paper) or weighted by each layer's number of weight elements
(``weighting="elements"``, the true average bits per stored weight). The budget refers to
*element* bits ``1 + E + M``; the storage cost additionally carries the 8-bit E8M0 scale shared by
each block: ``storage_bits = element_bits + 8 / block_size`` (OCP MX v1.0 §5.2), reported by
:func:`storage_bits`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from mx_spec.blocks import check_block_size
from mx_spec.formats import DEFAULT_BLOCK_SIZE

__all__ = [
    "DEFAULT_LAMBDA",
    "E8M0_SCALE_BITS",
    "WEIGHTINGS",
    "storage_bits",
    "average_bits",
    "bit_budget_penalty",
    "dmx_objective",
]

DEFAULT_LAMBDA = 5.0
E8M0_SCALE_BITS = 8
WEIGHTINGS = ("mean", "elements")


def storage_bits(element_bits, block_size: int = DEFAULT_BLOCK_SIZE):
    """Bits per element including the shared E8M0 scale: ``element_bits + 8 / block_size``."""
    block_size = check_block_size(block_size)
    return element_bits + E8M0_SCALE_BITS / block_size


def _as_bits_tensor(bits) -> torch.Tensor:
    if torch.is_tensor(bits):
        t = bits.reshape(-1)
    else:
        items = list(bits)
        if not items:
            raise ValueError("need the bits of at least one layer; got an empty sequence")
        t = torch.stack([b if torch.is_tensor(b) else torch.tensor(float(b)) for b in items])
        t = t.reshape(-1)
    if t.numel() == 0:
        raise ValueError("need the bits of at least one layer; got an empty tensor")
    if not bool(torch.isfinite(t.detach()).all()):
        raise FloatingPointError(f"layer bits are not finite: {t.detach().tolist()[:8]}")
    return t.to(torch.float32) if not t.is_floating_point() else t


def _weighted_mean(t: torch.Tensor, weights) -> torch.Tensor:
    if weights is None:
        return t.mean()
    w = torch.as_tensor(weights, dtype=t.dtype, device=t.device).reshape(-1)
    if w.shape != t.shape:
        raise ValueError(f"weights must have one entry per layer ({t.numel()}); got {w.numel()}")
    if bool((w < 0).any()) or not float(w.sum()) > 0:
        raise ValueError("weights must be >= 0 with a positive sum (e.g. element counts)")
    return (t * w).sum() / w.sum()


def average_bits(layers, weighting: str = "mean", *, kind: str = "element") -> torch.Tensor:
    """Average width ``b̄`` over DMX layers (a mapping name -> layer, or an iterable of layers).

    ``weighting``: ``"mean"`` (plain mean over layers) or ``"elements"`` (weighted by each
    layer's weight element count). ``kind``: ``"element"`` (``1+E+M``, the budget quantity) or
    ``"storage"`` (plus ``8/block_size`` for the E8M0 scale). Differentiable while the layers
    are training; hard (deployed formats) in eval mode.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; valid: {list(WEIGHTINGS)}")
    if kind not in ("element", "storage"):
        raise ValueError(f"unknown kind {kind!r}; valid: ['element', 'storage']")
    mods = list(layers.values()) if isinstance(layers, Mapping) else list(layers)
    if not mods:
        raise ValueError("no quantised layers given: wrap the model first (dmx.wrap_linears)")
    bits = [m.element_bits() if kind == "element" else m.storage_bits() for m in mods]
    t = _as_bits_tensor(bits)
    weights = None if weighting == "mean" else [m.weight.numel() for m in mods]
    return _weighted_mean(t, weights)


def bit_budget_penalty(
    bits,
    target: float,
    lam: float = DEFAULT_LAMBDA,
    weights: Sequence[float] | torch.Tensor | None = None,
    *,
    bits_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """``max(0, lam · (b̄ − target))`` with ``b̄`` the (weighted) mean of per-layer ``bits``.

    ``bits``: a tensor or a sequence of 0-d tensors/floats, one per layer (element bits).
    ``weights``: optional non-negative per-layer weights (``None`` = plain mean).
    ``bits_range``: if given (e.g. ``family.bits_range``), a target outside it is an error.
    """
    t = _as_bits_tensor(bits)
    tgt = float(target)
    if not math.isfinite(tgt):
        raise ValueError(f"target bits must be finite; got {target!r}")
    if bits_range is not None and not (bits_range[0] <= tgt <= bits_range[1]):
        raise ValueError(
            f"target of {target!r} element bits is outside the reachable range "
            f"[{bits_range[0]:g}, {bits_range[1]:g}]"
        )
    if not (math.isfinite(float(lam)) and float(lam) >= 0):
        raise ValueError(f"lam must be finite and >= 0 (default {DEFAULT_LAMBDA}); got {lam!r}")
    return torch.relu(float(lam) * (_weighted_mean(t, weights) - tgt))


def dmx_objective(
    task_loss: torch.Tensor,
    bits,
    target: float,
    lam: float = DEFAULT_LAMBDA,
    weights: Sequence[float] | torch.Tensor | None = None,
    *,
    bits_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """``task_loss + bit_budget_penalty(...)``; ``FloatingPointError`` if the task loss is not finite."""
    if not bool(torch.isfinite(task_loss.detach()).all()):
        raise FloatingPointError(
            f"task loss is not finite ({task_loss.detach().flatten()[:1].tolist()}): check the "
            "inputs and the model dtype (bfloat16 overflow) before the bit penalty is added"
        )
    return task_loss + bit_budget_penalty(bits, target, lam, weights, bits_range=bits_range)
