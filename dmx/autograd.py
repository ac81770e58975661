r"""Torch autograd bridge over ``mx_spec``: MX quantize-dequantize with gradients to x, E and M.

The forward has three backends with the same bits (``backend=``, ``BACKENDS``): ``"numpy"`` calls
the numpy ``mx_spec`` (``quantize_dequantize`` for the standard formats,
``mx_spec.minifloat.quantize_dequantize_minifloat`` for real widths), the definition of the
numbers; ``"torch"`` (the default, chosen by measurement: docs/BACKENDS.md) runs
``dmx.mx_torch``, a second implementation of the same rules on the tensor's own device, which the
golden vectors and bit-equality tests hold to ``mx_spec``; ``"compiled"`` runs the same
``dmx.mx_torch`` functions fused by ``torch.compile`` at real widths (one kernel per operand
instead of a dozen passes; needs a C++ compiler on CPU, Triton on a GPU, and compiles once per
kind of call). The backward below is one closed form: numpy and torch share its eager sums
(:func:`_width_sums`), compiled fuses the same sums (:func:`fused_width_sums`), equal to float
rounding. The rest of this paragraph describes the numpy backend. Inputs are ``float32`` or ``bfloat16`` tensors of any
shape on any device, blocked along the last dimension (the reduction dimension of a linear layer, so that a
matmul of two MX operands reads one scale per block of both). float32 crosses to numpy without a
copy; bfloat16 is widened exactly to float32 and the result rounded back (MX values with at most
3 mantissa bits are exact in bfloat16; fractional-width values are rounded once). Tensors on an
accelerator make a round trip through host memory for the forward (the numpy model is the single
source of MX rounding, so a GPU runs the same bits, only slower); the backward stays on the
tensor's device.

Notation (per block, see ``mx_spec.minifloat``): scale ``s = 2**X``, ``X = floor(log2 amax -
emax)``; scaled value ``y = x/s``; grid step ``Δ(y) = 2**(max(floor(log2|y|), emin) - M)``;
``x̂ = s·clip(Δ·round(y/Δ), ±max_normal)``; ``emax = 2**(E-1)``, ``emin = 2 - 2**(E-1)``,
``max_normal = (2 - 2**-M)·2**emax`` (capped at 448).

Gradient with respect to x (straight-through)
---------------------------------------------
``∂x̂/∂x = 1`` where ``|x| <= s·max_normal`` (the rounding is treated as identity), ``0`` where
``|x| > s·max_normal``: outside the representable range the output is the constant
``±s·max_normal``, so the clipped-STE (as in PACT/LSQ) passes no gradient; the error those
elements make reaches β instead, through ``max_normal``. The block scale is treated as a
constant (it is piecewise constant in x).

Gradient with respect to the widths (closed form)
------------------------------------------------
Three things depend on (E, M): the grid step, the max value and the scale. Work in units of x.

*Grid step.* Inside the range ``x̂ = D·k``, ``k = round(x/D)``, with the step in units of x
``D = s·Δ(y)``. With the straight-through rule for ``round`` (the LSQ step-size gradient)
``∂x̂/∂D = k - x/D = (x̂ - x)/D``, so every width enters through ``log2 D``:
``∂x̂/∂θ = ln2·(x̂ - x)·∂log2(D)/∂θ``.

* normal values: ``D = 2**(floor(log2|x|) - M)`` because ``s`` is a power of two: it does not
  depend on E or on the scale, ``∂log2 D/∂M = -1``;
* subnormal values (``floor(log2|y|) < emin``, i.e. ``|y| < 2**ceil(emin)``):
  ``D = 2**(X + emin - M)``, ``∂log2 D/∂M = -1``, ``∂log2 D/∂E = ∂X/∂E + ∂emin/∂E``.

*Scale.* ``X = floor(log2 amax - emax)`` is piecewise constant; its a.e. derivative 0 would
only ever see the max value grow with E and never the drop of ``s`` by one binade each time
``emax`` passes an integer offset, a bias towards "more E always clips less". We use the
straight-through rule for this floor too: ``∂X/∂E = -∂emax/∂E = -ln2·2**(E-1)``, which makes
the *expected* clip level ``s·max_normal`` relative to ``amax`` independent of E, as it is on
average over the sawtooth. With ``∂emin/∂E = -ln2·2**(E-1)`` as well,
``∂log2 D/∂E = -2·ln2·2**(E-1)`` for subnormal values.

*Max value.* Saturated elements ``x̂ = sign(x)·s·max_normal``:
``∂x̂/∂M = sign(x)·s·ln2·2**(emax - M)`` and
``∂x̂/∂E = sign(x)·s·max_normal·ln2·(∂log2(max_normal)/∂E + ∂X/∂E)``, where
``∂log2(max_normal)/∂E = ln2·2**(E-1)`` cancels ``∂X/∂E`` unless the 448 cap is active (then
``max_normal`` is constant and only the shrinking scale remains). Together::

                        ∂x̂/∂M                          ∂x̂/∂E
    normal, in range    ln2·(x - x̂)                    0
    subnormal           ln2·(x - x̂)                    2·ln2²·2**(E-1)·(x - x̂)
    saturated           sign·s·ln2·2**(emax-M)          0   (capped: -sign·s·448·ln2²·2**(E-1))

(0 for the M column of saturated elements while the cap is active). ``dL/dβ`` follows by the
chain rule through the family's ``E(β)``, ``M(β)`` and the offset map. These are exactly the
derivatives of a *smoothed* quantizer in which rounding is replaced by a fixed uniform
perturbation (``x̂ = x + u·D``, ``u ~ U(-1/2, 1/2)``) and the scale floor by the identity
(the pseudo-quantisation-noise model); for the squared error, where hard rounding errors are
spread like ``u·D``, the two agree in expectation. ``tests/core/test_autograd.py`` checks this
against finite differences of an independently written smoothed quantizer.
"""

from __future__ import annotations

import functools
import importlib.util
import math

import numpy as np
import torch

from dmx import mx_torch
from dmx.mx_torch_primitives import from_blocks, to_blocks
from mx_spec.blocks import check_block_size
from mx_spec.formats import DEFAULT_BLOCK_SIZE, get_format
from mx_spec.minifloat import E4M3_MAX_NORMAL, FRACTIONAL_SCALES, minifloat_params, quantize_dequantize_minifloat
from mx_spec.quantize import quantize_dequantize
from mx_spec.scale import decode_e8m0

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "SUPPORTED_DTYPES", "check_backend", "check_tensor", "mx_qdq_minifloat",
           "mx_qdq_standard"]

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16)
#: Forward implementations: ``numpy`` (``mx_spec`` on a host copy), ``torch`` (``dmx.mx_torch`` on
#: the tensor's device, bit-identical, checked by the golden vectors) and ``compiled`` (the same
#: functions fused by ``torch.compile``; same bits). The backward's closed form is shared.
BACKENDS = ("numpy", "torch", "compiled")
#: ``torch``: same bits, no host round trip, faster than numpy on the calibration path, and no
#: compiler or compile wait (docs/BACKENDS.md).
DEFAULT_BACKEND = "torch"


def check_backend(backend: str, device_type: str | None = None) -> str:
    """``backend`` if it names a bridge backend that can run on ``device_type`` (when given), else
    ``ValueError`` listing the valid ones or saying what the compiled backend lacks here."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown MX backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    if backend == "compiled" and device_type is not None:
        problem = _compiled_backend_problem(device_type)
        if problem:
            raise ValueError(f"MX backend 'compiled' cannot run on {device_type} here: {problem}; "
                             "use backend 'torch' (the same bits, no compiler needed)")
    return backend


@functools.lru_cache(maxsize=None)
def _compiled_backend_problem(device_type: str) -> str | None:
    """What ``torch.compile`` lacks on ``device_type`` on this machine (None: nothing known)."""
    if device_type == "cuda":
        return None if importlib.util.find_spec("triton") else "torch.compile on a GPU needs Triton (pip install triton)"
    if device_type == "cpu":
        # imported here, as torch.compile does: torch._inductor costs over a second at import
        from torch._inductor import cpp_builder

        try:
            cpp_builder.get_cpp_compiler()
        except Exception as err:  # inductor's own search; its error names what it looked for
            return f"torch.compile on a CPU needs a C++ compiler ({err})"
    return None


_LN2 = math.log(2.0)


def check_tensor(x: torch.Tensor, what: str = "input") -> None:
    """``TypeError``/``ValueError`` unless ``x`` is a float32/bfloat16 tensor with data and >= 1 dim."""
    if not torch.is_tensor(x):
        raise TypeError(f"{what} must be a torch.Tensor; got {type(x).__name__}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{what} has dtype {x.dtype}; the MX bridge supports torch.float32 and "
            "torch.bfloat16 (convert with .float() or .to(torch.bfloat16))"
        )
    if x.device.type == "meta":
        raise ValueError(
            f"{what} is a meta tensor (no data); load the weights before quantising "
            "(e.g. without init_empty_weights, or with accelerate's device_map so they are materialised)"
        )
    if x.dim() == 0:
        raise ValueError(f"{what} must have at least one dimension (blocks run along the last)")


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    """float32 numpy view of ``x`` (no copy for contiguous float32; exact widening of bfloat16)."""
    x = x.detach()
    if x.dtype != torch.float32:
        x = x.float()
    return x.cpu().numpy()


def _from_numpy(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """``a`` as a tensor with the dtype and device of ``like``."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(device=like.device, dtype=like.dtype)


def _per_element(block_values: torch.Tensor, n: int, block_size: int) -> torch.Tensor:
    """Broadcast per-block values ``(..., n_blocks)`` to per-element ``(..., n)``."""
    return block_values.repeat_interleave(block_size, dim=-1)[..., :n]


class _MinifloatQDQ(torch.autograd.Function):
    """x̂ = MX-minifloat(x; E, M); backward as in the module docstring."""

    @staticmethod
    def forward(ctx, x, ebits, mbits, block_size, scale_mode, rounding, max_normal_cap, fractional_scale,
                backend="numpy", block_amax=None):
        e, m = float(ebits), float(mbits)
        if backend != "numpy":  # same bits on the tensor's device (dmx.mx_torch)
            xq, X = mx_torch.quantize_dequantize_minifloat(
                x.detach(), e, m, block_size=block_size, scale_mode=scale_mode, rounding=rounding,
                max_normal_cap=max_normal_cap, fractional_scale=fractional_scale, return_scale_exponent=True,
                compiled=backend == "compiled", block_amax=block_amax,
            )
            xq = xq.to(x.dtype)
        else:
            out, X = quantize_dequantize_minifloat(
                _to_numpy(x), e, m, block_size=block_size, axis=-1, scale_mode=scale_mode,
                rounding=rounding, max_normal_cap=max_normal_cap, fractional_scale=fractional_scale,
                return_scale_exponent=True,
            )
            xq = _from_numpy(out, x)
            X = torch.from_numpy(np.asarray(X, dtype=np.float32)).to(x.device)
        ctx.save_for_backward(x, xq, X)
        ctx.params = (e, m, block_size, max_normal_cap, fractional_scale)
        ctx.backend = backend
        # autograd wants each gradient on its input's device (beta may live apart from x)
        ctx.width_devices = (ebits.device, mbits.device)
        return xq

    @staticmethod
    def backward(ctx, grad_out):
        x, xq, X = ctx.saved_tensors
        e, m, block_size, cap, rule = ctx.params
        p = minifloat_params(e, m, max_normal_cap=cap, fractional_scale=rule)
        n = x.shape[-1]
        need_x, need_widths = ctx.needs_input_grad[0], ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        # blocks as rows (n_blocks, block_size), every operand the same rank, the scale (n_blocks, 1)
        # broadcasting without a copy; detached from their base tensors, which dynamo would guard
        # (a weight's and an activation's base differ in rank: two compiled kernels instead of one)
        blocks_shape = to_blocks(x, block_size).shape
        xb, g, xqb = (to_blocks(t.float(), block_size).reshape(-1, block_size).detach() for t in (x, grad_out, xq))
        s = torch.exp2(X).reshape(-1, 1)
        # floor(log2|y|) < emin  <=>  |y| < 2**ceil(emin) (emin is real-valued)
        levels = (p.max_normal, 2.0 ** math.ceil(p.emin))
        if ctx.backend == "compiled":  # the levels as 0-d tensors: a new width recompiles nothing
            levels = tuple(torch.tensor(v, device=s.device) for v in levels)
            sums_of = mx_torch.compiled_kernel(fused_width_sums)
        else:
            sums_of = _width_sums
        gx, sums = sums_of(g, xb, xqb, s, *levels, need_x, need_widths)
        grad_x = grad_e = grad_m = None
        if need_x:
            grad_x = from_blocks(gx.reshape(blocks_shape), n).to(x.dtype)
        if need_widths:
            dlog_max, dx = _log2_max_normal_slopes(p), _scale_exponent_slopes(p)
            demin_de = -_LN2 * 2.0 ** (e - 1.0)
            sat = _LN2 * p.max_normal
            # rows E, M; columns the sums (in range, saturated, subnormal). M: normal in range
            # ln2 (x - x̂); subnormal ln2 (x - x̂) (1 - dX/dM); saturated sign s max_normal ln2
            # (dlog2 max_normal/dM + dX/dM). E: subnormal -ln2 (x - x̂) (dX/dE + demin/dE);
            # saturated as for M. One product instead of a dozen scalar tensor operations.
            slopes = torch.tensor([[0.0, sat * (dlog_max[0] + dx[0]), -_LN2 * (dx[0] + demin_de)],
                                   [_LN2, sat * (dlog_max[1] + dx[1]), -_LN2 * dx[1]]],
                                  dtype=sums[0].dtype, device=sums[0].device)
            grad_e, grad_m = slopes @ torch.stack(sums)
            grad_e = grad_e.to(ctx.width_devices[0]) if ctx.needs_input_grad[1] else None
            grad_m = grad_m.to(ctx.width_devices[1]) if ctx.needs_input_grad[2] else None
        return grad_x, grad_e, grad_m, None, None, None, None, None, None, None


def _width_sums(g, xb, xqb, s, clip_level, sub_level, need_x: bool, need_widths: bool):
    """(grad to x, (Σ_in_range g(x - x̂), Σ_saturated g·sign(x)·s, Σ_subnormal g(x - x̂))).

    Blocks as rows: ``g``/``xb``/``xqb`` (n_blocks, block_size), per-block scale ``s``
    (n_blocks, 1); saturated: ``|x| > s·clip_level`` (max_normal), subnormal:
    ``|x| < s·sub_level``. The eager form, shared by the numpy and torch backends: few elements
    saturate, so they are gathered by index instead of full-size products.
    """
    ax = xb.abs()
    clipped = ax > s * clip_level
    any_clipped = bool(clipped.any())
    gx = sums = None
    if need_x:
        gx = g.masked_fill(clipped, 0.0) if any_clipped else g
    if need_widths:
        ge = g * (xb - xqb)  # g * (x - x̂)
        if any_clipped:
            idx = clipped.reshape(-1).nonzero().squeeze(1)
            g_c, x_c = g.reshape(-1)[idx], xb.reshape(-1)[idx]
            s_c = s.reshape(-1)[idx // xb.shape[-1]]  # the block of each gathered element
            gs_clip = (g_c * torch.sign(x_c) * s_c).sum()
            ge_clip = ge.reshape(-1)[idx].sum()
        else:
            gs_clip = ge_clip = torch.zeros((), dtype=ge.dtype, device=ge.device)
        sums = (ge.sum() - ge_clip, gs_clip, (ge * (ax < s * sub_level)).sum())
    return gx, sums


def fused_width_sums(g, xb, xqb, s, clip_level, sub_level, need_x: bool, need_widths: bool):
    """:func:`_width_sums` (same arguments) as one pass of masked sums, which the ``compiled``
    backend fuses. The same quantities; the sums add in another order, so they agree to float
    rounding. Every sum is masked by a per-block condition, so inductor makes them one loop over
    the elements (an unmasked ``ge.sum()`` became a second pass over all three inputs)."""
    ax = xb.abs()
    clipped = ax > s * clip_level
    gx = g.masked_fill(clipped, 0.0) if need_x else None
    sums = None
    if need_widths:
        ge = g * (xb - xqb)
        zero = torch.zeros((), dtype=ge.dtype, device=ge.device)
        sums = (torch.where(clipped, zero, ge).sum(), torch.where(clipped, g * torch.sign(xb) * s, zero).sum(),
                torch.where(ax < s * sub_level, ge, zero).sum())
    return gx, sums


def _log2_max_normal_slopes(p) -> tuple[float, float]:
    """``(∂log2 max_normal/∂E, ∂log2 max_normal/∂M)``; 0 while the 448 cap is active."""
    if p.capped:
        return 0.0, 0.0
    return _LN2 * 2.0 ** (p.ebits - 1.0), 2.0 ** (p.emax - p.mbits) / p.uncapped_max_normal


def _scale_exponent_slopes(p) -> tuple[float, float]:
    """``(∂X/∂E, ∂X/∂M)`` with the scale's floors passed straight through (module docstring).

    ``emax`` rule: ``X ≈ log2 amax - emax``; ``maxfloat`` rule (the authors'):
    ``X ≈ log2 amax - log2 max_normal``, which also moves with M and stops at the 448 cap.
    """
    if p.fractional_scale == "maxfloat":
        de, dm = _log2_max_normal_slopes(p)
        return -de, -dm
    return -_LN2 * 2.0 ** (p.ebits - 1.0), 0.0


class _StandardQDQ(torch.autograd.Function):
    """x̂ = MX-quantize-dequantize(x) in a standard format; clipped straight-through to x."""

    @staticmethod
    def forward(ctx, x, fmt, block_size, scale_mode, rounding, backend="numpy"):
        if backend != "numpy":  # same bits on the tensor's device (dmx.mx_torch; eager for both)
            xq, X = mx_torch.quantize_dequantize(
                x.detach(), fmt, block_size=block_size, scale_mode=scale_mode, rounding=rounding,
                return_scale_exponent=True,
            )
            scales = mx_torch.scale_values(X)  # NaN blocks NaN, as decode_e8m0(0xFF)
        else:
            values, codes = quantize_dequantize(
                _to_numpy(x), fmt, block_size=block_size, axis=-1, scale_mode=scale_mode,
                rounding=rounding, return_scales=True,
            )
            xq = _from_numpy(values, x)
            scales = None
        if ctx.needs_input_grad[0]:
            if scales is None:
                scales = torch.from_numpy(decode_e8m0(codes, np.float32)).to(x.device)
            ctx.save_for_backward(x, scales)
            ctx.limit = (get_format(fmt).element.max_normal, block_size)
        return xq

    @staticmethod
    def backward(ctx, grad_out):
        x, scales = ctx.saved_tensors
        max_normal, block_size = ctx.limit
        s = _per_element(scales, x.shape[-1], block_size)
        inside = x.float().abs() <= s * max_normal
        return (grad_out * inside).to(x.dtype), None, None, None, None, None


def _check_common(x: torch.Tensor, block_size: int) -> None:
    check_tensor(x)
    check_block_size(block_size)


def mx_qdq_minifloat(
    x: torch.Tensor,
    ebits: torch.Tensor | float,
    mbits: torch.Tensor | float,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    scale_mode: str = "floor",
    rounding: str = "rne",
    max_normal_cap: float = E4M3_MAX_NORMAL,
    fractional_scale: str = FRACTIONAL_SCALES[0],
    backend: str = DEFAULT_BACKEND,
    block_amax: torch.Tensor | None = None,
) -> torch.Tensor:
    """MX quantize-dequantize ``x`` with real widths ``(E, M)``; differentiable in x, E and M.

    ``ebits``/``mbits`` may be 0-d tensors requiring grad (e.g. ``family.ebits(beta)``);
    ``fractional_scale``: the scale rule at fractional widths (``mx_spec.minifloat``);
    ``backend``: ``"numpy"``, ``"torch"`` or ``"compiled"`` forward (same bits; ``BACKENDS``);
    ``block_amax``: ``dmx.mx_torch.block_amax_of(x, block_size)`` kept for an ``x`` that does not
    change (a frozen weight), saving the torch and compiled forwards a pass over ``x`` (numpy
    computes its own).
    """
    _check_common(x, block_size)
    check_backend(backend, x.device.type)
    e = ebits if torch.is_tensor(ebits) else torch.tensor(float(ebits))
    m = mbits if torch.is_tensor(mbits) else torch.tensor(float(mbits))
    if e.numel() != 1 or m.numel() != 1:
        raise ValueError("ebits and mbits must be scalars (one format per tensor)")
    minifloat_params(float(e.detach()), float(m.detach()), max_normal_cap=max_normal_cap, fractional_scale=fractional_scale)
    return _MinifloatQDQ.apply(x, e, m, block_size, scale_mode, rounding, max_normal_cap, fractional_scale, backend,
                               block_amax)


def mx_qdq_standard(
    x: torch.Tensor,
    fmt: str,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    scale_mode: str = "floor",
    rounding: str = "rne",
    backend: str = DEFAULT_BACKEND,
) -> torch.Tensor:
    """MX quantize-dequantize ``x`` in a standard format (``mx_spec.quantize_dequantize``).

    Backward: clipped straight-through to ``x`` (1 inside the block's range, 0 where saturated).
    ``backend``: ``"numpy"``, ``"torch"`` or ``"compiled"`` forward (same bits; ``BACKENDS``).
    """
    _check_common(x, block_size)
    check_backend(backend)
    get_format(fmt)  # ValueError listing the valid names
    return _StandardQDQ.apply(x, fmt, block_size, scale_mode, rounding, backend)
