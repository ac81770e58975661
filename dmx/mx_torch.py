"""MX quantisation in torch: the ``mx_spec`` rules re-implemented on tensors, on their own device.

``mx_spec`` (numpy) is the definition of the numbers; this module is a second implementation of
the same rules, written so that a calibration step needs no host round trip. It is checked like
an outside implementation: ``tests/core/test_mx_torch.py`` runs it through
``mx_spec.conformance.verify.verify_quantizer`` on every golden vector (all six formats, all four scale
modes, both roundings, float16/bfloat16/float32/float64 inputs, ragged blocks, NaN/Inf) and
compares it bit for bit with the numpy path on random and heavy-tailed tensors at integer and
fractional widths under both fractional scale rules.

The rules are mirrored primitive by primitive (shared exponent, element rounding, power-of-two
scaling, blocking) in :mod:`dmx.mx_torch_primitives`; this module builds the conversions from
them, with mx_spec's own validation (``mx_spec.blocks.check_block_size``, the scale-mode and
rounding checks) and tables (formats, element decode table).

Blocks run along the last dimension in the functions the bridge uses (``quantize_dequantize``,
``quantize_dequantize_minifloat``); ``quantize``/``dequantize`` take any ``axis`` like
``mx_spec.quantize``. Nothing here imports ``dmx``; ``mx_spec`` never imports torch.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from dmx.mx_torch_primitives import (block_amax, from_blocks, pow2, pow2_table, round_abs_exact, round_in_place,
                                     round_real_abs, row_chunks, shared_exponent, to_blocks, working_tensor)
from mx_spec.blocks import check_axis, check_block_size
from mx_spec.elements import check_grid, check_rounding, decode_table, round_to_element_grid, working_layout
from mx_spec.formats import DEFAULT_BLOCK_SIZE, ElementFormat, MXFormat, get_format
from mx_spec.minifloat import E4M3_MAX_NORMAL, FRACTIONAL_SCALES, check_minifloat_scale_mode, minifloat_params
from mx_spec.scale import E8M0_BIAS, E8M0_NAN, check_scale_mode

__all__ = [
    "quantize",
    "dequantize",
    "quantize_dequantize",
    "quantize_dequantize_minifloat",
    "block_amax_of",
    "scale_values",
    "golden_quantizer",
    "numpy_to_tensor",
]


@functools.lru_cache(maxsize=None)
def _decode_table(elem_name: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.array(decode_table(elem_name, np.dtype(np.float64)))).to(dtype=dtype, device=device)


def scale_values(X: torch.Tensor) -> torch.Tensor:
    """Exact float32 2^X of per-block exponents (float, integer-valued, NaN for NaN blocks -> NaN).

    The values ``mx_spec.scale.decode_e8m0`` gives for the matching codes.
    """
    nan = torch.isnan(X)
    k = torch.where(nan, torch.zeros_like(X), X).to(torch.int32)
    return pow2(k, torch.float32).masked_fill(nan, float("nan"))


def _check(block_size: object, scale_mode: str, rounding: str) -> int:
    """The block size as an int, after mx_spec's own checks of the three settings."""
    check_scale_mode(scale_mode)
    check_rounding(rounding)
    return check_block_size(block_size)


def _scaled_blocks(xw: torch.Tensor, elem: ElementFormat, bs: int, scale_mode: str):
    """(blocks, X int32, nan mask, a = min(|blocks| * 2^-X, max_normal)) of working-precision ``xw``."""
    blocks = to_blocks(xw, bs)
    X, nan = shared_exponent(block_amax(blocks), elem.emax, scale_mode, mbits=elem.mbits,
                             max_normal=elem.max_normal)
    a = blocks.abs() * pow2(-X, xw.dtype).unsqueeze(-1)
    a = a.clamp_max_(torch.tensor(elem.max_normal, dtype=xw.dtype).item())
    a = torch.where(nan.unsqueeze(-1), torch.zeros((), dtype=a.dtype, device=a.device), a)
    return blocks, X, nan, a


# ------------------------------------------------------------------------------ standard formats
def quantize(
    x: torch.Tensor, fmt: str | MXFormat, *, block_size: int | None = None, axis: int = -1,
    scale_mode: str = "floor", rounding: str = "rne",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale codes, element codes)`` (uint8, laid out as ``mx_spec.quantize``'s ``MXArray``)."""
    f = get_format(fmt)
    bs = _check(f.block_size if block_size is None else block_size, scale_mode, rounding)
    if x.dim() == 0:
        raise ValueError("cannot quantize a 0-d tensor: MX blocks need at least one axis")
    axis = check_axis(axis, x.dim())
    elem = f.element
    xw = working_tensor(x).movedim(axis, -1)
    n = xw.shape[-1]
    blocks, X, nan, a = _scaled_blocks(xw, elem, bs, scale_mode)
    _, mag = round_abs_exact(a, elem.emin, elem.mbits, rounding)
    neg = torch.signbit(blocks)
    if elem.kind == "int":
        codes = torch.where(neg, -mag, mag) & 0xFF
    else:
        codes = mag | (neg.to(mag.dtype) << (elem.bits - 1))
    codes = torch.where(nan.unsqueeze(-1), torch.zeros_like(codes), codes)
    elements = from_blocks(codes, n).to(torch.uint8).movedim(-1, axis).contiguous()
    scales = torch.where(nan, torch.full_like(X, E8M0_NAN), X + E8M0_BIAS).to(torch.uint8)
    return scales.movedim(-1, axis).contiguous(), elements


def dequantize(
    scales: torch.Tensor, elements: torch.Tensor, fmt: str | MXFormat, *, block_size: int | None = None,
    axis: int = -1, dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Values ``element * 2^X`` (``mx_spec.quantize.dequantize``): exact in float32/float64, NaN blocks NaN."""
    f = get_format(fmt)
    bs = check_block_size(f.block_size if block_size is None else block_size)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    vals = _decode_table(f.element.name, work, elements.device)[elements.long()].movedim(axis, -1)
    n = vals.shape[-1]
    sc = scales.movedim(axis, -1).long()
    scale = pow2_table(work, sc.device)[sc].masked_fill(sc == E8M0_NAN, float("nan"))
    out = from_blocks(to_blocks(vals, bs) * scale.unsqueeze(-1), n)
    return out.movedim(-1, axis).to(dtype).contiguous()


def quantize_dequantize(
    x: torch.Tensor, fmt: str | MXFormat, *, block_size: int | None = None, scale_mode: str = "floor",
    rounding: str = "rne", return_scale_exponent: bool = False,
):
    """``dequantize(quantize(x))`` along the last axis, returned in ``x``'s dtype (as ``mx_spec``).

    Values straight from the rounding primitive (sign * rounded * 2^X), skipping the codes, as
    ``mx_spec.rne_kernel.quantize_dequantize_blocks`` does. With ``return_scale_exponent`` also the
    per-block X (float32, NaN for NaN blocks).
    """
    f = get_format(fmt)
    bs = _check(f.block_size if block_size is None else block_size, scale_mode, rounding)
    if x.dim() == 0:
        raise ValueError("cannot quantize a 0-d tensor: MX blocks need at least one axis")
    elem = f.element
    xw = working_tensor(x)
    n = xw.shape[-1]
    blocks = to_blocks(xw, bs)
    vals = blocks.abs()  # |x|, becomes the output in place
    X, nan = shared_exponent(block_amax(vals), elem.emax, scale_mode, mbits=elem.mbits, max_normal=elem.max_normal)
    any_nan = bool(nan.any())
    mx = torch.tensor(elem.max_normal, dtype=xw.dtype).item()
    a2, b2 = vals.reshape(-1, bs), blocks.reshape(-1, bs)
    inv, scale = pow2(-X, xw.dtype).reshape(-1, 1), pow2(X, xw.dtype).reshape(-1, 1)
    nan2 = nan.reshape(-1, 1)
    for rows in row_chunks(a2.shape[0], bs, a2.device):
        a = a2[rows].mul_(inv[rows]).clamp_max_(mx)
        if any_nan:
            a.masked_fill_(nan2[rows], 0.0)
        round_in_place(a, elem.emin, elem.mbits, rounding).copysign_(b2[rows])
        if elem.kind == "int":
            a.add_(0.0)  # MXINT8 has no -0
        a.mul_(scale[rows])
        if any_nan:
            a.masked_fill_(nan2[rows], float("nan"))
    out = from_blocks(vals, n).to(x.dtype)
    if return_scale_exponent:
        return out, X.float().masked_fill(nan, float("nan"))
    return out


# ------------------------------------------------------------------------------ real-width minifloat
def _minifloat_exponent(amax: torch.Tensor, n, factor, scale_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``mx_spec.minifloat.block_scale_exponent``: X = floor(log2(amax) - emax) for a real emax = n + f.

    ``factor`` = 2^-f (float64), or ``None`` when emax is an integer; ``n`` an int or a 0-d tensor.
    """
    if factor is not None:
        amax = amax.double() * factor  # exact: scaling by 2^-f in float64 is what mx_spec does
    return shared_exponent(amax, n, scale_mode)


def _scale_emax_parts(scale_emax: float) -> tuple[int, float | None]:
    """(n, 2^-f) of a real ``scale_emax = n + f`` (f in [0, 1)); ``None`` for an integer emax."""
    n = float(np.floor(scale_emax))
    f = float(scale_emax) - n
    return int(n), (float(np.float64(2.0 ** -f)) if f != 0.0 else None)


def minifloat_rows(
    b: torch.Tensor, inv: torch.Tensor, scale: torch.Tensor, nan: torch.Tensor | None, mx, rounding: str,
    exact_grid: tuple[int, int] | None, real_grid: tuple | None, fix_max: bool,
) -> torch.Tensor:
    """The quantised values of blocks ``b`` (rows, block_size) in working precision, a new tensor.

    ``inv``/``scale``: 2^-X and 2^X per row (rows, 1); ``nan``: the NaN rows' mask (rows, 1) or
    ``None``; ``mx``: max_normal in y's precision. The grid is ``exact_grid = (emin, mbits)``
    (integer widths: the magic-number rounding) or ``real_grid = (step_scale, step_min,
    max_normal)`` (:func:`round_real_abs`). ``fix_max``: apply
    ``mx_spec.minifloat._with_max_normal_representable``. Works on magnitudes and applies the sign
    at the end (the rounding is symmetric, and y = x/2^X has x's sign, zeros included). A pure
    function of its tensors, so that ``torch.compile`` can fuse it (``compiled=True`` below); the
    scalars may be python floats or 0-d tensors.
    """
    a = b.abs().mul_(inv)  # |y|, exact power-of-two scaling (= np.ldexp)
    if nan is not None:
        a.masked_fill_(nan, 0.0)
    if exact_grid is not None:
        aq = round_in_place(a.clamp_max(mx), exact_grid[0], exact_grid[1], rounding).clamp_max_(mx)
    else:
        aq = round_real_abs(a, *real_grid, rounding)
    if fix_max:  # mx_spec.minifloat._with_max_normal_representable, in y's precision
        # (a >= mx) | (|a - mx| < |a - aq|) sets the same values as |a - aq| > mx - a: for
        # a > mx the right side is negative, and at a == mx with aq == mx both leave mx.
        # A select on a comparison, not masked_fill_ on an in-place gt_: inductor fuses the
        # select into a blend, about twice as fast (measured)
        aq = torch.where(torch.sub(a, aq).abs_() > torch.rsub(a, mx), mx, aq)
    aq.copysign_(b).mul_(scale)
    if nan is not None:
        aq.masked_fill_(nan, float("nan"))
    return aq


def scales_from_amax(amax: torch.Tensor, n, factor, scale_mode: str, table: torch.Tensor | None = None):
    """(2^-X, 2^X per row (rows, 1), X int32, NaN mask) of blocks whose amax is ``amax`` (rows,) for
    a real scale emax = n + f (:func:`_minifloat_exponent`); ``table``: ``pow2_table`` of the
    blocks' dtype (amax has it)."""
    X, nan = _minifloat_exponent(amax, n, factor, scale_mode)
    return pow2(-X, amax.dtype, table).unsqueeze(-1), pow2(X, amax.dtype, table).unsqueeze(-1), X, nan


def block_scales(b: torch.Tensor, n, factor, scale_mode: str, table: torch.Tensor | None = None):
    """:func:`scales_from_amax` of blocks ``b`` (rows, block_size)."""
    return scales_from_amax(block_amax(b), n, factor, scale_mode, table)


def block_amax_of(x: torch.Tensor, block_size: int = DEFAULT_BLOCK_SIZE) -> torch.Tensor:
    """The amax of every block of ``x`` (along the last axis, in its working precision), as
    :func:`quantize_dequantize_minifloat` takes it (``block_amax=``) for a tensor that does not change."""
    return block_amax(to_blocks(working_tensor(x), check_block_size(block_size)))


#: dynamo recompile limit for the compiled kernels: one graph per kind of call (rounding x grid
#: exact/real x max fix x NaN blocks or none x scale mode x dtype), 32 at most; above dynamo's
#: default limit (8) a kernel would fall back to eager without a word
_COMPILED_KINDS = 32


@functools.lru_cache(maxsize=None)
def compiled_kernel(fn):
    """``fn`` under ``torch.compile`` with dynamic shapes (one kernel serves every layer's shape),
    made once per function; the ``compiled`` backend's kernels (here and ``dmx.autograd``'s sums).

    Raises dynamo's process-wide recompile limit to ``_COMPILED_KINDS`` where it is lower, once:
    patching it around every call cost about 50 us a call (measured), a tenth of a kernel's
    overhead on a small layer.
    """
    if torch._dynamo.config.recompile_limit < _COMPILED_KINDS:
        torch._dynamo.config.recompile_limit = _COMPILED_KINDS
    return torch.compile(fn, dynamic=True)


@functools.lru_cache(maxsize=64)
def _kernel_constants(emax_n, emax_factor, mx, exact_grid, real_grid, dtype, device):
    """The compiled kernels' numbers as 0-d tensors, so that a new width compiles nothing new; the
    scale factor is always applied (x 1.0 in float64 is exact), so integer and real emax share one
    graph. Cached: a layer's weight and input quantisers have the same widths (read-only tensors)."""
    def t(v, dt=None):
        return torch.tensor(v, dtype=dt, device=device)

    return (t(emax_n, torch.int32), t(1.0 if emax_factor is None else emax_factor, torch.float64), t(mx, dtype),
            None if exact_grid is None else tuple(t(v) for v in exact_grid),
            None if real_grid is None else tuple(t(v, torch.float64) for v in real_grid))


def quantize_dequantize_minifloat(
    x: torch.Tensor, ebits: float, mbits: float, *, block_size: int = DEFAULT_BLOCK_SIZE, scale_mode: str = "floor",
    rounding: str = "rne", max_normal_cap: float = E4M3_MAX_NORMAL,
    fractional_scale: str = FRACTIONAL_SCALES[0], return_scale_exponent: bool = False, compiled: bool = False,
    block_amax: torch.Tensor | None = None,
):
    """``mx_spec.minifloat.quantize_dequantize_minifloat`` along the last axis, bit for bit.

    Returns float64 for float64 input and float32 otherwise (as numpy); with
    ``return_scale_exponent`` also X per block (float32, NaN for NaN/Inf blocks). The elementwise
    work is :func:`block_scales` then :func:`minifloat_rows` (in cache-sized chunks on CPU); with
    ``compiled=True`` each is one ``torch.compile``-fused kernel over the whole tensor (the same
    functions, hence the same bits; the first call of a kind compiles, seconds to a minute).
    ``block_amax``: :func:`block_amax_of` of ``x``, kept by a caller whose ``x`` does not change
    (a frozen weight), which saves a pass over ``x``; it must be that tensor's, or the scales are wrong.
    """
    bs = _check(block_size, scale_mode, rounding)
    check_minifloat_scale_mode(scale_mode)
    p = minifloat_params(ebits, mbits, max_normal_cap=max_normal_cap, fractional_scale=fractional_scale)
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension to block along")
    xw = working_tensor(x)
    n = xw.shape[-1]
    blocks = to_blocks(xw, bs)
    mx = torch.tensor(p.max_normal, dtype=xw.dtype).item()  # max_normal in y's precision
    exact = float(p.emin).is_integer() and float(p.mbits).is_integer()
    exact_grid = real_grid = None
    if exact:
        exact_grid = (int(p.emin), int(p.mbits))
        check_grid(*exact_grid, p.max_normal, working_layout(np.float64 if xw.dtype == torch.float64 else np.float32))
        # max_normal on the grid: mx_spec.minifloat._with_max_normal_representable changes nothing
        fix_max = float(round_to_element_grid(np.array([mx], dtype=np.float64), emin=exact_grid[0],
                                              mbits=exact_grid[1], max_normal=p.max_normal)[0]) != mx
    else:
        fix_max = True
        real_grid = (float(np.exp2(-float(p.mbits))), float(np.exp2(float(p.emin) - float(p.mbits))),
                     float(p.max_normal))
    # blocks as rows, detached: no link to x's base, which dynamo would guard in the compiled
    # kernels (a weight's and an activation's base differ in rank: each kernel would compile twice)
    b2 = blocks.reshape(-1, bs).detach()
    if block_amax is not None:
        if block_amax.shape != blocks.shape[:-1] or block_amax.dtype != xw.dtype:
            raise ValueError(f"block_amax has shape {tuple(block_amax.shape)} and dtype {block_amax.dtype}; "
                             f"x's blocks need {tuple(blocks.shape[:-1])} and {xw.dtype} (block_amax_of(x, block_size))")
        amax = block_amax.reshape(-1).detach()
    emax_n, emax_factor = _scale_emax_parts(p.scale_emax)
    # the block scales from x's blocks, or from the amax the caller kept
    scales_of, source = (block_scales, b2) if block_amax is None else (scales_from_amax, amax)
    if compiled:
        dev = xw.device
        n_t, factor_t, mx_t, exact_t, real_t = _kernel_constants(emax_n, emax_factor, mx, exact_grid, real_grid,
                                                                 xw.dtype, dev)
        # two kernels: whether any block is NaN, known between them, picks the element kernel
        # without the NaN selects (the usual case)
        inv, scale, X, nan = compiled_kernel(scales_of)(source, n_t, factor_t, scale_mode,
                                                        pow2_table(xw.dtype, dev))
    else:
        inv, scale, X, nan = scales_of(source, emax_n, emax_factor, scale_mode)
    nan2 = nan.unsqueeze(-1) if bool(nan.any()) else None
    if compiled:
        out = compiled_kernel(minifloat_rows)(b2, inv, scale, nan2, mx_t, rounding, exact_t, real_t, fix_max)
    else:
        out = torch.empty_like(b2)
        for rows in row_chunks(b2.shape[0], bs, b2.device):
            out[rows] = minifloat_rows(b2[rows], inv[rows], scale[rows], None if nan2 is None else nan2[rows],
                                       mx, rounding, exact_grid, real_grid, fix_max)
    X, nan = X.reshape(blocks.shape[:-1]), nan.reshape(blocks.shape[:-1])
    out = from_blocks(out.reshape(blocks.shape), n)
    if return_scale_exponent:
        return out, X.float().masked_fill(nan, float("nan"))
    return out


# ------------------------------------------------------------------------------ verifier adapter
def numpy_to_tensor(a: np.ndarray) -> torch.Tensor:
    """A numpy array (float16/32/64 or ``ml_dtypes.bfloat16``) as a tensor with the same bits."""
    a = np.ascontiguousarray(a)
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(a.copy())


def golden_quantizer(device: str | torch.device = "cpu"):
    """A ``mx_spec.conformance.verify.verify_quantizer`` candidate running :func:`quantize` on ``device``.

    It returns the codes and, from :func:`dequantize`, the decoded float32 and float64 values, so
    the verifier checks both directions.
    """

    def fn(x, fmt, *, block_size, axis, scale_mode, rounding):
        scales, elements = quantize(numpy_to_tensor(x).to(device), fmt, block_size=block_size, axis=axis,
                                    scale_mode=scale_mode, rounding=rounding)
        out = {"scales": scales.cpu().numpy(), "elements": elements.cpu().numpy()}
        for name, dt in (("decoded_f32", torch.float32), ("decoded_f64", torch.float64)):
            out[name] = dequantize(scales, elements, fmt, block_size=block_size, axis=axis, dtype=dt).cpu().numpy()
        return out

    return fn
