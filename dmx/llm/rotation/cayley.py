"""Cayley SGD: stochastic gradient descent that keeps matrices on the Stiefel manifold.

For a parameter ``X`` (``n x p``, ``p <= n``, orthonormal columns ``X^T X = I``; square
rotations are the case ``p = n``) with Euclidean gradient ``G`` of the loss, one step is
(Wen & Yin 2013, "A feasible method for optimization with orthogonality constraints"; with
momentum as in Li, Fuxin & Todorovic 2020, "Efficient Riemannian optimization on the Stiefel
manifold via the Cayley transform", the optimiser SpinQuant uses):

    M <- momentum * M + G                       (ambient momentum, M = 0 initially)
    W <- Ŵ - Ŵ^T,  Ŵ = M X^T - 1/2 X (X^T M X^T)  (skew-symmetric n x n)
    X <- (I + lr/2 W)^{-1} (I - lr/2 W) X        (Cayley transform of -lr W, applied to X)
    M <- W X                                     (momentum kept in the tangent space at X)

``W X = M - 1/2 X (X^T M + M^T X)`` is the projection of ``M`` onto the tangent space at
``X`` (the Riemannian gradient under the canonical metric when ``M = G``; for a square ``X``
it is ``1/2 (G - X G^T X)``), so small steps decrease the loss; the Cayley transform of a
skew-symmetric matrix is orthogonal, so ``X`` stays on the manifold for any step size. We solve the linear
system exactly (``torch.linalg.solve`` in float64) instead of the fixed-point iteration of Li et
al.: the matrices here are at most a few thousand wide, and the exact solve keeps
``|X^T X - I|`` at float64 round-off before the cast back to the parameter's dtype.

The default learning rate 1.5 is SpinQuant's; SpinQuant uses no momentum (our default too).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import Optimizer

__all__ = ["CayleySGD", "cayley_retraction", "stiefel_error"]


def cayley_retraction(x: torch.Tensor, a: torch.Tensor, lr: float) -> torch.Tensor:
    """``(I + lr/2 A)^{-1} (I - lr/2 A) X`` in float64 (``A`` skew-symmetric ``n x n``, ``X`` ``n x p``)."""
    n = a.shape[0]
    eye = torch.eye(n, dtype=torch.float64, device=a.device)
    half = 0.5 * float(lr) * a.to(torch.float64)
    return torch.linalg.solve(eye + half, (eye - half) @ x.to(torch.float64))


def stiefel_error(x: torch.Tensor) -> float:
    """``max |X^T X - I|`` in float64: 0 for a point on the Stiefel manifold."""
    x = x.detach().to(torch.float64)
    return float((x.T @ x - torch.eye(x.shape[1], dtype=torch.float64, device=x.device)).abs().max())


class CayleySGD(Optimizer):
    """SGD on the Stiefel manifold by the Cayley transform (module docstring gives the rule).

    ``params``: 2-D tensors with orthonormal columns (``n >= p``); ``lr`` > 0 (default 1.5,
    SpinQuant's); ``momentum`` in [0, 1). ``ValueError`` for a non-matrix, a wide matrix or a
    starting point off the manifold (``|X^T X - I| > check_tol``), naming the fix.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1.5, momentum: float = 0.0, check_tol: float = 1e-4) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        super().__init__(params, {"lr": float(lr), "momentum": float(momentum)})
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2 or p.shape[0] < p.shape[1]:
                    raise ValueError(
                        f"CayleySGD optimises n x p matrices with n >= p (orthonormal columns); got shape "
                        f"{tuple(p.shape)}. Use torch.optim.SGD for ordinary parameters"
                    )
                err = stiefel_error(p)
                if err > check_tol:
                    raise ValueError(
                        f"parameter of shape {tuple(p.shape)} is not orthonormal (|X^T X - I| = {err:.2e} > "
                        f"{check_tol}); initialise it with an orthogonal matrix (e.g. torch.linalg.qr)"
                    )

    @torch.no_grad()
    def step(self, closure=None):
        """One Cayley step for every parameter that has a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                x = p.detach().to(torch.float64)
                g = p.grad.detach().to(torch.float64)
                state = self.state[p]
                if momentum > 0:
                    buf = state.get("momentum_buffer")
                    m = g if buf is None else momentum * buf + g
                else:
                    m = g
                w_hat = m @ x.T - 0.5 * x @ (x.T @ m @ x.T)
                w = w_hat - w_hat.T
                new_x = cayley_retraction(x, w, lr)
                if momentum > 0:
                    state["momentum_buffer"] = w @ x
                p.copy_(new_x.to(p.dtype))
        return loss
