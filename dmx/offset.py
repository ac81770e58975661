"""Offset to format: map the learnable β̂ of a layer to the family offset β in [0, β_max].

Training (soft, differentiable), following the authors' code::

    β = β_max · sigmoid(s · T · (|β̂| / β_max − 1/2)),   s = 20, β_max = 2

Evaluation (hard, the deployed format is always a real MX format, one end of the family)::

    β = β_max if |β̂| > β_max / 2 else 0

``|β̂|`` makes the map even in β̂ (a sign flip of β̂ changes nothing), and the hard rule is the
``T → ∞`` limit of the soft one. Its gradient is ``sign(β̂)`` with ``sign(0) = +1``
(:func:`abs_sign_grad`, the authors' ``abs_binary_sign_grad``): every offset starts at β̂ = 0
(``dmx.calibrate.CalibrationConfig.beta_init``), where ``torch.abs`` has gradient 0 and would
freeze it for ever. ``mode="round_ste"`` replaces the soft map by the hard rule with
a straight-through gradient (``dβ/dβ̂ = sign(β̂)``): the plain round-with-STE baseline, kept to
show the oscillation it causes.

Relation of T to the paper's formula: the paper states the offset map without the factor 20,
i.e. ``2·sigmoid(T_paper·(|β̂|/2 − 1/2))``, while the authors' code multiplies the sigmoid
argument by 20. We follow the code, so ``T_paper = 20·T``: the default schedule (``dmx.anneal``)
T = 0.4 → 20 is T_paper = 8 → 400. ``sigmoid_scale`` exposes the factor (set it to 1 to use
the paper's T directly). At T = 0.4 the slope dβ/d|β̂| at |β̂| = 1 is 5·T = 2.
"""

from __future__ import annotations

import math

import torch

__all__ = ["OFFSET_MODES", "SIGMOID_SCALE", "abs_sign_grad", "offset_to_beta", "hard_beta", "check_temperature",
           "check_offset_mode"]

#: The factor 20 of the authors' code in front of T (see the module docstring).
SIGMOID_SCALE = 20.0
OFFSET_MODES = ("sigmoid", "round_ste")


class _AbsSignGrad(torch.autograd.Function):
    """``|x|`` whose gradient is ``sign(x)`` with ``sign(0) = +1`` (``torch.abs`` gives 0 at 0)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.abs()

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * torch.where(x < 0, -1.0, 1.0).to(grad_out.dtype)


def abs_sign_grad(x: torch.Tensor) -> torch.Tensor:
    """``|x|`` with gradient ``sign(x)``, ``sign(0) = +1``, so an offset at exactly 0 can move."""
    return _AbsSignGrad.apply(x)


def check_temperature(temperature: float) -> float:
    """Return ``temperature`` as a float if it is finite and > 0, else ``ValueError``."""
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a real number > 0; got {temperature!r}") from None
    if not (math.isfinite(t) and t > 0.0):
        raise ValueError(
            f"temperature must be finite and > 0 (the default schedule runs 0.4 -> 20); "
            f"got {temperature!r}"
        )
    return t


def _check_beta_hat(beta_hat: torch.Tensor) -> None:
    if not torch.is_tensor(beta_hat):
        raise TypeError(f"beta_hat must be a torch tensor; got {type(beta_hat).__name__}")
    if not bool(torch.isfinite(beta_hat.detach()).all()):
        raise FloatingPointError(
            f"beta_hat is not finite ({beta_hat.detach().flatten()[:4].tolist()}): the offset "
            "diverged; lower the learning rate or check the loss for NaN/Inf"
        )


def hard_beta(beta_hat: torch.Tensor, beta_max: float = 2.0) -> torch.Tensor:
    """Deployed offset: ``β_max`` where ``|β̂| > β_max/2``, else 0 (no gradient)."""
    _check_beta_hat(beta_hat)
    b = beta_hat.detach()
    return torch.where(b.abs() > beta_max / 2.0, torch.full_like(b, beta_max), torch.zeros_like(b))


def offset_to_beta(
    beta_hat: torch.Tensor,
    temperature: float,
    training: bool,
    *,
    mode: str = "sigmoid",
    sigmoid_scale: float = SIGMOID_SCALE,
    beta_max: float = 2.0,
) -> torch.Tensor:
    """β from β̂ (module docstring): soft sigmoid while training, hard threshold in eval.

    Raises ``FloatingPointError`` for a non-finite β̂, ``ValueError`` for a temperature that is
    not finite and > 0 or an unknown ``mode`` (valid: ``OFFSET_MODES``).
    """
    check_offset_mode(mode)
    _check_beta_hat(beta_hat)
    if not training:
        return hard_beta(beta_hat, beta_max)
    a = abs_sign_grad(beta_hat)
    if mode == "round_ste":
        return hard_beta(beta_hat, beta_max) + (a - a.detach())
    t = check_temperature(temperature)
    return beta_max * torch.sigmoid(sigmoid_scale * t * (a / beta_max - 0.5))


def check_offset_mode(mode: str) -> str:
    """``mode`` if it is one of ``OFFSET_MODES``, else ``ValueError`` listing them."""
    if mode not in OFFSET_MODES:
        raise ValueError(f"unknown offset mode {mode!r}; valid modes: {list(OFFSET_MODES)}")
    return mode
