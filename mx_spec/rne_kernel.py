"""The chunked RNE kernel behind ``quantize`` and ``quantize_dequantize`` (OCP MX v1.0 §6.3).

Same rule as :func:`mx_spec.quantize._quantize_general` (the tests check they are
bit-identical), evaluated on the integer bit views of cache-sized chunks of whole blocks:
shared exponent from the amax exponent field, scaling by 2^-X, the magic-number rounding of
:func:`mx_spec.elements.magic_sum` (the one rounding implementation), then either the element
codes (:func:`quantize_blocks`) or the values straight from the rounding sum
(:func:`quantize_dequantize_blocks`, no codes).  Inputs are ``(..., n_blocks, k)`` arrays from
:func:`mx_spec.blocks.to_blocks`, RNE only.
"""
from __future__ import annotations

import numpy as np

from mx_spec.elements import WorkingLayout, magic_sum, magnitude_codes
from mx_spec.formats import ElementFormat, MXFormat
from mx_spec.scale import E8M0_MAX_EXP, E8M0_MIN_EXP, encode_e8m0, shared_exponent

__all__ = ["quantize_blocks", "quantize_dequantize_blocks"]


#: Blocks per chunk of the fast path: 1024 blocks of 32 float32 = 128 KiB per scratch buffer, so
#: the dozen passes of the kernel run in cache instead of streaming the whole array each time.
_CHUNK_ELEMENTS = 1 << 15


def chunk_exponents(amax_bits: np.ndarray, elem: ElementFormat, mode: str, work: WorkingLayout) -> np.ndarray:
    """Shared exponents X (float64, NaN for NaN/Inf amax) of a chunk's amax bit patterns.

    For "floor" X = clip(expfield - bias - emax, -127, 127), NaN when expfield is all ones: the
    exponent field is floor(log2 amax) for normal amax, and a subnormal or zero amax
    (expfield 0) has floor(log2 amax) - emax < -127 in every element type, so clamping gives
    -127 exactly as :func:`shared_exponent` does.  Other modes call :func:`shared_exponent`.
    """
    if mode != "floor":
        return shared_exponent(amax_bits.view(work.float_dtype), elem.emax, mode,
                               mbits=elem.mbits, max_normal=elem.max_normal)
    efield = (amax_bits >> work.p).astype(np.float64)
    x = np.clip(efield - (work.bias + elem.emax), E8M0_MIN_EXP, E8M0_MAX_EXP)
    x[efield == 2 * work.bias + 1] = np.nan
    return x


def run_blockwise(arr: np.ndarray, bs: int, elem: ElementFormat, mode: str, work: WorkingLayout, emit) -> np.ndarray:
    """Run the RNE kernel over ``arr`` (..., n) in cache-sized chunks of whole blocks.

    For each chunk it computes a = min(|x| * 2^-X, max_normal) and the magic sum S, E of
    :func:`mx_spec.elements.magic_sum` (the one rounding implementation), then calls
    ``emit(rows, bits, s, e, x_int, nan_rows)`` to turn them into codes or values.  Returns the
    per-block exponents X (float64, NaN for NaN/Inf blocks), shape (n_blocks_total,).
    """
    bits = np.ascontiguousarray(arr).view(work.int_dtype).reshape(-1, bs)
    n_blocks = bits.shape[0]
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // bs)
    chunk_shape = (min(rows_per_chunk, n_blocks), bs)
    scratch_a = np.empty(chunk_shape, work.int_dtype)
    # constant operands as full arrays: numpy's min/max against a broadcast scalar is slow
    emin_fill = np.full(chunk_shape, elem.emin, work.int_dtype)
    max_fill = np.full(chunk_shape, elem.max_normal, work.float_dtype)
    exps = np.empty(n_blocks, np.float64)
    abs_mask = work.int_dtype.type(np.iinfo(work.int_dtype).max)
    for r0 in range(0, n_blocks, rows_per_chunk):
        r1 = min(r0 + rows_per_chunk, n_blocks)
        rows = r1 - r0
        b = bits[r0:r1]
        absb = scratch_a[:rows]
        np.bitwise_and(b, abs_mask, out=absb)
        x = chunk_exponents(absb.max(axis=1), elem, mode, work)
        exps[r0:r1] = x
        nan_rows = np.isnan(x)
        x_int = np.where(nan_rows, 0, x).astype(np.int32)
        a = absb.view(work.float_dtype)
        # NaN/Inf blocks are scaled by 2^0 and their codes overwritten by ``emit``; a signalling
        # NaN input (quiet bit clear, e.g. built from bit patterns) raises the FP "invalid" flag
        # in this multiply, which numpy would report as a RuntimeWarning for a handled case.
        with np.errstate(invalid="ignore"):
            a *= np.ldexp(work.float_dtype.type(1), -x_int)[:, None]
        np.minimum(a, max_fill[:rows], out=a)
        s, e = magic_sum(a, elem.emin, elem.mbits, work, emin_fill[:rows])
        emit(slice(r0, r1), b, s, e, x_int, nan_rows)
    return exps


def quantize_blocks(arr: np.ndarray, f: MXFormat, bs: int, mode: str, work: WorkingLayout) -> tuple[np.ndarray, np.ndarray]:
    """(scale codes, element codes) via :func:`run_blockwise`; same rule as the general path."""
    elem = f.element
    codes = np.empty(arr.shape, np.uint8)
    codes2d = codes.reshape(-1, bs)
    sign_shift = work.int_dtype.itemsize * 8 - elem.bits

    def emit(rows, b, s, e, x_int, nan_rows):
        mag = magnitude_codes(s, e, elem.emin, elem.mbits, work)
        if elem.kind == "int":  # two's complement: -m = (m ^ -1) + 1; the uint8 cast wraps
            neg = b >> (work.int_dtype.itemsize * 8 - 1)  # -1 where the input is negative, else 0
            mag ^= neg
            mag -= neg
        else:  # sign bit of the input moved to the top of the element field
            # arithmetic shift copies the input's sign bit into bit (bits - 1) of the field
            sign = b >> sign_shift
            sign &= elem.sign_bit
            mag |= sign
        mag[nan_rows] = 0
        np.copyto(codes2d[rows], mag, casting="unsafe")

    exps = run_blockwise(arr, bs, elem, mode, work, emit)
    scales = encode_e8m0(exps).reshape(arr.shape[:-1] + (arr.shape[-1] // bs,))
    return scales, codes


def quantize_dequantize_blocks(arr: np.ndarray, f: MXFormat, bs: int, mode: str,
                               work: WorkingLayout) -> tuple[np.ndarray, np.ndarray]:
    """(values, X): values sign * (S - M) * 2^X straight from the magic sum, skipping the element
    codes (RNE only); the shared exponents X (float64, NaN for NaN/Inf blocks) shaped like ``arr``
    without its last axis."""
    elem = f.element
    out = np.empty(arr.shape, work.float_dtype)
    out2d = out.reshape(-1, bs)
    sign_mask = work.int_dtype.type(np.iinfo(work.int_dtype).min)
    bias_shift = work.p - elem.mbits + work.bias

    def emit(rows, b, s, e, x_int, nan_rows):
        e += bias_shift
        e <<= work.p
        s -= e.view(work.float_dtype)  # the rounded magnitude, exact (Sterbenz)
        sv = s.view(work.int_dtype)
        sv |= b & sign_mask  # copysign, keeps -0
        if elem.kind == "int":
            s += 0.0  # MXINT8 has no -0: -0 + 0 = +0 under RNE, other values unchanged
        with np.errstate(over="ignore"):  # beyond float32's range is Inf, as in dequantize
            s *= np.ldexp(work.float_dtype.type(1), x_int)[:, None]
        s[nan_rows] = np.nan
        out2d[rows] = s

    exps = run_blockwise(arr, bs, elem, mode, work, emit)
    return out, exps.reshape(arr.shape[:-1])
