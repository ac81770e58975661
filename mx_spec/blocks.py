"""MX blocks: how an array is cut into blocks of ``block_size`` along one axis (OCP MX v1.0 §6.3).

Every blocked computation in ``mx_spec`` (quantize, the declared policies, the real-width
minifloat, the verifier's per-block views) cuts its input here, so the block axis, the ragged
last block and the shape of the per-block scales have one definition:

* the block axis is moved last and cut into ``ceil(n / block_size)`` blocks; a ragged last
  block is zero-padded (padding never changes a block's amax);
* per-block arrays (scales, exponents) have the input's shape with ``shape[axis]`` replaced by
  ``ceil(n / block_size)``.
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_block_size", "check_axis", "to_blocks", "from_blocks", "block_amax", "scales_shape"]


def check_block_size(block_size: object) -> int:
    """``block_size`` as a positive int, else a ValueError/TypeError saying what is valid."""
    if isinstance(block_size, bool) or not isinstance(block_size, numbers.Real):
        raise TypeError(f"block_size must be a positive integer (e.g. 32), got {block_size!r}")
    if not np.isfinite(float(block_size)) or float(block_size) != int(block_size):
        raise ValueError(f"block_size must be a finite positive integer (e.g. 32), got {block_size!r}")
    if int(block_size) <= 0:
        raise ValueError(f"block_size must be >= 1 (OCP MX formats use 32), got {block_size!r}")
    return int(block_size)


def check_axis(axis: object, ndim: int) -> int:
    """``axis`` normalised to 0..ndim-1, else ValueError naming the valid range."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an integer, got {axis!r}")
    if ndim == 0:
        raise ValueError("cannot quantize a 0-d array: MX blocks need at least one axis (use x.reshape(1))")
    if not -ndim <= int(axis) < ndim:
        raise ValueError(f"axis {axis} is out of range for a {ndim}-d array; valid: {-ndim}..{ndim - 1}")
    return int(axis) % ndim


def to_blocks(arr: np.ndarray, axis: int, block_size: int) -> np.ndarray:
    """View/copy of ``arr`` with ``axis`` moved last, zero-padded and split: (..., n_blocks, k)."""
    moved = np.moveaxis(arr, axis, -1)
    n = moved.shape[-1]
    pad = -n % block_size
    if pad:
        moved = np.concatenate([moved, np.zeros(moved.shape[:-1] + (pad,), moved.dtype)], axis=-1)
    return moved.reshape(moved.shape[:-1] + ((n + pad) // block_size, block_size))


def from_blocks(blocks: np.ndarray, axis: int, n: int) -> np.ndarray:
    """Inverse of :func:`to_blocks`: drop padding, move the last axis back to ``axis``."""
    flat = blocks.reshape(blocks.shape[:-2] + (blocks.shape[-2] * blocks.shape[-1],))[..., :n]
    return np.ascontiguousarray(np.moveaxis(flat, -1, axis))


def block_amax(blocks: np.ndarray) -> np.ndarray:
    """max |V| per block (NaN propagates); 0 for empty inputs."""
    if blocks.size == 0:
        return np.zeros(blocks.shape[:-1], dtype=blocks.dtype)
    return np.max(np.abs(blocks), axis=-1)


def scales_shape(shape: tuple[int, ...], axis: int, block_size: int) -> tuple[int, ...]:
    """Shape of the per-block scales of an input of ``shape`` blocked along ``axis``."""
    out = list(shape)
    out[axis] = -(-out[axis] // block_size)
    return tuple(out)
