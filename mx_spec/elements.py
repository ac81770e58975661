"""Element codecs and the one rounding primitive (OCP MX v1.0 §5, §6.3).

Rounding rule (the only one in ``mx_spec``): an already-scaled value y is rounded to the grid

    step(y) = 2^(max(floor(log2|y|), emin) - mbits)

i.e. ``mbits`` fraction bits in each binade at or above 2^emin and a fixed subnormal step below
it, with ties to even (``rounding="rne"``, the spec's §6.3 choice) or ties away from zero
(``rounding="away"``, microxcaling's default).  Magnitudes above ``max_normal`` saturate to
±max_normal (so finite inputs never produce Inf/NaN codes), magnitudes below half the smallest
subnormal become a zero of the input's sign.

Implementation (exact for integer ``emin``/``mbits``): the magnitude is first clipped to
max_normal (equivalent to clipping after rounding because max_normal is a grid point and
rounding is monotone), then the classic magic-number addition a + M with M = 2^(E - mbits + p),
p = 23 (float32) or 52 (float64), E = max(floor(log2 a), emin) taken from the exponent bits, lets
the FPU round a to a multiple of step(a) = ulp(M) with ties to even; S - M is the rounded value
(Sterbenz-exact) and the low mantissa bits of S are the multiple k, from which the element code
follows as ((E - emin) << mbits) + k.  No floating-point log2 is used.  float16 and bfloat16
inputs are widened exactly to float32; float64 inputs are processed in float64 (no double
rounding).  Real-valued ``emin``/``mbits``/``max_normal`` (the fractional-width minifloat of
``mx_spec.minifloat``) use the same rule evaluated as rint(a / step) * step in float64.

Codes (uint8): FP elements are sign-magnitude ``S|E|M`` in the low ``bits`` bits (sign = top bit
of the element field); INT8 codes are two's complement bytes of round(y * 64).

Decisions for ``encode_elements`` inputs the MX conversion never produces (quantize gives NaN/Inf
blocks a NaN scale instead): NaN encodes to the format's NaN code (sign kept) for E4M3/E5M2 and
raises ValueError for element types without NaN; ±Inf encodes to ±Inf for E5M2 and saturates to
±max_normal elsewhere (like OFP8's saturating conversion); -0 encodes to the negative-zero code
for FP elements and to 0x00 for INT8 (two's complement has no negative zero).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from mx_spec.formats import ElementFormat, get_element

__all__ = [
    "ROUNDINGS",
    "Rounding",
    "round_to_element_grid",
    "encode_elements",
    "decode_elements",
    "decode_table",
]

Rounding = Literal["rne", "away"]
ROUNDINGS: tuple[str, ...] = ("rne", "away")


def check_rounding(rounding: str) -> str:
    """Return ``rounding`` if valid, else raise ValueError naming the choices."""
    if not isinstance(rounding, str) or rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; valid choices: {', '.join(ROUNDINGS)}")
    return rounding


@dataclass(frozen=True)
class WorkingLayout:
    """Bit layout of a working float dtype (float32 or float64)."""

    float_dtype: np.dtype
    int_dtype: np.dtype
    p: int  # stored mantissa bits
    bias: int
    min_exp: int  # exponent of the smallest normal
    max_exp: int  # exponent of the largest finite binade


_F32 = WorkingLayout(np.dtype(np.float32), np.dtype(np.int32), 23, 127, -126, 127)
_F64 = WorkingLayout(np.dtype(np.float64), np.dtype(np.int64), 52, 1023, -1022, 1023)

SUPPORTED_INPUT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def working_layout(dtype: np.dtype) -> WorkingLayout:
    """Working precision of an input dtype: float64 stays float64, f16/bf16/f32 use float32.

    Raises:
        TypeError: not one of float16, bfloat16, float32, float64.
    """
    dt = np.dtype(dtype)
    if dt == np.float64:
        return _F64
    if dt.name in ("float16", "bfloat16", "float32"):
        return _F32
    raise TypeError(
        f"unsupported input dtype {dt}; supported: {', '.join(SUPPORTED_INPUT_DTYPES)} ({_conversion_hint(dt)})"
    )


def _conversion_hint(dt: np.dtype) -> str:
    """How to turn an array of the unsupported dtype ``dt`` into a supported one."""
    if dt.kind == "c":
        return "MX encodes real numbers: quantise x.real and x.imag as two arrays"
    if dt.kind in "iub":
        return "convert integers with .astype(np.float32)"
    return "convert it to a float array, e.g. np.asarray(x, dtype=np.float32)"


def as_working(values: npt.ArrayLike) -> tuple[np.ndarray, WorkingLayout]:
    """Input as a float32/float64 array (exact widening of f16/bf16) plus its bit layout."""
    arr = np.asarray(values)
    work = working_layout(arr.dtype)
    return arr.astype(work.float_dtype, copy=False), work


def _is_int(v: float) -> bool:
    return float(v).is_integer()


def check_grid(emin: int, mbits: int, max_normal: float, work: WorkingLayout) -> None:
    """The exact path's ranges: step and magic constant must be normal numbers of ``work``."""
    if mbits < 0 or mbits > work.p:
        raise ValueError(f"mbits must lie in [0, {work.p}] for {work.float_dtype}, got {mbits}")
    if not (max_normal > 0 and np.isfinite(max_normal)):
        raise ValueError(f"max_normal must be a positive finite number, got {max_normal}")
    top = int(np.frexp(max_normal)[1]) - 1
    if emin - mbits < work.min_exp or max(top, emin) - mbits + work.p > work.max_exp:
        raise ValueError(
            f"grid emin={emin}, mbits={mbits}, max_normal={max_normal} is outside what "
            f"{work.float_dtype} can round exactly; pass float64 values"
        )


def magic_sum(
    a: np.ndarray, emin: int, mbits: int, work: WorkingLayout, emin_fill: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """S = a + 2^(E - mbits + p) (rounding a to step(a) in the FPU) and E = max(floor(log2 a), emin).

    ``a`` holds non-negative magnitudes (or NaN) already clipped to max_normal; it is modified
    in place and returned as S.  The exponent field of a zero or working-subnormal ``a`` reads as
    min_exp - 1 < emin, so the max with emin gives the subnormal step exactly.  ``emin_fill``
    (optional) is an array of ``a``'s shape filled with emin: numpy's max against a full array
    is several times faster than against a broadcast scalar, which matters in the chunked kernel.
    """
    e = a.view(work.int_dtype) >> work.p
    e -= work.bias
    np.maximum(e, emin if emin_fill is None else emin_fill, out=e)
    m = e + (work.p - mbits + work.bias)
    m <<= work.p
    a += m.view(work.float_dtype)
    return a, e


def magnitude_codes(s: np.ndarray, e: np.ndarray, emin: int, mbits: int, work: WorkingLayout) -> np.ndarray:
    """Code magnitudes ((E - emin) << mbits) + k, with k the low mantissa bits of S."""
    k = s.view(work.int_dtype) & ((1 << work.p) - 1)
    e -= emin
    e <<= mbits
    e += k
    return e


def _away_ties(a_clipped: np.ndarray, rounded: np.ndarray, e: np.ndarray, mbits: int, work: WorkingLayout) -> np.ndarray:
    """Mask of magnitudes that RNE rounded down from an exact tie (ties-away rounds them up)."""
    step = ((e - mbits + work.bias) << work.p).view(work.float_dtype)
    return (a_clipped - rounded) * 2 == step


def round_abs_exact(
    a: np.ndarray, emin: int, mbits: int, rounding: str, work: WorkingLayout
) -> tuple[np.ndarray, np.ndarray]:
    """(rounded magnitudes, code magnitudes) of clipped magnitudes ``a`` (not modified)."""
    s, e = magic_sum(a.copy(), emin, mbits, work)
    m = ((e + (work.p - mbits + work.bias)) << work.p).view(work.float_dtype)
    rounded = s - m
    codes = magnitude_codes(s, e.copy(), emin, mbits, work)
    if rounding == "away":
        tie = _away_ties(a, rounded, e, mbits, work)
        step = ((e - mbits + work.bias) << work.p).view(work.float_dtype)
        rounded = np.where(tie, rounded + step, rounded)
        codes = codes + tie
    return rounded, codes


def _round_real(y: np.ndarray, emin: float, mbits: float, max_normal: float, rounding: str) -> np.ndarray:
    """Real-valued grid (fractional widths): rint(a / step) * step in float64.

    step = 2^(max(floor(log2 a), emin) - mbits) = max(2^floor(log2 a) * 2^-mbits,
    2^(emin - mbits)) (2^x is monotone); 2^floor(log2 a) is a's bit pattern with the mantissa
    cleared, so no per-element exp2/log2 is evaluated.
    """
    a = np.abs(y, dtype=np.float64)
    np.minimum(a, np.full_like(a, max_normal), out=a)  # full operand: faster than a scalar
    step = (a.view(np.int64) & np.int64(0x7FF0000000000000)).view(np.float64)  # 2^floor(log2 a)
    step *= np.exp2(-mbits)
    np.maximum(step, np.full_like(step, np.exp2(emin - mbits)), out=step)
    q = a / step
    if rounding == "rne":
        np.rint(q, out=q)
    else:
        t = np.floor(q)
        q = t + (q - t >= 0.5)
    q *= step
    np.minimum(q, np.full_like(q, max_normal), out=q)
    np.copysign(q, y, out=q)
    return q.astype(y.dtype, copy=False)


def round_to_element_grid(
    y: npt.ArrayLike,
    *,
    emin: float,
    mbits: float,
    max_normal: float,
    rounding: Rounding = "rne",
) -> np.ndarray:
    """Round already-scaled values to the element grid, saturating at ±max_normal.

    Rule: step(y) = 2^(max(floor(log2|y|), emin) - mbits), ties to even ("rne") or away from
    zero ("away"); |result| <= max_normal; the sign (also of zero) is kept; NaN stays NaN; ±Inf
    saturates.  Exact for integer ``emin``/``mbits`` (then ``max_normal`` should be a grid
    point, as it is for every MX element); real values are allowed for fractional-width
    minifloats and evaluated in float64.

    Returns:
        float32 for float16/bfloat16/float32 input, float64 for float64 input.
    """
    check_rounding(rounding)
    arr, work = as_working(y)
    if not (_is_int(emin) and _is_int(mbits)):
        return _chunked(arr, lambda c: _round_real(c, float(emin), float(mbits), float(max_normal), rounding))
    emin_i, mbits_i = int(emin), int(mbits)
    check_grid(emin_i, mbits_i, float(max_normal), work)
    mx = work.float_dtype.type(max_normal)

    def exact(chunk: np.ndarray) -> np.ndarray:
        a = np.minimum(np.abs(chunk), mx)
        rounded, _ = round_abs_exact(a, emin_i, mbits_i, rounding, work)
        np.minimum(rounded, mx, out=rounded)  # only matters for an off-grid max_normal
        return np.copysign(rounded, chunk)

    return _chunked(arr, exact)


#: Elements per chunk of elementwise kernels: temporaries of this size stay in cache.
_CHUNK = 1 << 15


def _chunked(arr: np.ndarray, fn) -> np.ndarray:
    """``fn`` applied elementwise over ``arr`` in cache-sized chunks (same result as fn(arr))."""
    if arr.size <= _CHUNK:
        return fn(arr)
    flat = arr.reshape(-1)
    out = np.empty(flat.shape, arr.dtype)
    for i in range(0, flat.size, _CHUNK):
        out[i : i + _CHUNK] = fn(flat[i : i + _CHUNK])
    return out.reshape(arr.shape)


def encode_elements(values: npt.ArrayLike, elem: str | ElementFormat, rounding: Rounding = "rne") -> np.ndarray:
    """Element codes (uint8, same shape) of already-scaled values: round, saturate, encode.

    See the module docstring for the code layout and for NaN/Inf/-0 handling.

    Raises:
        ValueError: unknown element or rounding name; NaN for an element type without NaN.
        TypeError: values are not float16/bfloat16/float32/float64.
    """
    fmt = get_element(elem)
    check_rounding(rounding)
    arr, work = as_working(values)
    a = np.abs(arr)
    nan = np.isnan(a)
    if nan.any() and fmt.nan_code is None:
        raise ValueError(
            f"element type {fmt.name!r} has no NaN encoding; "
            "MX blocks containing NaN get a NaN scale (use quantize), element types with NaN: e4m3, e5m2"
        )
    np.minimum(a, work.float_dtype.type(fmt.max_normal), out=a)
    _, mag = round_abs_exact(a, fmt.emin, fmt.mbits, rounding, work)
    return signed_codes(mag, np.signbit(arr), nan, np.isinf(arr), fmt)


def signed_codes(mag: np.ndarray, neg: np.ndarray, nan: np.ndarray, inf: np.ndarray | None, fmt: ElementFormat) -> np.ndarray:
    """Apply the sign (sign-magnitude or two's complement) and the NaN/Inf codes; -> uint8."""
    if fmt.kind == "int":
        codes = np.where(neg, -mag, mag) & 0xFF
    else:
        if fmt.nan_code is not None:
            mag = np.where(nan, fmt.nan_code, mag)
        if fmt.inf_code is not None and inf is not None:
            mag = np.where(inf, fmt.inf_code, mag)
        codes = mag | (neg.astype(mag.dtype) << (fmt.bits - 1))
    return codes.astype(np.uint8)


@functools.cache
def decode_table(elem: str | ElementFormat, dtype: np.dtype = np.dtype(np.float64)) -> np.ndarray:
    """Read-only table of the values of all 2^bits codes of ``elem`` (index = code).

    Built from the bit fields (OCP MX v1.0 §5): exponent field 0 is subnormal
    (m / 2^mbits) * 2^emin, otherwise (1 + m / 2^mbits) * 2^(e - bias); E5M2's top exponent
    field is Inf (m = 0) / NaN, E4M3's S.1111.111 is NaN; INT8 is the two's complement byte / 64.
    """
    fmt = get_element(elem)
    codes = np.arange(fmt.n_codes, dtype=np.int64)
    if fmt.kind == "int":
        vals = codes.astype(np.uint8).view(np.int8).astype(np.float64) * 2.0**-fmt.mbits
    else:
        sign = np.where(codes >> (fmt.bits - 1) & 1, -1.0, 1.0)
        efield = (codes >> fmt.mbits) & ((1 << fmt.ebits) - 1)
        mfield = codes & ((1 << fmt.mbits) - 1)
        frac = mfield / float(1 << fmt.mbits)
        mag = np.where(
            efield == 0,
            np.ldexp(frac, fmt.emin),
            np.ldexp(1.0 + frac, np.maximum(efield, 1) - fmt.bias),
        )
        if fmt.has_inf:
            top = efield == (1 << fmt.ebits) - 1
            mag = np.where(top, np.where(mfield == 0, np.inf, np.nan), mag)
        elif fmt.has_nan:
            mag = np.where((codes & ~fmt.sign_bit) == fmt.nan_code, np.nan, mag)
        vals = np.copysign(mag, sign)  # keeps the sign of zeros and NaNs
    table = vals.astype(dtype)
    table.flags.writeable = False
    return table


def check_codes(codes: npt.ArrayLike, fmt: ElementFormat) -> np.ndarray:
    """``codes`` as an integer array, validated to lie in 0..2^bits - 1."""
    c = np.asarray(codes)
    if c.dtype.kind not in "iu":
        raise TypeError(f"element codes must be an integer array (uint8), got dtype {c.dtype}")
    if c.size and (c.min() < 0 or c.max() > fmt.code_mask):
        raise ValueError(
            f"{fmt.name} codes must lie in 0..{fmt.code_mask} (sub-byte codes in the low bits), "
            f"got values in {c.min()}..{c.max()}"
        )
    return c


def decode_elements(codes: npt.ArrayLike, elem: str | ElementFormat, dtype: npt.DTypeLike = np.float32) -> np.ndarray:
    """Values of element codes (exact in float32 and float64; NaN/Inf codes decode to NaN/Inf).

    Raises:
        ValueError: unknown element name, or a code outside 0..2^bits - 1.
        TypeError: codes are not integers.
    """
    fmt = get_element(elem)
    c = check_codes(codes, fmt)
    return decode_table(fmt, np.dtype(dtype))[c]
