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

Decisions where the spec is silent (docs/MX.md, "Conformance decisions"):

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

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mx_spec.blocks import block_amax, check_axis, check_block_size, from_blocks, scales_shape, to_blocks
from mx_spec.elements import (
    SUPPORTED_INPUT_DTYPES,
    Rounding,
    WorkingLayout,
    as_working,
    check_codes,
    check_rounding,
    decode_table,
    round_abs_exact,
    signed_codes,
)
from mx_spec.formats import MXFormat, get_format
from mx_spec.rne_kernel import quantize_blocks, quantize_dequantize_blocks
from mx_spec.scale import ScaleMode, check_scale_mode, e8m0_table, encode_e8m0, shared_exponent

__all__ = ["MXArray", "quantize", "dequantize", "quantize_dequantize"]

#: dequantize writes every dtype quantize reads (so quantize_dequantize returns x's dtype).
OUTPUT_DTYPES = SUPPORTED_INPUT_DTYPES


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
        fmt: an MX format name (a key of ``mx_spec.MX_FORMATS``, e.g. "mxfp4_e2m1") or an
            :class:`MXFormat`.
        block_size: elements per shared scale; default the format's (32).
        axis: the axis along which blocks run.
        scale_mode: "floor" (OCP), "ceil", "even", "rceil" (see :mod:`mx_spec.scale`).
        rounding: "rne" (OCP) or "away".

    Returns:
        :class:`MXArray` (see the module docstring for every corner case).
    """
    f, bs, arr, work, ax = _checked_call(x, fmt, block_size, axis, scale_mode, rounding)
    if rounding == "rne" and arr.size:
        # the chunked kernel works on (..., n_blocks, k) with the block axis last, zero-padded
        blocks = to_blocks(arr, ax, bs)
        scales, codes = quantize_blocks(blocks, f, bs, scale_mode, work)
        elements = from_blocks(codes, ax, arr.shape[ax])
        scales = np.ascontiguousarray(np.moveaxis(scales[..., 0], -1, ax))
    else:
        scales, elements = _quantize_general(arr, f, bs, ax, scale_mode, rounding, work)
    return MXArray(f, scales, elements, ax, bs, scale_mode, rounding)


def _checked_call(x: npt.ArrayLike, fmt: str | MXFormat, block_size: int | None, axis: int, scale_mode: str,
                  rounding: str) -> tuple[MXFormat, int, np.ndarray, WorkingLayout, int]:
    """The settings of a quantize call, validated: (format, block size, working array, its layout, axis)."""
    f = get_format(fmt)
    bs = check_block_size(f.block_size if block_size is None else block_size)
    check_scale_mode(scale_mode)
    check_rounding(rounding)
    arr, work = as_working(x)
    return f, bs, arr, work, check_axis(axis, arr.ndim)


def _quantize_general(
    arr: np.ndarray, f: MXFormat, bs: int, ax: int, scale_mode: str, rounding: str, work: WorkingLayout
) -> tuple[np.ndarray, np.ndarray]:
    """(scales, elements) the straightforward way: whole-array passes, any rounding, empty arrays.

    Used for ``rounding="away"`` and empty inputs; the tests check that the chunked RNE kernel
    (:mod:`mx_spec.rne_kernel`) is bit-identical to this path.
    """
    elem = f.element
    n = arr.shape[ax]
    blocks = to_blocks(arr, ax, bs)
    exp = shared_exponent(block_amax(blocks), elem.emax, scale_mode, mbits=elem.mbits, max_normal=elem.max_normal)
    nan_block = np.isnan(exp)
    inv_scale = np.ldexp(work.float_dtype.type(1), (-np.where(nan_block, 0, exp)).astype(np.int32))
    with np.errstate(invalid="ignore"):  # NaN/Inf blocks: their codes are set to 0 below
        a = np.abs(blocks) * inv_scale[..., None]
    np.minimum(a, work.float_dtype.type(elem.max_normal), out=a)
    _, mag = round_abs_exact(a, elem.emin, elem.mbits, rounding, work)
    codes = signed_codes(mag, np.signbit(blocks), np.zeros(1, bool), None, elem)
    codes[nan_block] = 0
    elements = from_blocks(codes, ax, n)
    scales = np.ascontiguousarray(np.moveaxis(encode_e8m0(exp), -1, ax))
    return scales, elements


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
    want = scales_shape(shape, mx.axis, mx.block_size)
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
            blocks = to_blocks(vals, ax, mx.block_size)
            blocks = blocks * np.moveaxis(scale, ax, -1)[..., None]
            out = from_blocks(blocks, ax, n)
        return out.astype(out_dt, copy=False)


def quantize_dequantize(
    x: npt.ArrayLike,
    fmt: str | MXFormat,
    *,
    block_size: int | None = None,
    axis: int = -1,
    scale_mode: ScaleMode = "floor",
    rounding: Rounding = "rne",
    return_scales: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``dequantize(quantize(x, fmt, ...), dtype=x.dtype)``: the MX-representable values of ``x``.

    Same keywords and rules as :func:`quantize`; returns ``x``'s dtype (float16/bfloat16 results
    are the exact float32 values rounded once).  With RNE it skips the codes and reads the values
    straight off the rounding primitive (bit-identical to dequantize(quantize(...)); tested).
    With ``return_scales`` also the E8M0 scale codes (uint8, laid out as ``MXArray.scales``), so a
    caller that needs the values and the scales does not encode and decode the element codes.
    """
    f, bs, arr, work, ax = _checked_call(x, fmt, block_size, axis, scale_mode, rounding)
    out_dtype = np.asarray(x).dtype
    if rounding == "rne" and arr.size:
        values, exps = quantize_dequantize_blocks(to_blocks(arr, ax, bs), f, bs, scale_mode, work)
        out = from_blocks(values, ax, arr.shape[ax]).astype(out_dtype, copy=False)
        if not return_scales:
            return out
        return out, np.ascontiguousarray(np.moveaxis(encode_e8m0(exps), -1, ax))
    mx = quantize(arr, f, block_size=bs, axis=ax, scale_mode=scale_mode, rounding=rounding)
    out = dequantize(mx, dtype=out_dtype)
    return (out, mx.scales) if return_scales else out
