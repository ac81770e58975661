"""Independent brute-force MX reference for the mx_spec unit tests.

Deliberately shares no code with ``mx_spec``: the element value tables come from ml_dtypes
(FP formats) or from the MXINT8 definition code/64 (two's complement byte), nearest values are
found by comparing against exact midpoints of the sorted table (``np.searchsorted``), and block
exponents by exact power-of-two bracketing.  Slow-ish and obvious on purpose.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

ML_DTYPES = {
    "e4m3": ml_dtypes.float8_e4m3fn,
    "e5m2": ml_dtypes.float8_e5m2,
    "e3m2": ml_dtypes.float6_e3m2fn,
    "e2m3": ml_dtypes.float6_e2m3fn,
    "e2m1": ml_dtypes.float4_e2m1fn,
}
BITS = {"e4m3": 8, "e5m2": 8, "e3m2": 6, "e2m3": 6, "e2m1": 4, "int8": 8}
# OCP MX v1.0 Table 1: emax of each element type.
EMAX = {"e4m3": 8, "e5m2": 15, "e3m2": 4, "e2m3": 2, "e2m1": 2, "int8": 0}
ELEM_OF = {
    "mxfp8_e4m3": "e4m3",
    "mxfp8_e5m2": "e5m2",
    "mxfp6_e3m2": "e3m2",
    "mxfp6_e2m3": "e2m3",
    "mxfp4_e2m1": "e2m1",
    "mxint8": "int8",
}


def code_values(elem: str) -> np.ndarray:
    """float64 value of every code 0..2^bits-1 (ml_dtypes / two's complement definition)."""
    n = 1 << BITS[elem]
    codes = np.arange(n, dtype=np.uint8)
    if elem == "int8":
        return codes.view(np.int8).astype(np.float64) / 64.0
    return codes.view(ML_DTYPES[elem]).astype(np.float64)


def positive_grid(elem: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted finite non-negative values and their codes (positive sign)."""
    vals = code_values(elem)
    half = 1 << (BITS[elem] - 1)
    codes = np.arange(half)  # sign bit clear (int8: 0..127, the non-negative integers)
    v = vals[:half]
    keep = np.isfinite(v)
    order = np.argsort(v[keep], kind="stable")
    return v[keep][order], codes[keep][order]


def nearest_codes(values: np.ndarray, elem: str, rounding: str = "rne") -> np.ndarray:
    """Codes of the grid value nearest to each (finite) value, saturating at ±max.

    Ties: "rne" picks the even code (= even last mantissa bit / even integer), "away" the larger
    magnitude.  Signed zeros keep their sign for FP; INT8 has a single zero.
    """
    v = np.asarray(values, dtype=np.float64)
    grid, gcodes = positive_grid(elem)
    a = np.minimum(np.abs(v), grid[-1])
    hi = np.clip(np.searchsorted(grid, a, side="left"), 1, grid.size - 1)
    lo = hi - 1
    mid = (grid[lo] + grid[hi]) / 2  # exact: grid values have few significant bits
    pick_hi = a > mid
    tie = a == mid
    if rounding == "rne":
        pick_hi |= tie & (gcodes[hi] % 2 == 0)
    else:
        pick_hi |= tie
    mag_idx = np.where(pick_hi, hi, lo)
    mag_idx = np.where(a == grid[lo], lo, mag_idx)
    mag = gcodes[mag_idx]
    neg = np.signbit(v)
    if elem == "int8":
        return (np.where(neg, -mag, mag) & 0xFF).astype(np.uint8)
    return (mag | (neg.astype(np.int64) << (BITS[elem] - 1))).astype(np.uint8)


def floor_log2(a: float) -> int:
    """floor(log2 a) for finite a > 0, by exact power-of-two bracketing."""
    e = math.floor(math.log2(a))
    while math.ldexp(1.0, e) > a:
        e -= 1
    while math.ldexp(1.0, e + 1) <= a:
        e += 1
    return e


def reference_block(block: np.ndarray, elem: str, rounding: str = "rne") -> tuple[int, np.ndarray]:
    """(E8M0 scale code, element codes) of one block under the OCP floor rule."""
    v = np.asarray(block, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        return 0xFF, np.zeros(v.shape, np.uint8)
    amax = float(np.max(np.abs(v))) if v.size else 0.0
    x = -127 if amax == 0 else min(max(floor_log2(amax) - EMAX[elem], -127), 127)
    return x + 127, nearest_codes(np.ldexp(v, -x), elem, rounding)
