"""Hadamard constructions and the fast transform, checked against scipy and against the definition.

A matrix with entries ±1 and ``H H^T = n I`` *is* a Hadamard matrix by definition, so that
property (computed here with float64 BLAS, independent of our construction) is the proof for
the Paley/Kronecker sizes; for powers of two ``scipy.linalg.hadamard`` is the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from dmx.llm.rotation.hadamard import (
    fwht,
    hadamard_factorization,
    hadamard_matrix,
    hadamard_transform,
    paley_matrix,
    random_hadamard_matrix,
    random_signs,
    supports_hadamard,
)


def _assert_hadamard(h: np.ndarray) -> None:
    n = h.shape[0]
    assert h.shape == (n, n)
    assert set(np.unique(h).tolist()) <= {-1, 1}
    f = h.astype(np.float64)
    np.testing.assert_array_equal(f @ f.T, n * np.eye(n))


@pytest.mark.parametrize("n", [1, 2, 4, 8, 64, 256])
def test_power_of_two_matrix_is_scipy_sylvester(n):
    np.testing.assert_array_equal(hadamard_matrix(n), scipy.linalg.hadamard(n))


@pytest.mark.parametrize("n", [2, 16, 128, 1024])
def test_fwht_matches_scipy_matrix_product(n):
    x = torch.randn(3, 5, n, dtype=torch.float64)
    expected = x @ torch.from_numpy(scipy.linalg.hadamard(n).astype(np.float64))
    torch.testing.assert_close(fwht(x), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("m", [12, 20, 24, 28, 36, 44, 48, 60, 72])
def test_paley_factors_are_hadamard(m):
    _assert_hadamard(paley_matrix(m))


@pytest.mark.parametrize(
    "n, factors",
    [(576, (16, 36)), (1536, (128, 12)), (960, (16, 60)), (2560, (128, 20)), (3072, (256, 12)),
     (14336, (512, 28)), (12, (1, 12)), (4096, (4096, 1))],
)
def test_factorisation_of_model_sizes(n, factors):
    assert hadamard_factorization(n) == factors


@pytest.mark.parametrize("n", [12, 24, 576, 1536, 960])
def test_model_sizes_are_hadamard(n):
    _assert_hadamard(hadamard_matrix(n))


@pytest.mark.parametrize("n", [12, 64, 576, 1536])
def test_fast_transform_equals_dense_matrix(n):
    h = torch.from_numpy(hadamard_matrix(n).astype(np.float64))
    x = torch.randn(4, n, dtype=torch.float64)
    torch.testing.assert_close(hadamard_transform(x), x @ h.T / n**0.5, rtol=0, atol=1e-10)
    torch.testing.assert_close(hadamard_transform(x, transpose=True), x @ h / n**0.5, rtol=0, atol=1e-10)
    torch.testing.assert_close(hadamard_transform(x, normalize=False), x @ h.T, rtol=0, atol=1e-9)
    # orthogonal: norms kept, transpose undoes it
    torch.testing.assert_close(hadamard_transform(x).norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(hadamard_transform(hadamard_transform(x), transpose=True), x)


def test_fast_transform_is_differentiable_and_keeps_dtype():
    x = torch.randn(2, 576, dtype=torch.float32, requires_grad=True)
    y = hadamard_transform(x)
    assert y.dtype == torch.float32
    y.pow(2).sum().backward()  # ||x Q||^2 = ||x||^2, so the gradient is 2x
    torch.testing.assert_close(x.grad, 2 * x.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [64, 576])
def test_random_hadamard_is_orthogonal_and_matches_fast_path(n):
    q = random_hadamard_matrix(n, seed=7)
    torch.testing.assert_close(q @ q.T, torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-12)
    s = random_signs(n, 7)
    assert set(s.unique().tolist()) == {-1.0, 1.0}
    x = torch.randn(3, n, dtype=torch.float64)
    torch.testing.assert_close(x @ q, hadamard_transform(x * s), rtol=0, atol=1e-10)
    assert not torch.equal(random_signs(n, 8), s)  # the seed matters


@pytest.mark.parametrize("n", [3, 6, 9, 52, 0, -4])
def test_unsupported_sizes_raise_with_the_rule(n):
    assert not supports_hadamard(n)
    with pytest.raises(ValueError, match="Hadamard"):
        hadamard_factorization(n)


def test_fwht_rejects_non_power_of_two():
    with pytest.raises(ValueError, match="power-of-two"):
        fwht(torch.zeros(12))


def test_constants_cached_under_inference_mode_still_work_with_autograd():
    n = 96  # 2^3 * 12: both cached factors (a size no other test uses first)
    with torch.inference_mode():
        hadamard_transform(torch.randn(2, n))  # perplexity runs like this, and may come first
    x = torch.randn(2, n, requires_grad=True)
    hadamard_transform(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
