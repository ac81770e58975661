"""The torch primitives of the MX rules, each mirroring one ``mx_spec`` primitive on tensors.

* :func:`shared_exponent`: ``mx_spec.scale.shared_exponent`` from the frexp of the block amax
  (:func:`frexp_positive`: exact, subnormals too; no floating-point log2), modes floor/ceil/even/rceil, clamped to
  the E8M0 range, NaN for NaN/Inf blocks;
* :func:`round_abs_exact`, :func:`round_in_place`, :func:`round_real_abs`: the element rounding
  of ``mx_spec.elements`` (the magic-number sum on the integer bit views; real-valued grids as
  rint(a / step) * step in float64);
* :func:`pow2`, :func:`pow2_table`: exact 2^k from the E8M0 table (``mx_spec.scale.e8m0_table``),
  which equals ``np.ldexp``;
* :func:`to_blocks`, :func:`from_blocks`, :func:`block_amax`: ``mx_spec.blocks`` along the last
  dimension; :func:`row_chunks`: cache-sized row slices on CPU.

The conversions built from them are :mod:`dmx.mx_torch`'s.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from mx_spec.elements import SUPPORTED_INPUT_DTYPES, working_layout
from mx_spec.scale import E8M0_BIAS, E8M0_MAX_EXP, E8M0_MIN_EXP, E8M0_NAN, check_scale_mode, e8m0_table

_F32, _F64 = working_layout(np.float32), working_layout(np.float64)
#: working float dtype -> (int view dtype, stored mantissa bits, exponent bias), mx_spec's layouts
LAYOUT = {torch.float32: (torch.int32, _F32.p, _F32.bias), torch.float64: (torch.int64, _F64.p, _F64.bias)}
#: the input dtypes mx_spec accepts, as torch dtypes
INPUT_DTYPES = tuple(getattr(torch, name) for name in SUPPORTED_INPUT_DTYPES)


def working_tensor(x: torch.Tensor) -> torch.Tensor:
    """``x`` in its working precision: float64 stays, float16/bfloat16/float32 -> float32 (exact)."""
    if x.dtype not in INPUT_DTYPES:
        raise TypeError(f"unsupported input dtype {x.dtype}; supported: {', '.join(SUPPORTED_INPUT_DTYPES)}")
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


@functools.lru_cache(maxsize=None)
def pow2_table(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """2^(i - 127) for i in 0..254 (E8M0 values, exact), index 255 = 1.0 (NaN blocks scale by 1)."""
    vals = np.array(e8m0_table(np.dtype(np.float64)), dtype=np.float64)
    vals[E8M0_NAN] = 1.0
    return torch.from_numpy(vals).to(dtype=dtype, device=device)




def pow2(exponent: torch.Tensor, dtype: torch.dtype, table: torch.Tensor | None = None) -> torch.Tensor:
    """Exact 2^k (k integer tensor in [-127, 127], 0 for NaN blocks) in ``dtype``.

    ``table``: :func:`pow2_table` of ``dtype`` passed in by a compiled caller (dynamo would trace
    the cached table's construction into its graph).
    """
    table = pow2_table(dtype, exponent.device) if table is None else table
    return table[(exponent + E8M0_BIAS).long()]



# ------------------------------------------------------------------------------ shared exponent
def frexp_positive(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.frexp`` of finite ``v > 0`` (float32/float64) read off the bits: mantissa in [0.5, 1), int32 exponent.

    Exact, subnormals included (scaled into the normal range first, by 2^(p+1), exactly); written
    with bit views instead of ``torch.frexp`` so that ``torch.compile`` can fuse it (its CPU
    code generation fails on ``frexp``). ``tests/core/test_mx_torch.py`` checks it against ``torch.frexp``.
    """
    int_dtype, p, bias = LAYOUT[v.dtype]
    subnormal = (v.view(int_dtype) >> p) == 0  # exponent field 0 (no sign bit: v > 0)
    w = torch.where(subnormal, v * float(2 ** (p + 1)), v)
    bits = w.view(int_dtype)
    exp = (bits >> p) - (bias - 1) - subnormal.to(int_dtype) * (p + 1)
    mant = ((bits & ((1 << p) - 1)) | ((bias - 1) << p)).view(v.dtype)
    return mant, exp.to(torch.int32)


def shared_exponent(
    amax: torch.Tensor, emax: int | torch.Tensor, mode: str = "floor", *, mbits: int | None = None,
    max_normal: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, nan)``: ``mx_spec.scale.shared_exponent`` as an int32 tensor (NaN blocks: X = 0) and its NaN mask.

    ``amax`` >= 0 (or NaN/Inf), float32 or float64 (the working precisions); ``emax`` an integer,
    or a 0-d integer tensor.
    """
    check_scale_mode(mode)
    emax = emax if torch.is_tensor(emax) else int(emax)  # a 0-d tensor keeps a compiled caller general
    nonfinite = ~torch.isfinite(amax)
    zero = amax == 0
    safe = torch.where(nonfinite | zero, torch.ones((), dtype=amax.dtype, device=amax.device), amax)
    mant, exp = frexp_positive(safe)  # exact, subnormals too
    x = exp - 1  # floor(log2 amax)
    if mode == "floor":
        x = x - emax
    elif mode == "ceil":
        x = x + (mant != 0.5).to(x.dtype) - emax
    elif mode == "even":
        if mbits is None:
            raise ValueError("scale_mode 'even' needs mbits (the element's mantissa bits)")
        x = x + (mant >= 1.0 - 2.0 ** -(int(mbits) + 2)).to(x.dtype) - emax
    else:  # rceil
        if max_normal is None or not max_normal > 0:
            raise ValueError("scale_mode 'rceil' needs max_normal > 0 (the element's max)")
        mn, en = np.frexp(np.float64(max_normal))
        x = exp - int(en) + (mant.double() > float(mn)).to(exp.dtype)
    x = torch.where(zero, torch.full_like(x, E8M0_MIN_EXP), x).clamp_(E8M0_MIN_EXP, E8M0_MAX_EXP)
    return torch.where(nonfinite, torch.zeros_like(x), x), nonfinite


# ------------------------------------------------------------------------------ element rounding
def round_abs_exact(a: torch.Tensor, emin: int, mbits: int, rounding: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(rounded magnitudes, code magnitudes) of finite clipped magnitudes ``a`` (``mx_spec.elements``)."""
    int_dtype, p, bias = LAYOUT[a.dtype]
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


def round_real_abs(a: torch.Tensor, step_scale, step_min, max_normal, rounding: str) -> torch.Tensor:
    """``mx_spec.elements._round_real`` on magnitudes ``a``: rint(a / step) * step in float64, back in a's dtype.

    The grid's constants come precomputed (python floats, or 0-d float64 tensors so that a
    compiled caller is not specialised on them): ``step_scale = 2^-mbits``,
    ``step_min = 2^(emin - mbits)`` (the subnormal step), ``max_normal``.
    """
    dtype = a.dtype
    q = a.to(torch.float64, copy=True).clamp_max_(max_normal)  # a (|y|) is still needed
    step = q.view(torch.int64).bitwise_and(0x7FF0000000000000).view(torch.float64)  # 2^floor(log2 a)
    step.mul_(step_scale).clamp_min_(step_min)
    q.div_(step)
    if rounding == "rne":
        q.round_()  # half to even
    else:
        t = torch.floor(q)
        q = t + (q - t >= 0.5).to(q.dtype)
    return q.mul_(step).clamp_max_(max_normal).to(dtype)


# ------------------------------------------------------------------------------ blocks
def to_blocks(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """Last axis as ``(..., n_blocks, block_size)``, zero-padded (padding never changes amax)."""
    pad = (-x.shape[-1]) % block_size
    if pad:
        x = torch.nn.functional.pad(x, (0, pad))
    return x.reshape(x.shape[:-1] + (x.shape[-1] // block_size, block_size))


def from_blocks(b: torch.Tensor, n: int) -> torch.Tensor:
    return b.reshape(b.shape[:-2] + (b.shape[-2] * b.shape[-1],))[..., :n]


def block_amax(blocks: torch.Tensor) -> torch.Tensor:
    if blocks.numel() == 0:
        return torch.zeros(blocks.shape[:-1], dtype=blocks.dtype, device=blocks.device)
    return blocks.abs().amax(dim=-1)  # NaN propagates



def row_chunks(n_rows: int, block_size: int, device: torch.device):
    """Row slices of a ``(n_rows, block_size)`` array: cache-sized on CPU, everything at once elsewhere.

    On CPU a dozen elementwise passes over a chunk that stays in cache beat the same passes
    streaming the whole tensor (as ``mx_spec``'s chunked kernel); a GPU wants one launch per pass.
    """
    rows = max(1, CPU_CHUNK_ELEMENTS // block_size) if device.type == "cpu" else max(n_rows, 1)
    for r0 in range(0, n_rows, rows):
        yield slice(r0, min(r0 + rows, n_rows))


#: Elements per chunk of the CPU kernels (float64 temporaries of 512 KiB, within L2; measured best of 2^13..2^22).
CPU_CHUNK_ELEMENTS = 1 << 16


def round_in_place(a: torch.Tensor, emin: int, mbits: int, rounding: str) -> torch.Tensor:
    """``a`` (finite magnitudes clipped to max_normal, working precision) rounded in place.

    The magic sum of :func:`round_abs_exact` without the codes: S = a + M, rounded = S - M.
    """
    int_dtype, p, bias = LAYOUT[a.dtype]
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
