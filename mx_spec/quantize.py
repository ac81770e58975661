"""MX block quantization (OCP MX v1.0 §6.3): ``quantize``, ``dequantize``, ``quantize_dequantize``.

Conversion of a block V_1..V_k (k = ``block_size``, along ``axis``):

1. X = shared exponent of amax = max_i |V_i| (:func:`mx_spec.scale.shared_exponent`; spec mode
   "floor": floor(log2 amax) - emax_elem from the exponent bits), clamped to [-127, 127];
   scale code = X + 127 (E8M0).
2. P_i = V_i / 2^X, rounded to the element grid (:func:`mx_spec.elements.round_to_element_grid`
   rule: RNE by default), magnitudes above max normal clamped to ±max normal, underflow to a zero
   of V_i's sign; P_i encoded as element codes.  The division by 2^X is exact in the working
   precision whenever the quotient is a normal number, and quotients below the working
   precision's normal range lie far below half of every element's smallest subnormal, so the
   result equals rounding the exact real quotient.

Decisions where the spec is silent (README "Conformance decisions"):

* all-zero block: X clamps to -127 -> scale code 0x00; elements are +0/-0 by the input's sign
  (the spec's floor(log2 0) = -inf clamps the same way).
* X outside [-127, 127]: clamped; elements then underflow / saturate as in step 2.
* a block containing NaN or ±Inf: scale code 0xFF (NaN); every element code of that block is 0
  (the spec leaves them unspecified; 0 is deterministic; verifiers ignore them).
* MXINT8: elements saturate symmetrically to ±127 (codes 0x7F / 0x81); 0x80 (-2.0) is never
  produced but decodes to -2.0.  A negative zero becomes code 0x00.
* MXFP8: finite values saturate to ±max normal (448 / 57344), never Inf/NaN.
* ragged blocks: when the length n along ``axis`` is not a multiple of ``block_size`` the last
  block holds the n mod block_size trailing elements and its scale comes from those elements
  only (conceptually zero-padded; padding never changes amax).  ``scales`` has ceil(n /
  block_size) entries along ``axis``.

Inputs: float32, float64 (processed in float64, no rounding through float32), float16 and
bfloat16 (``ml_dtypes.bfloat16``; widened exactly to float32).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mx_spec.elements import (
    _magic_sum,
    _magnitude_codes,
    _round_abs_exact,
    _signed_codes,
    _Work,
    as_working,
    check_codes,
    check_rounding,
    decode_table,
    Rounding,
)
from mx_spec.formats import MXFormat, get_format
from mx_spec.scale import (
    ScaleMode,
    check_scale_mode,
    decode_e8m0,
    e8m0_table,
    encode_e8m0,
    shared_exponent,
)

__all__ = ["MXArray", "quantize", "dequantize", "quantize_dequantize"]

OUTPUT_DTYPES = ("float16", "bfloat16", "float32", "float64")


@dataclass(frozen=True, eq=False)  # array fields: identity equality, no ambiguous ==
class MXArray:
    """An MX-quantized array.

    Attributes:
        fmt: the :class:`~mx_spec.formats.MXFormat`.
        scales: uint8 E8M0 codes; shape of the input with ``shape[axis]`` replaced by
            ceil(shape[axis] / block_size).
        elements: uint8 element codes, same shape as the input (sub-byte codes in the low bits,
            sign = top bit of the element field; MXINT8 as two's complement bytes).
        axis: the (non-negative) block axis.
        block_size: elements per block (k).
        scale_mode: the shared-exponent rule used.
        rounding: the element rounding used.
    """

    fmt: MXFormat
    scales: np.ndarray
    elements: np.ndarray
    axis: int
    block_size: int
    scale_mode: str = "floor"
    rounding: str = "rne"

    def __post_init__(self) -> None:
        # normalise once so every consumer (dequantize, pack, verifiers) sees axis in 0..ndim-1
        object.__setattr__(self, "fmt", get_format(self.fmt))
        object.__setattr__(self, "axis", check_axis(self.axis, np.ndim(self.elements)))
        object.__setattr__(self, "block_size", check_block_size(self.block_size))

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the represented array (= ``elements.shape``)."""
        return tuple(self.elements.shape)

    @property
    def n_blocks(self) -> int:
        """Number of blocks (= ``scales.size``)."""
        return int(self.scales.size)


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


def _to_blocks(arr: np.ndarray, axis: int, block_size: int) -> np.ndarray:
    """View/copy of ``arr`` with ``axis`` moved last, zero-padded and split: (..., n_blocks, k)."""
    moved = np.moveaxis(arr, axis, -1)
    n = moved.shape[-1]
    n_blocks = -(-n // block_size)
    pad = n_blocks * block_size - n
    if pad:
        moved = np.concatenate([moved, np.zeros(moved.shape[:-1] + (pad,), moved.dtype)], axis=-1)
    return moved.reshape(moved.shape[:-1] + (n_blocks, block_size))


def _from_blocks(blocks: np.ndarray, axis: int, n: int) -> np.ndarray:
    """Inverse of :func:`_to_blocks`: drop padding, move the last axis back to ``axis``."""
    flat = blocks.reshape(blocks.shape[:-2] + (blocks.shape[-2] * blocks.shape[-1],))[..., :n]
    return np.ascontiguousarray(np.moveaxis(flat, -1, axis))


def _block_amax(blocks: np.ndarray) -> np.ndarray:
    """max |V| per block (NaN propagates); 0 for empty inputs."""
    if blocks.size == 0:
        return np.zeros(blocks.shape[:-1], dtype=blocks.dtype)
    return np.max(np.abs(blocks), axis=-1)


def quantize(
    x: npt.ArrayLike,
    fmt: str | MXFormat,
    *,
    block_size: int | None = None,
    axis: int = -1,
    scale_mode: ScaleMode = "floor",
    rounding: Rounding = "rne",
) -> MXArray:
    """Quantize ``x`` to MX format ``fmt`` in blocks of ``block_size`` along ``axis``.

    Args:
        x: float16/bfloat16/float32/float64 array (any shape, empty allowed, at least 1-d).
        fmt: "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1", "mxint8" or
            an :class:`MXFormat`.
        block_size: elements per shared scale; default the format's (32).
        axis: the axis along which blocks run.
        scale_mode: "floor" (OCP), "ceil", "even", "rceil" (see :mod:`mx_spec.scale`).
        rounding: "rne" (OCP) or "away".

    Returns:
        :class:`MXArray` (see the module docstring for every corner case).
    """
    f = get_format(fmt)
    bs = check_block_size(f.block_size if block_size is None else block_size)
    check_scale_mode(scale_mode)
    check_rounding(rounding)
    arr, work = as_working(x)
    ax = check_axis(axis, arr.ndim)
    if rounding == "rne" and arr.size:
        # the chunked kernel works on (..., n_blocks, k) with the block axis last, zero-padded
        blocks = _to_blocks(arr, ax, bs)
        scales, codes = _quantize_fast(blocks, f, bs, scale_mode, work)
        elements = _from_blocks(codes, ax, arr.shape[ax])
        scales = np.ascontiguousarray(np.moveaxis(scales[..., 0], -1, ax))
    else:
        scales, elements = _quantize_general(arr, f, bs, ax, scale_mode, rounding, work)
    return MXArray(f, scales, elements, ax, bs, scale_mode, rounding)


def _quantize_general(
    arr: np.ndarray, f: MXFormat, bs: int, ax: int, scale_mode: str, rounding: str, work: _Work
) -> tuple[np.ndarray, np.ndarray]:
    """(scales, elements) the straightforward way: whole-array passes, any rounding, empty arrays.

    Used for ``rounding="away"`` and empty inputs; the tests check that the chunked RNE kernel
    is bit-identical to this path.
    """
    elem = f.element
    n = arr.shape[ax]
    blocks = _to_blocks(arr, ax, bs)
    exp = shared_exponent(_block_amax(blocks), elem.emax, scale_mode, mbits=elem.mbits, max_normal=elem.max_normal)
    nan_block = np.isnan(exp)
    inv_scale = np.ldexp(work.float_dtype.type(1), (-np.where(nan_block, 0, exp)).astype(np.int32))
    with np.errstate(invalid="ignore"):  # NaN/Inf blocks: their codes are set to 0 below
        a = np.abs(blocks) * inv_scale[..., None]
    np.minimum(a, work.float_dtype.type(elem.max_normal), out=a)
    _, mag = _round_abs_exact(a, elem.emin, elem.mbits, rounding, work)
    codes = _signed_codes(mag, np.signbit(blocks), np.zeros(1, bool), None, elem)
    codes[nan_block] = 0
    elements = _from_blocks(codes, ax, n)
    scales = np.ascontiguousarray(np.moveaxis(encode_e8m0(exp), -1, ax))
    return scales, elements


#: Blocks per chunk of the fast path: 1024 blocks of 32 float32 = 128 KiB per scratch buffer, so
#: the dozen passes of the kernel run in cache instead of streaming the whole array each time.
_CHUNK_ELEMENTS = 1 << 15


def _chunk_exponents(amax_bits: np.ndarray, elem, mode: str, work: _Work) -> np.ndarray:
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
    x = np.clip(efield - (work.bias + elem.emax), -127, 127)
    x[efield == 2 * work.bias + 1] = np.nan
    return x


def _blockwise_fast(arr: np.ndarray, bs: int, elem, mode: str, work: _Work, emit) -> np.ndarray:
    """Run the RNE kernel over ``arr`` (..., n) in cache-sized chunks of whole blocks.

    For each chunk it computes a = min(|x| * 2^-X, max_normal) and the magic sum S, E of
    :func:`mx_spec.elements._magic_sum` (the one rounding implementation), then calls
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
        x = _chunk_exponents(absb.max(axis=1), elem, mode, work)
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
        s, e = _magic_sum(a, elem.emin, elem.mbits, work, emin_fill[:rows])
        emit(slice(r0, r1), b, s, e, x_int, nan_rows)
    return exps


def _quantize_fast(arr: np.ndarray, f: MXFormat, bs: int, mode: str, work: _Work) -> tuple[np.ndarray, np.ndarray]:
    """(scale codes, element codes) via :func:`_blockwise_fast`; same rule as the general path."""
    elem = f.element
    codes = np.empty(arr.shape, np.uint8)
    codes2d = codes.reshape(-1, bs)
    sign_shift = work.int_dtype.itemsize * 8 - elem.bits

    def emit(rows, b, s, e, x_int, nan_rows):
        mag = _magnitude_codes(s, e, elem.emin, elem.mbits, work)
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

    exps = _blockwise_fast(arr, bs, elem, mode, work, emit)
    scales = encode_e8m0(exps).reshape(arr.shape[:-1] + (arr.shape[-1] // bs,))
    return scales, codes


def _quantize_dequantize_fast(arr: np.ndarray, f: MXFormat, bs: int, mode: str, work: _Work) -> np.ndarray:
    """Values sign * (S - M) * 2^X straight from the magic sum, skipping the codes (RNE only)."""
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

    _blockwise_fast(arr, bs, elem, mode, work, emit)
    return out


def _check_output_dtype(dtype: npt.DTypeLike) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in OUTPUT_DTYPES:
        raise TypeError(f"unsupported output dtype {dtype!r}; supported: {', '.join(OUTPUT_DTYPES)}")
    return dt


def _check_scales(mx: MXArray) -> None:
    """``mx.scales`` must be uint8 with ceil(n / block_size) entries along the block axis."""
    shape = mx.elements.shape
    want = shape[: mx.axis] + (-(-shape[mx.axis] // mx.block_size),) + shape[mx.axis + 1 :]
    sc = np.asarray(mx.scales)
    if sc.dtype != np.uint8 or sc.shape != want:
        raise ValueError(
            f"MXArray scales must be uint8 E8M0 codes of shape {want} for elements {shape}, "
            f"axis {mx.axis}, block_size {mx.block_size}; got {sc.dtype} {sc.shape}"
        )


def dequantize(mx: MXArray, dtype: npt.DTypeLike = np.float32) -> np.ndarray:
    """Values element * 2^X of an :class:`MXArray`, as ``dtype`` (float16/bfloat16/float32/float64).

    The product is exact in float32 and float64 (at most 7 significant bits, exponent >= -149)
    except that magnitudes beyond float32's range overflow to Inf in float32; float16/bfloat16
    results are that exact value rounded once (RNE).  NaN-scale blocks decode to NaN.
    """
    if not isinstance(mx, MXArray):
        raise TypeError(f"dequantize expects an MXArray (from quantize), got {type(mx).__name__}")
    out_dt = _check_output_dtype(dtype)
    _check_scales(mx)
    work_dt = np.dtype(np.float64) if out_dt == np.float64 else np.dtype(np.float32)
    elem = mx.fmt.element
    codes = check_codes(mx.elements, elem)
    vals = decode_table(elem, work_dt)[codes]
    scale = e8m0_table(work_dt)[mx.scales]
    ax = mx.axis
    n = vals.shape[ax] if vals.ndim else 0
    with np.errstate(over="ignore"):  # beyond float32's range is Inf, as documented
        if ax == vals.ndim - 1 and n % mx.block_size == 0 and vals.size:
            blocks = vals.reshape(scale.shape + (mx.block_size,))
            blocks *= scale[..., None]
            out = vals
        else:
            blocks = _to_blocks(vals, ax, mx.block_size)
            blocks = blocks * np.moveaxis(scale, ax, -1)[..., None]
            out = _from_blocks(blocks, ax, n)
        return out.astype(out_dt, copy=False)


def quantize_dequantize(
    x: npt.ArrayLike,
    fmt: str | MXFormat,
    *,
    block_size: int | None = None,
    axis: int = -1,
    scale_mode: ScaleMode = "floor",
    rounding: Rounding = "rne",
) -> np.ndarray:
    """``dequantize(quantize(x, fmt, ...), dtype=x.dtype)``: the MX-representable values of ``x``.

    Same keywords and rules as :func:`quantize`; returns ``x``'s dtype (float16/bfloat16 results
    are the exact float32 values rounded once).  With RNE it skips the codes and reads the values
    straight off the rounding primitive (bit-identical to dequantize(quantize(...)); tested).
    """
    f = get_format(fmt)
    bs = check_block_size(f.block_size if block_size is None else block_size)
    check_scale_mode(scale_mode)
    check_rounding(rounding)
    arr, work = as_working(x)
    out_dtype = np.asarray(x).dtype
    ax = check_axis(axis, arr.ndim)
    if rounding == "rne" and arr.size:
        values = _quantize_dequantize_fast(_to_blocks(arr, ax, bs), f, bs, scale_mode, work)
        return _from_blocks(values, ax, arr.shape[ax]).astype(out_dtype, copy=False)
    mx = quantize(arr, f, block_size=bs, axis=ax, scale_mode=scale_mode, rounding=rounding)
    return dequantize(mx, dtype=out_dtype)
