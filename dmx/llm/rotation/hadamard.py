"""Hadamard matrices and the fast (normalised) Walsh-Hadamard transform for any supported size.

A Hadamard matrix ``H`` of order ``n`` has entries ±1 and ``H @ H.T = n * I``, so ``H / sqrt(n)``
is orthogonal. Orders other than 1 and 2 must be multiples of 4.

Construction (the same family of sizes QuaRot/SpinQuant support, built here from first
principles instead of a hard-coded table):

``n = 2**k * m`` with ``m`` the smallest factor for which a Paley matrix exists, and
``H_n = H_{2**k} ⊗ H_m`` (Kronecker product; a Kronecker product of Hadamard matrices is
Hadamard), where

* ``H_{2**k}`` is the Sylvester matrix ``H_1 = [1]``, ``H_{2j} = [[H_j, H_j], [H_j, -H_j]]``
  (symmetric), applied in ``O(n log n)`` by the butterfly (fast Walsh-Hadamard transform);
* ``H_m`` (``m > 2``) is a Paley matrix for a *prime* ``q`` (Paley 1933), with ``Q`` the
  Jacobsthal matrix ``Q[i, j] = legendre(j - i, q)``:

  - Paley I, ``m = q + 1``, ``q ≡ 3 (mod 4)``: ``H = I + [[0, 1ᵀ], [-1, Q]]``;
  - Paley II, ``m = 2 (q + 1)``, ``q ≡ 1 (mod 4)``: ``C = [[0, 1ᵀ], [1, Q]]`` and
    ``H = C ⊗ [[1, -1], [-1, -1]] + I ⊗ [[1, 1], [1, -1]]``;

  applied as a dense ``m x m`` product on the trailing axis.

Sizes in the supported models: SmolLM2-135M hidden 576 = 2^4·36 (36 = Paley II, q = 17) and MLP
1536 = 2^7·12 (12 = Paley I, q = 11); SmolLM2-360M 960 = 2^4·60 (Paley I, q = 59) and
2560 = 2^7·20 (Paley I, q = 19); Qwen3 MLP 3072/6144/12288 = 2^k·12; Llama-3.1-8B MLP
14336 = 2^9·28 (Paley II, q = 13); every power of two. Sizes with no such factorisation
(e.g. 9, 52 = 4·13 needs q = 25, not prime) raise ``ValueError``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

__all__ = [
    "is_power_of_two",
    "paley_order_prime",
    "hadamard_factorization",
    "supports_hadamard",
    "sylvester_matrix",
    "paley_matrix",
    "hadamard_matrix",
    "fwht",
    "hadamard_transform",
    "random_signs",
    "random_hadamard_matrix",
]


def is_power_of_two(n: int) -> bool:
    """True for 1, 2, 4, 8, ..."""
    return n >= 1 and n & (n - 1) == 0


def _is_prime(q: int) -> bool:
    if q < 2:
        return False
    return all(q % d for d in range(2, math.isqrt(q) + 1))


def paley_order_prime(m: int) -> tuple[str, int] | None:
    """``('I', q)`` / ``('II', q)`` when a Paley construction of order ``m`` exists for a prime ``q``; else None."""
    if _is_prime(m - 1) and (m - 1) % 4 == 3:
        return ("I", m - 1)
    if m % 2 == 0 and _is_prime(m // 2 - 1) and (m // 2 - 1) % 4 == 1:
        return ("II", m // 2 - 1)
    return None


@functools.lru_cache(maxsize=None)
def hadamard_factorization(n: int) -> tuple[int, int]:
    """``(2**k, m)`` with ``n = 2**k * m`` and ``m`` the smallest Paley order (1 for powers of two).

    ``ValueError`` naming the rule when ``n`` has no such factorisation.
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"Hadamard size must be a positive integer, got {n!r}")
    n = int(n)
    if is_power_of_two(n):
        return n, 1
    power = n & -n  # largest power of two dividing n
    odd = n // power
    # Try m = odd * 4, odd * 8, ... (smallest Paley order first keeps the dense part small).
    m = odd
    while m <= n:
        if m > 2 and paley_order_prime(m) is not None:
            return n // m, m
        m *= 2
    raise ValueError(
        f"no Hadamard matrix of order {n} can be built here: need n = 2^k * m with m a Paley order "
        f"(m = q + 1 with prime q ≡ 3 mod 4, or m = 2(q + 1) with prime q ≡ 1 mod 4), e.g. 12, 20, 24, "
        f"28, 36, 44, 48, 60, 72 times a power of two, or a power of two; use rotation kind 'none' for "
        f"this model or pad the dimension"
    )


def supports_hadamard(n: int) -> bool:
    """Whether :func:`hadamard_matrix` can build order ``n``."""
    try:
        hadamard_factorization(n)
    except ValueError:
        return False
    return True


def sylvester_matrix(n: int) -> np.ndarray:
    """Sylvester Hadamard matrix of order ``n`` (a power of two), int8, symmetric."""
    if not is_power_of_two(n):
        raise ValueError(f"Sylvester construction needs a power of two, got {n}")
    h = np.ones((1, 1), dtype=np.int8)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]]).astype(np.int8)
    return h


def _jacobsthal(q: int) -> np.ndarray:
    residues = np.zeros(q, dtype=np.int8)
    residues[np.unique((np.arange(1, q, dtype=np.int64) ** 2) % q)] = 1
    chi = np.where(residues == 1, 1, -1).astype(np.int8)
    chi[0] = 0  # legendre(0, q) = 0
    idx = np.arange(q, dtype=np.int64)
    return chi[(idx[None, :] - idx[:, None]) % q]


@functools.lru_cache(maxsize=None)
def paley_matrix(m: int) -> np.ndarray:
    """Paley Hadamard matrix of order ``m`` (int8); see the module docstring for the two rules."""
    found = paley_order_prime(m)
    if found is None:
        raise ValueError(f"{m} is not a Paley order for a prime q (m = q+1, q ≡ 3 mod 4, or m = 2(q+1), q ≡ 1 mod 4)")
    kind, q = found
    jac = _jacobsthal(q)
    ones = np.ones((1, q), dtype=np.int8)
    if kind == "I":
        s = np.block([[np.zeros((1, 1), dtype=np.int8), ones], [-ones.T, jac]])
        return (np.eye(m, dtype=np.int8) + s).astype(np.int8)
    c = np.block([[np.zeros((1, 1), dtype=np.int8), ones], [ones.T, jac]])
    a = np.array([[1, -1], [-1, -1]], dtype=np.int8)
    b = np.array([[1, 1], [1, -1]], dtype=np.int8)
    return (np.kron(c, a) + np.kron(np.eye(q + 1, dtype=np.int8), b)).astype(np.int8)


@functools.lru_cache(maxsize=None)
def hadamard_matrix(n: int) -> np.ndarray:
    """Hadamard matrix of order ``n`` as int8: ``H_{2**k} ⊗ H_m`` (see :func:`hadamard_factorization`)."""
    power, m = hadamard_factorization(n)
    if m == 1:
        return sylvester_matrix(power)
    return np.kron(sylvester_matrix(power), paley_matrix(m)).astype(np.int8)


#: Largest Sylvester factor applied as one dense product; larger sizes recurse (H_n = H_{n/b} ⊗ H_b).
_DENSE_BLOCK = 128


@functools.lru_cache(maxsize=None)
def _sylvester_tensor(n: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    # A cached constant must be a normal tensor even when first built under inference_mode
    # (perplexity), or later autograd use (calibration) would reject it.
    with torch.inference_mode(False):
        return torch.from_numpy(sylvester_matrix(n).astype(np.float64)).to(device=device, dtype=dtype)


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised fast Walsh-Hadamard transform along the last axis (size a power of two).

    Returns ``x @ H`` for the Sylvester matrix ``H`` (symmetric). Uses
    ``H_n = H_{n/b} ⊗ H_b`` with ``b <= 128``: the ``b``-factor is one dense (BLAS) product on
    the trailing axis and the ``n/b``-factor recurses on the leading one, so the cost is
    ``O(n * b * log_b n)`` multiply-adds, which on CPUs beats the ``log2 n`` element-wise
    butterfly stages. Differentiable, any float dtype.
    """
    n = x.shape[-1]
    if not is_power_of_two(n):
        raise ValueError(f"fwht needs a power-of-two last axis, got {n}; use hadamard_transform")
    if n <= _DENSE_BLOCK:
        return x @ _sylvester_tensor(n, x.dtype, str(x.device))
    b = _DENSE_BLOCK
    y = x.reshape(*x.shape[:-1], n // b, b) @ _sylvester_tensor(b, x.dtype, str(x.device))
    y = fwht(y.transpose(-1, -2)).transpose(-1, -2)
    return y.reshape(x.shape)


@functools.lru_cache(maxsize=None)
def _paley_tensor(m: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    with torch.inference_mode(False):  # see _sylvester_tensor
        return torch.from_numpy(paley_matrix(m).astype(np.float64)).to(device=device, dtype=dtype)


def hadamard_transform(x: torch.Tensor, *, transpose: bool = False, normalize: bool = True) -> torch.Tensor:
    """``x @ H.T`` (or ``x @ H`` with ``transpose=True``) along the last axis, divided by sqrt(n) if normalised.

    ``H = hadamard_matrix(n)``. With ``n = 2**k * m`` the last axis is viewed as ``(2**k, m)``
    (row-major, matching the Kronecker order): the Sylvester factor is applied by :func:`fwht`
    and the Paley factor as a dense ``m x m`` product.
    """
    n = x.shape[-1]
    power, m = hadamard_factorization(n)
    lead = x.shape[:-1]
    y = x
    if m > 1:
        hm = _paley_tensor(m, x.dtype, str(x.device))
        y = y.reshape(*lead, power, m) @ (hm if transpose else hm.T)
        y = y.transpose(-1, -2)  # bring the Sylvester axis last for fwht
        y = fwht(y).transpose(-1, -2).reshape(*lead, n)
    else:
        y = fwht(y)
    return y / math.sqrt(n) if normalize else y


def random_signs(n: int, seed: int) -> torch.Tensor:
    """``n`` independent ±1 signs (float64) from a seeded torch generator (the 'randomized' part)."""
    generator = torch.Generator().manual_seed(int(seed))
    bits = torch.randint(0, 2, (n,), generator=generator, dtype=torch.int64)
    return (2 * bits - 1).to(torch.float64)


def random_hadamard_matrix(n: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Orthogonal randomized Hadamard matrix ``Q = diag(s) H.T / sqrt(n)``, ``s = random_signs(n, seed)``.

    So ``x @ Q == hadamard_transform(x * s)``: the matrix used for folding and the fast online
    transform are the same rotation.
    """
    h = torch.from_numpy(hadamard_matrix(n).astype(np.float64))
    q = random_signs(n, seed)[:, None] * h.T / math.sqrt(n)
    return q.to(dtype)
