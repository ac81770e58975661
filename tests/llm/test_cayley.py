"""Cayley SGD stays on the Stiefel manifold and finds the orthogonal Procrustes optimum (scipy)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from dmx.llm.rotation.cayley import CayleySGD, cayley_retraction, stiefel_error


def _orthogonal(n: int, p: int | None = None, seed: int = 0, det: float | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    if det is not None and torch.sign(torch.linalg.det(q)) != det:
        q[:, 0] = -q[:, 0]
    return q if p is None else q[:, :p]


@pytest.mark.parametrize("shape", [(32, 32), (16, 5)])
def test_stays_orthonormal_under_large_random_steps(shape):
    p = torch.nn.Parameter(_orthogonal(*shape, seed=1).float())
    opt = CayleySGD([p], lr=1.5, momentum=0.9)
    g = torch.Generator().manual_seed(2)
    start = p.detach().clone()
    for _ in range(60):
        p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    assert stiefel_error(p) < 5e-6  # float32 storage round-off only
    assert (p.detach() - start).abs().max() > 0.1  # it did move


def test_cayley_transform_of_skew_matrix_is_orthogonal():
    a = torch.randn(10, 10, dtype=torch.float64)
    a = a - a.T
    y = cayley_retraction(torch.eye(10, dtype=torch.float64), a, lr=3.0)
    assert stiefel_error(y) < 1e-12


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_converges_to_orthogonal_procrustes_solution(momentum):
    n = 6
    g = torch.Generator().manual_seed(3)
    a = torch.randn(20, n, generator=g, dtype=torch.float64)
    b = torch.randn(20, n, generator=g, dtype=torch.float64)
    reference, _ = scipy.linalg.orthogonal_procrustes(a.numpy(), b.numpy())
    det = float(np.sign(np.linalg.det(reference)))
    # Cayley steps stay in one connected component of O(n): start where the optimum lives
    x = torch.nn.Parameter(_orthogonal(n, seed=4, det=det))
    opt = CayleySGD([x], lr=0.05, momentum=momentum)
    for _ in range(300):
        opt.zero_grad()
        loss = (a @ x - b).pow(2).sum()
        loss.backward()
        opt.step()
    np.testing.assert_allclose(x.detach().numpy(), reference, atol=1e-6)
    assert stiefel_error(x) < 1e-10


def test_small_step_decreases_loss():
    g = torch.Generator().manual_seed(5)
    target = torch.randn(8, 8, generator=g, dtype=torch.float64)
    x = torch.nn.Parameter(_orthogonal(8, seed=6))
    opt = CayleySGD([x], lr=1e-3)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = (x * target).sum()  # a linear objective; Riemannian gradient is nonzero here
        loss.backward()
        losses.append(float(loss.detach()))
        opt.step()
    assert losses[0] > losses[1] > losses[2]


def test_parameters_without_gradient_are_left_alone():
    x = torch.nn.Parameter(_orthogonal(4, seed=7))
    before = x.detach().clone()
    CayleySGD([x]).step()
    assert torch.equal(x.detach(), before)


@pytest.mark.parametrize(
    "param, kwargs, match",
    [
        (torch.zeros(4), {}, "n x p"),
        (torch.zeros(3, 5), {}, "n >= p"),
        (torch.ones(4, 4), {}, "not orthonormal"),
        (torch.eye(4), {"lr": 0.0}, "lr"),
        (torch.eye(4), {"momentum": 1.0}, "momentum"),
    ],
)
def test_bad_input_is_rejected(param, kwargs, match):
    with pytest.raises(ValueError, match=match):
        CayleySGD([torch.nn.Parameter(param)], **kwargs)
