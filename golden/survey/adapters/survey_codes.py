"""Exact conversions shared by the survey's adapters: a library's element values and float scales
to the codes the verifier compares.  Nothing is rounded: a value off the element grid or a scale
that is not an E8M0 power of two is a ValueError naming the library (the case fails with it)."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import torch

ELEMENT_DTYPES = {"mxfp4_e2m1": ml_dtypes.float4_e2m1fn, "mxfp6_e2m3": ml_dtypes.float6_e2m3fn,
                  "mxfp6_e3m2": ml_dtypes.float6_e3m2fn, "mxfp8_e4m3": ml_dtypes.float8_e4m3fn,
                  "mxfp8_e5m2": ml_dtypes.float8_e5m2}
CODE_BITS = {"mxfp4_e2m1": 4, "mxfp6_e2m3": 6, "mxfp6_e3m2": 6, "mxfp8_e4m3": 8, "mxfp8_e5m2": 8}


def to_torch(x: np.ndarray) -> torch.Tensor:
    """numpy (float32/64/16 or ml_dtypes.bfloat16) -> torch tensor of the same dtype and bits."""
    if x.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(np.ascontiguousarray(x).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(x))


def scale_codes(scale: np.ndarray, library: str, shift: int = 0) -> np.ndarray:
    """E8M0 codes of float power-of-two scales 2^(c - 127 - shift) (NaN -> 0xFF)."""
    s = np.asarray(scale, dtype=np.float64)
    out = np.full(s.shape, 0xFF, dtype=np.int64)
    ok = ~np.isnan(s)
    with np.errstate(divide="ignore", invalid="ignore"):
        mant, exp = np.frexp(np.where(ok, s, 1.0))
    e = exp - 1 + shift
    odd = ok & (mant != 0.5) & np.isfinite(s)
    if odd.any():
        raise ValueError(f"{library} scale {s[odd][0]!r} is not a power of two (not an E8M0 value)")
    out_of_range = ok & ((e < -127) | (e > 127) | ~np.isfinite(s))
    if out_of_range.any():
        raise ValueError(f"{library} scale {s[out_of_range][0]!r} is outside the E8M0 range 2^-127..2^127")
    out[ok] = e[ok] + 127
    return out.astype(np.uint8)


def element_codes(values: np.ndarray, fmt: str, library: str) -> np.ndarray:
    """Codes of values on the element grid (an exact ml_dtypes cast); off-grid -> ValueError."""
    v = np.asarray(values, dtype=np.float64)  # exact for every library's value dtype
    cast = v.astype(ELEMENT_DTYPES[fmt])
    back = cast.astype(np.float64)
    off = ~((back == v) | (np.isnan(back) & np.isnan(v)))
    if off.any():
        raise ValueError(f"{library} element value {v[off][0]!r} is not on the {fmt} grid")
    return (cast.view(np.uint8) & ((1 << CODE_BITS[fmt]) - 1)).astype(np.uint8)


def rows_of(x: np.ndarray, axis: int, block_size: int, library: str) -> tuple[np.ndarray, torch.Tensor]:
    """``x`` with the block axis moved last, and as a torch tensor of rows; ragged or empty input
    raises ``NotImplementedError`` (the libraries surveyed group whole blocks only)."""
    if x.ndim == 0 or x.size == 0 or x.shape[axis] % block_size:
        raise NotImplementedError(f"{library} quantises whole blocks of {block_size} only (no ragged or empty input)")
    moved = np.ascontiguousarray(np.moveaxis(x, axis, -1))
    return moved, to_torch(moved).reshape(-1, moved.shape[-1])


def in_input_layout(scales: np.ndarray, codes: np.ndarray, moved: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale and element codes of the moved rows, laid out like ``mx_spec.quantize``'s again."""
    s = scales.reshape(*moved.shape[:-1], -1)
    c = codes.reshape(moved.shape)
    return np.moveaxis(s, -1, axis).copy(), np.moveaxis(c, -1, axis).copy()
