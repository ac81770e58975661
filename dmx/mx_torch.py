"""MX quantisation in torch: the ``mx_spec`` rules re-implemented on tensors, on their own device.

``mx_spec`` (numpy) is the definition of the numbers; this module is a second implementation of
the same rules, written so that a calibration step needs no host round trip. It is checked like
an outside implementation: ``tests/test_mx_torch.py`` runs it through
``mx_spec.verify.verify_quantizer`` on every golden vector (all six formats, all four scale
modes, both roundings, float16/bfloat16/float32/float64 inputs, ragged blocks, NaN/Inf) and
compares it bit for bit with the numpy path on random and heavy-tailed tensors at integer and
fractional widths under both fractional scale rules.

What is mirrored, step by step (see the numpy functions named in each docstring):

* the shared exponent (``mx_spec.scale.shared_exponent``) from ``torch.frexp`` of the block
  amax (exact, subnormals too; no floating-point log2), modes floor/ceil/even/rceil, clamped to
  [-127, 127], NaN for NaN/Inf blocks;
* the element rounding (``mx_spec.elements``): the magic-number sum in the working precision
  (float32 for float16/bfloat16/float32 input, float64 for float64) on the integer bit views,
  ties to even or away; real-valued grids (fractional widths) as rint(a / step) * step in
  float64 with the same constants (computed by numpy, so ``np.exp2`` and torch agree);
* power-of-two scaling by multiplication with exact 2^k values from the E8M0 table
  (``mx_spec.scale.e8m0_table``), which equals ``np.ldexp`` (one correctly rounded result).

Blocks run along the last dimension in the functions the bridge uses (``quantize_dequantize``,
``quantize_dequantize_minifloat``); ``quantize``/``dequantize`` take any ``axis`` like
``mx_spec.quantize``. Nothing here imports ``dmx``; ``mx_spec`` never imports torch.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from mx_spec.elements import _check_grid, check_rounding, decode_table, round_to_element_grid, working_layout
from mx_spec.formats import MXFormat, get_format
from mx_spec.minifloat import E4M3_MAX_NORMAL, FRACTIONAL_SCALES, minifloat_params
from mx_spec.scale import E8M0_BIAS, E8M0_NAN, check_scale_mode, e8m0_table

__all__ = [
    "quantize",
    "dequantize",
    "quantize_dequantize",
    "quantize_dequantize_minifloat",
    "shared_exponent",
    "scale_values",
    "golden_quantizer",
    "numpy_to_tensor",
]

#: working float dtype -> (int view dtype, stored mantissa bits, exponent bias)
_LAYOUT = {torch.float32: (torch.int32, 23, 127), torch.float64: (torch.int64, 52, 1023)}
_INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _working(x: torch.Tensor) -> torch.Tensor:
    """``x`` in its working precision: float64 stays, float16/bfloat16/float32 -> float32 (exact)."""
    if x.dtype not in _INPUT_DTYPES:
        raise TypeError(f"unsupported input dtype {x.dtype}; supported: float16, bfloat16, float32, float64")
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


@functools.lru_cache(maxsize=None)
def _pow2_table(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """2^(i - 127) for i in 0..254 (E8M0 values, exact), index 255 = 1.0 (NaN blocks scale by 1)."""
    vals = np.array(e8m0_table(np.dtype(np.float64)), dtype=np.float64)
    vals[E8M0_NAN] = 1.0
    return torch.from_numpy(vals).to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=None)
def _decode_table(elem_name: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.array(decode_table(elem_name, np.dtype(np.float64)))).to(dtype=dtype, device=device)


def _pow2(exponent: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Exact 2^k (k integer tensor in [-127, 127], 0 for NaN blocks) in ``dtype``."""
    return _pow2_table(dtype, exponent.device)[(exponent + E8M0_BIAS).long()]


def scale_values(X: torch.Tensor) -> torch.Tensor:
    """Exact float32 2^X of per-block exponents (float, integer-valued, NaN for NaN blocks -> NaN).

    The values ``mx_spec.scale.decode_e8m0`` gives for the matching codes.
    """
    nan = torch.isnan(X)
    k = torch.where(nan, torch.zeros_like(X), X).to(torch.int32)
    return _pow2(k, torch.float32).masked_fill(nan, float("nan"))


# ------------------------------------------------------------------------------ shared exponent
def shared_exponent(
    amax: torch.Tensor, emax: int, mode: str = "floor", *, mbits: int | None = None,
    max_normal: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, nan)``: ``mx_spec.scale.shared_exponent`` as an int32 tensor (NaN blocks: X = 0) and its NaN mask.

    ``amax`` >= 0 (or NaN/Inf), any float dtype; ``emax`` an integer.
    """
    check_scale_mode(mode)
    nonfinite = ~torch.isfinite(amax)
    zero = amax == 0
    safe = torch.where(nonfinite | zero, torch.ones((), dtype=amax.dtype, device=amax.device), amax)
    mant, exp = torch.frexp(safe)  # exact, subnormals too
    x = exp - 1  # floor(log2 amax)
    if mode == "floor":
        x = x - int(emax)
    elif mode == "ceil":
        x = x + (mant != 0.5).to(x.dtype) - int(emax)
    elif mode == "even":
        if mbits is None:
            raise ValueError("scale_mode 'even' needs mbits (the element's mantissa bits)")
        x = x + (mant >= 1.0 - 2.0 ** -(int(mbits) + 2)).to(x.dtype) - int(emax)
    else:  # rceil
        if max_normal is None or not max_normal > 0:
            raise ValueError("scale_mode 'rceil' needs max_normal > 0 (the element's max)")
        mn, en = np.frexp(np.float64(max_normal))
        x = exp - int(en) + (mant.double() > float(mn)).to(exp.dtype)
    x = torch.where(zero, torch.full_like(x, -127), x).clamp_(-127, 127)
    return torch.where(nonfinite, torch.zeros_like(x), x), nonfinite


# ------------------------------------------------------------------------------ element rounding
def _round_abs_exact(a: torch.Tensor, emin: int, mbits: int, rounding: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(rounded magnitudes, code magnitudes) of finite clipped magnitudes ``a`` (``mx_spec.elements``)."""
    int_dtype, p, bias = _LAYOUT[a.dtype]
    e = (a.view(int_dtype) >> p) - bias
    e = torch.clamp_min(e, emin)
    magic = ((e + (p - mbits + bias)) << p).view(a.dtype)
    s = a + magic
    rounded = s - magic
    codes = ((e - emin) << mbits) + (s.view(int_dtype) & ((1 << p) - 1))
    if rounding == "away":
        step = ((e - mbits + bias) << p).view(a.dtype)
        tie = (a - rounded) * 2 == step
        rounded = torch.where(tie, rounded + step, rounded)
        codes = codes + tie.to(codes.dtype)
    return rounded, codes


def _round_real_abs(a: torch.Tensor, emin: float, mbits: float, max_normal: float, rounding: str) -> torch.Tensor:
    """``mx_spec.elements._round_real`` on magnitudes ``a``: rint(a / step) * step in float64, back in a's dtype."""
    dtype = a.dtype
    q = a.to(torch.float64, copy=True).clamp_max_(max_normal)  # a (|y|) is still needed
    step = q.view(torch.int64).bitwise_and(0x7FF0000000000000).view(torch.float64)  # 2^floor(log2 a)
    step.mul_(float(np.exp2(-mbits))).clamp_min_(float(np.exp2(emin - mbits)))
    q.div_(step)
    if rounding == "rne":
        q.round_()  # half to even
    else:
        t = torch.floor(q)
        q = t + (q - t >= 0.5).to(q.dtype)
    return q.mul_(step).clamp_max_(max_normal).to(dtype)


# ------------------------------------------------------------------------------ blocking helpers
def _blocks(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """Last axis as ``(..., n_blocks, block_size)``, zero-padded (padding never changes amax)."""
    pad = (-x.shape[-1]) % block_size
    if pad:
        x = torch.nn.functional.pad(x, (0, pad))
    return x.reshape(x.shape[:-1] + (x.shape[-1] // block_size, block_size))


def _unblocks(b: torch.Tensor, n: int) -> torch.Tensor:
    return b.reshape(b.shape[:-2] + (b.shape[-2] * b.shape[-1],))[..., :n]


def _block_amax(blocks: torch.Tensor) -> torch.Tensor:
    if blocks.numel() == 0:
        return torch.zeros(blocks.shape[:-1], dtype=blocks.dtype, device=blocks.device)
    return blocks.abs().amax(dim=-1)  # NaN propagates


def _check(block_size: int, scale_mode: str, rounding: str) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer (MX uses 32); got {block_size!r}")
    check_scale_mode(scale_mode)
    check_rounding(rounding)
    return int(block_size)


def _scaled_blocks(xw: torch.Tensor, elem, bs: int, scale_mode: str):
    """(blocks, X int32, nan mask, a = min(|blocks| * 2^-X, max_normal)) of working-precision ``xw``."""
    blocks = _blocks(xw, bs)
    X, nan = shared_exponent(_block_amax(blocks), elem.emax, scale_mode, mbits=elem.mbits,
                             max_normal=elem.max_normal)
    a = blocks.abs() * _pow2(-X, xw.dtype).unsqueeze(-1)
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
    elem = f.element
    xw = _working(x).movedim(axis, -1)
    n = xw.shape[-1]
    blocks, X, nan, a = _scaled_blocks(xw, elem, bs, scale_mode)
    _, mag = _round_abs_exact(a, elem.emin, elem.mbits, rounding)
    neg = torch.signbit(blocks)
    if elem.kind == "int":
        codes = torch.where(neg, -mag, mag) & 0xFF
    else:
        codes = mag | (neg.to(mag.dtype) << (elem.bits - 1))
    codes = torch.where(nan.unsqueeze(-1), torch.zeros_like(codes), codes)
    elements = _unblocks(codes, n).to(torch.uint8).movedim(-1, axis).contiguous()
    scales = torch.where(nan, torch.full_like(X, E8M0_NAN), X + E8M0_BIAS).to(torch.uint8)
    return scales.movedim(-1, axis).contiguous(), elements


def dequantize(
    scales: torch.Tensor, elements: torch.Tensor, fmt: str | MXFormat, *, block_size: int | None = None,
    axis: int = -1, dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Values ``element * 2^X`` (``mx_spec.quantize.dequantize``): exact in float32/float64, NaN blocks NaN."""
    f = get_format(fmt)
    bs = f.block_size if block_size is None else int(block_size)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    vals = _decode_table(f.element.name, work, elements.device)[elements.long()].movedim(axis, -1)
    n = vals.shape[-1]
    sc = scales.movedim(axis, -1).long()
    scale = _pow2_table(work, sc.device)[sc].masked_fill(sc == E8M0_NAN, float("nan"))
    out = _unblocks(_blocks(vals, bs) * scale.unsqueeze(-1), n)
    return out.movedim(-1, axis).to(dtype).contiguous()


def _chunks(n_rows: int, block_size: int, device: torch.device):
    """Row slices of a ``(n_rows, block_size)`` array: cache-sized on CPU, everything at once elsewhere.

    On CPU a dozen elementwise passes over a chunk that stays in cache beat the same passes
    streaming the whole tensor (as ``mx_spec``'s chunked kernel); a GPU wants one launch per pass.
    """
    rows = max(1, _CPU_CHUNK_ELEMENTS // block_size) if device.type == "cpu" else max(n_rows, 1)
    for r0 in range(0, n_rows, rows):
        yield slice(r0, min(r0 + rows, n_rows))


#: Elements per chunk of the CPU kernels (float64 temporaries of 512 KiB, within L2; measured best of 2^13..2^22).
_CPU_CHUNK_ELEMENTS = 1 << 16


def _round_in_place(a: torch.Tensor, emin: int, mbits: int, rounding: str) -> torch.Tensor:
    """``a`` (finite magnitudes clipped to max_normal, working precision) rounded in place.

    The magic sum of :func:`_round_abs_exact` without the codes: S = a + M, rounded = S - M.
    """
    int_dtype, p, bias = _LAYOUT[a.dtype]
    orig = a.clone() if rounding == "away" else None
    e = a.view(int_dtype) >> p  # biased exponent field
    e.clamp_min_(emin + bias)
    e.add_(p - mbits)
    e.bitwise_left_shift_(p)
    magic = e.view(a.dtype)
    a.add_(magic).sub_(magic)
    if orig is not None:
        e.sub_(p << p)  # the step 2^(E - mbits): exponent field E - mbits + bias
        step = e.view(a.dtype)
        a.add_(torch.where((orig - a) * 2 == step, step, torch.zeros((), dtype=a.dtype, device=a.device)))
    return a


def quantize_dequantize(
    x: torch.Tensor, fmt: str | MXFormat, *, block_size: int | None = None, scale_mode: str = "floor",
    rounding: str = "rne", return_scale_exponent: bool = False,
):
    """``dequantize(quantize(x))`` along the last axis, returned in ``x``'s dtype (as ``mx_spec``).

    Values straight from the rounding primitive (sign * rounded * 2^X), skipping the codes, as
    ``mx_spec.quantize._quantize_dequantize_fast`` does. With ``return_scale_exponent`` also the
    per-block X (float32, NaN for NaN blocks).
    """
    f = get_format(fmt)
    bs = _check(f.block_size if block_size is None else block_size, scale_mode, rounding)
    if x.dim() == 0:
        raise ValueError("cannot quantize a 0-d tensor: MX blocks need at least one axis")
    elem = f.element
    xw = _working(x)
    n = xw.shape[-1]
    blocks = _blocks(xw, bs)
    vals = blocks.abs()  # |x|, becomes the output in place
    X, nan = shared_exponent(_block_amax(vals), elem.emax, scale_mode, mbits=elem.mbits, max_normal=elem.max_normal)
    any_nan = bool(nan.any())
    mx = torch.tensor(elem.max_normal, dtype=xw.dtype).item()
    a2, b2 = vals.reshape(-1, bs), blocks.reshape(-1, bs)
    inv, scale = _pow2(-X, xw.dtype).reshape(-1, 1), _pow2(X, xw.dtype).reshape(-1, 1)
    nan2 = nan.reshape(-1, 1)
    for rows in _chunks(a2.shape[0], bs, a2.device):
        a = a2[rows].mul_(inv[rows]).clamp_max_(mx)
        if any_nan:
            a.masked_fill_(nan2[rows], 0.0)
        _round_in_place(a, elem.emin, elem.mbits, rounding).copysign_(b2[rows])
        if elem.kind == "int":
            a.add_(0.0)  # MXINT8 has no -0
        a.mul_(scale[rows])
        if any_nan:
            a.masked_fill_(nan2[rows], float("nan"))
    out = _unblocks(vals, n).to(x.dtype)
    if return_scale_exponent:
        return out, X.float().masked_fill(nan, float("nan"))
    return out


# ------------------------------------------------------------------------------ real-width minifloat
def _minifloat_exponent(amax: torch.Tensor, emax: float, scale_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``mx_spec.minifloat.block_scale_exponent``: X = floor(log2(amax) - emax) for a real emax."""
    if scale_mode not in ("floor", "ceil"):
        raise ValueError(f"the real-width minifloat supports scale_mode 'floor' and 'ceil' (as mx_spec); got {scale_mode!r}")
    n = float(np.floor(emax))
    f = float(emax) - n
    if f != 0.0:
        amax = amax.double() * float(np.float64(2.0 ** -f))
    return shared_exponent(amax, int(n), scale_mode)


def quantize_dequantize_minifloat(
    x: torch.Tensor, ebits: float, mbits: float, *, block_size: int = 32, scale_mode: str = "floor",
    rounding: str = "rne", max_normal_cap: float = E4M3_MAX_NORMAL,
    fractional_scale: str = FRACTIONAL_SCALES[0], return_scale_exponent: bool = False,
):
    """``mx_spec.minifloat.quantize_dequantize_minifloat`` along the last axis, bit for bit.

    Returns float64 for float64 input and float32 otherwise (as numpy); with
    ``return_scale_exponent`` also X per block (float32, NaN for NaN/Inf blocks). Works on
    magnitudes and applies the input's sign at the end (the rounding is symmetric, and y = x/2^X
    has x's sign, zeros included).
    """
    bs = _check(block_size, scale_mode, rounding)
    p = minifloat_params(ebits, mbits, max_normal_cap=max_normal_cap, fractional_scale=fractional_scale)
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension to block along")
    xw = _working(x)
    n = xw.shape[-1]
    blocks = _blocks(xw, bs)
    out = blocks.abs()  # |x|, becomes the output in place
    X, nan = _minifloat_exponent(_block_amax(out), p.scale_emax, scale_mode)
    any_nan = bool(nan.any())
    mx = torch.tensor(p.max_normal, dtype=xw.dtype).item()  # max_normal in y's precision
    exact = float(p.emin).is_integer() and float(p.mbits).is_integer()
    if exact:
        emin, mb = int(p.emin), int(p.mbits)
        _check_grid(emin, mb, p.max_normal, working_layout(np.float64 if xw.dtype == torch.float64 else np.float32))
        # max_normal on the grid: mx_spec.minifloat._with_max_normal_representable changes nothing
        fix_max = float(round_to_element_grid(np.array([mx], dtype=np.float64), emin=emin, mbits=mb,
                                              max_normal=p.max_normal)[0]) != mx
    else:
        fix_max = True
    a2, b2 = out.reshape(-1, bs), blocks.reshape(-1, bs)
    inv, scale = _pow2(-X, xw.dtype).reshape(-1, 1), _pow2(X, xw.dtype).reshape(-1, 1)
    nan2 = nan.reshape(-1, 1)
    for rows in _chunks(a2.shape[0], bs, a2.device):
        a = a2[rows].mul_(inv[rows])  # |y|, exact power-of-two scaling (= np.ldexp)
        if any_nan:
            a.masked_fill_(nan2[rows], 0.0)
        if exact:
            ay = a.clone() if fix_max else None
            aq = _round_in_place(a.clamp_max_(mx), emin, mb, rounding).clamp_max_(mx)
        else:
            ay = a
            aq = _round_real_abs(a, float(p.emin), float(p.mbits), float(p.max_normal), rounding)
        if fix_max:  # mx_spec.minifloat._with_max_normal_representable, in y's precision
            # (ay >= mx) | (|ay - mx| < |ay - aq|) sets the same values as |ay - aq| > mx - ay: for
            # ay > mx the right side is negative, and at ay == mx with aq == mx both leave mx
            d = torch.sub(ay, aq).abs_()
            aq.masked_fill_(d.gt_(torch.rsub(ay, mx)).bool(), mx)
        if aq is not a:
            a.copy_(aq)
        a.copysign_(b2[rows]).mul_(scale[rows])
        if any_nan:
            a.masked_fill_(nan2[rows], float("nan"))
    out = _unblocks(out, n)
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
    """A ``mx_spec.verify.verify_quantizer`` candidate running :func:`quantize` on ``device``.

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
