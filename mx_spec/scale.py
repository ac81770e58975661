"""The E8M0 shared scale and the shared-exponent rules (OCP MX v1.0 §5.4.1, §6.3).

E8M0 (§5.4.1) is an unsigned 8-bit exponent: code c in 0..254 encodes 2^(c - 127); code 0xFF is
NaN; there is no zero, no sign and no Inf.  An unbiased shared exponent X therefore lies in
[-127, 127].

Shared-exponent rules, all computed exactly from the exponent bits of ``amax`` (``np.frexp``,
never a floating-point ``log2``), for ``amax = max_i |V_i|`` of a block:

``floor`` (OCP MX v1.0 §6.3, the default)
    X = floor(log2(amax)) - emax_elem.
``ceil`` (torchao ``ScaleCalculationMode.CEIL``)
    X = ceil(log2(amax)) - emax_elem, i.e. ``floor`` + 1 unless amax is a power of two.
``even`` (torchao ``ScaleCalculationMode.EVEN``)
    amax is first rounded to 1 + mbits significant bits with ties away from zero (torchao adds
    half an ulp of that precision to the float32 bit pattern and truncates), then ``floor`` is
    applied.  Equivalently X = floor + 1 exactly when amax's significand m in [1, 2) satisfies
    m >= 2 - 2^-(mbits+1).  torchao applies its bit trick to the float32 pattern; the two can
    only round a float32-subnormal amax differently, and such blocks clamp to X = -127 under
    both, so they agree on every finite float32 amax (tested).
``rceil`` (NVIDIA cuBLAS / torchao ``ScaleCalculationMode.RCEIL``)
    X = ceil(log2(amax / max_normal)), the smallest integer with amax <= max_normal * 2^X, so no
    element saturates.  Computed exactly as ea - en + [ma > mn] from amax = ma*2^ea and
    max_normal = mn*2^en (ma, mn in [0.5, 1)).  torchao evaluates ``ceil(log2(amax / max_pos))``
    in float32, whose rounded division can land on a power of two and return one less than the
    exact rule (e.g. when amax is within half a float32 ulp above max_pos * 2^k), and whose
    division underflows for float32-subnormal ratios.

Decisions where the spec is silent (documented in docs/MX.md, "Conformance decisions"):

* amax == 0 (all-zero block): floor(log2 0) = -inf, clamped to -127, so the scale code is 0.
* X is clamped to [-127, 127] in every mode; elements then underflow or saturate normally.
* amax NaN or ±Inf (a block containing NaN or Inf): the exponent is NaN here and the scale code
  is 0xFF (NaN).
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "E8M0_BIAS",
    "E8M0_NAN",
    "E8M0_MIN_EXP",
    "E8M0_MAX_EXP",
    "SCALE_MODES",
    "ScaleMode",
    "shared_exponent",
    "encode_e8m0",
    "decode_e8m0",
]

E8M0_BIAS = 127
E8M0_NAN = 0xFF
E8M0_MIN_EXP = -127
E8M0_MAX_EXP = 127

ScaleMode = Literal["floor", "ceil", "even", "rceil"]
SCALE_MODES: tuple[str, ...] = ("floor", "ceil", "even", "rceil")


def check_scale_mode(mode: str) -> str:
    """Return ``mode`` if it names a scale mode, else raise ValueError listing the valid ones."""
    if not isinstance(mode, str) or mode not in SCALE_MODES:
        raise ValueError(f"unknown scale_mode {mode!r}; valid choices: {', '.join(SCALE_MODES)}")
    return mode


def _as_float64(amax: npt.ArrayLike) -> np.ndarray:
    """amax as float64 (exact for every supported float input: f16, bf16, f32, f64)."""
    arr = np.asarray(amax)
    if arr.dtype.kind not in "fiu" and arr.dtype.name != "bfloat16":
        raise TypeError(f"amax must be a real float array, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def shared_exponent(
    amax: npt.ArrayLike,
    emax: float,
    mode: ScaleMode = "floor",
    *,
    mbits: int | None = None,
    max_normal: float | None = None,
) -> np.ndarray:
    """Unbiased shared exponent X of blocks whose largest magnitude is ``amax``.

    Args:
        amax: per-block max |V| (any float dtype, >= 0 or NaN/Inf).
        emax: exponent of the element's largest normal (OCP Table 1 ``emax_elem``).  May be
            real-valued in mode "floor" (used by the fractional-width minifloat); the result is
            then real-valued too.
        mode: "floor" (spec), "ceil", "even" (needs ``mbits``), "rceil" (needs ``max_normal``).
        mbits: element mantissa bits, for mode "even".
        max_normal: element max normal, for mode "rceil".

    Returns:
        float64 array shaped like ``amax``: integer-valued when ``emax`` is an integer, clamped
        to [-127, 127] (an all-zero block gives -127); NaN where amax is NaN or ±Inf.
    """
    check_scale_mode(mode)
    a = _as_float64(amax)
    if np.any(a < 0):
        raise ValueError("amax must be >= 0 (it is a max of absolute values)")
    nonfinite = ~np.isfinite(a)
    zero = a == 0
    safe = np.where(nonfinite | zero, 1.0, a)
    mant, exp = np.frexp(safe)  # safe = mant * 2^exp, mant in [0.5, 1): exact, subnormals too
    floor_log2 = (exp - 1).astype(np.float64)
    if mode == "floor":
        x = floor_log2 - float(emax)
    else:
        if float(emax) != int(emax):
            raise ValueError(f"scale_mode {mode!r} needs an integer emax, got {emax!r}")
        if mode == "ceil":
            x = floor_log2 + (mant != 0.5) - emax
        elif mode == "even":
            if mbits is None:
                raise ValueError("scale_mode 'even' needs mbits (the element's mantissa bits)")
            # significand 2*mant in [1, 2) rounds up to 2 iff 2*mant >= 2 - 2^-(mbits+1)
            carry = mant >= 1.0 - 2.0 ** -(int(mbits) + 2)
            x = floor_log2 + carry - emax
        else:  # rceil
            if max_normal is None or not max_normal > 0:
                raise ValueError("scale_mode 'rceil' needs max_normal > 0 (the element's max)")
            mn, en = np.frexp(np.float64(max_normal))
            x = (exp - int(en)).astype(np.float64) + (mant > mn)
    x = np.where(zero, -np.inf, x)
    x = np.clip(x, E8M0_MIN_EXP, E8M0_MAX_EXP)
    return np.where(nonfinite, np.nan, x)


def encode_e8m0(exponent: npt.ArrayLike) -> np.ndarray:
    """E8M0 codes (uint8) of unbiased exponents: X + 127; NaN -> 0xFF (§5.4.1).

    Raises:
        ValueError: an exponent is not an integer in [-127, 127] (E8M0 has no other values).
    """
    x = np.asarray(exponent, dtype=np.float64)
    nan = np.isnan(x)
    finite = x[~nan]
    if finite.size and (
        np.any(finite != np.floor(finite))
        or finite.min() < E8M0_MIN_EXP
        or finite.max() > E8M0_MAX_EXP
    ):
        raise ValueError(
            "E8M0 encodes only integer exponents in [-127, 127] (or NaN); "
            "clamp with shared_exponent first"
        )
    codes = np.where(nan, E8M0_NAN, np.where(nan, 0, x) + E8M0_BIAS)
    return codes.astype(np.uint8)


def decode_e8m0(codes: npt.ArrayLike, dtype: npt.DTypeLike = np.float64) -> np.ndarray:
    """Scale values 2^(code - 127) of E8M0 codes (any integer array 0..255); 0xFF -> NaN.

    All 255 finite values are exact in float32 (2^-127 is a float32 subnormal) and float64.
    """
    c = np.asarray(codes)
    if c.dtype.kind not in "iu":
        raise TypeError(f"E8M0 codes must be an integer array, got dtype {c.dtype}")
    if c.size and (c.min() < 0 or c.max() > 0xFF):
        raise ValueError("E8M0 codes must lie in 0..255")
    return e8m0_table(np.dtype(dtype))[c.astype(np.intp, copy=False)]


@functools.cache
def e8m0_table(dtype: np.dtype) -> np.ndarray:
    """Read-only table of the 256 E8M0 scale values in ``dtype`` (index = code)."""
    vals = np.ldexp(np.ones(256, dtype=np.float64), np.arange(256) - E8M0_BIAS)
    vals[E8M0_NAN] = np.nan
    table = vals.astype(dtype)
    table.flags.writeable = False
    return table
