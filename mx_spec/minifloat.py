"""Generalised MX minifloat with real-valued exponent width E and mantissa width M.

dMX interpolates between standard MX element formats by letting the exponent width ``E`` and the
mantissa width ``M`` take real values. This module defines that continuous format family in
numpy, built on the two rounding primitives of ``mx_spec`` (``shared_exponent`` for the E8M0
block scale, ``round_to_element_grid`` for the element rounding), so that there is one rounding
implementation in the project. At integer widths it *is* the standard format.

The rule (OCP MX v1.0 §5.3 element formats, §6.3 conversion, generalised to real E, M)
--------------------------------------------------------------------------------------
For real ``E >= 1`` and ``M >= 0``:

* ``bias = 2**(E-1) - 1``                                   (§5.3: bias of an ExMy format)
* ``emax = 2**E - 1 - bias = 2**(E-1)``                     (largest normal exponent; every
  exponent code is a normal number in the OCP FP4/FP6/FP8-E4M3 formats, no Inf code)
* ``emin = 1 - bias``                                       (smallest normal exponent)
* ``max_normal = min((2 - 2**-M) * 2**emax, cap)``, ``cap = 448`` by default: E4M3 reserves
  ``S.1111.111`` as NaN so its largest finite value is 448 instead of 480; the cap makes the
  ``(4, 3)`` end exact and is inactive below it (``fp8_fp4`` reaches 448 only for β > 1.98).
* block scale ``X = floor(log2(amax) - emax)`` with ``amax`` the block's largest magnitude
  (§6.3 "floor" scale: ``floor(log2 amax) - emax``, identical at integer ``emax``), stored as a
  power of two ``2**X`` (E8M0);
* elements: ``y = x / 2**X`` is rounded to the grid of step
  ``2**(max(floor(log2|y|), emin) - M)`` (round half to even on the grid index), saturating at
  ``±max_normal``; the result is ``2**X * round(y)``.

At ``(E, M) = (2, 1), (3, 2), (2, 3), (4, 3)`` these are exactly MXFP4 E2M1, MXFP6 E3M2, MXFP6
E2M3 and MXFP8 E4M3 (tested bit for bit against ``mx_spec.quantize_dequantize``). MXFP8 E5M2 is
*not* a point of this family: it reserves its top exponent for Inf/NaN (emax 15, not 16).

How the scale and the grid behave at fractional widths, and why
---------------------------------------------------------------
* **The scale stays a power of two.** ``X = floor(log2(amax) - emax)`` keeps the scaled block
  maximum ``amax / 2**X`` in ``[2**emax, 2**(emax+1))``: the same position relative to the
  format's top binade as the OCP floor rule gives at integer widths, so clipping behaves the
  same (only the part of the top binade above ``max_normal`` saturates). Every fractional
  format is therefore still an MX block format with an E8M0 scale, and the scale is piecewise
  constant in (E, M): it drops by one binade each time ``emax`` crosses
  ``log2(amax) - integer``.
* **The normal grid does not depend on E or on the scale.** In the units of ``x`` the step is
  ``2**X * 2**(floor(log2|x|) - X - M) = 2**(floor(log2|x|) - M)`` because the scale is a power
  of two: a value with a real mantissa width M sees the binary grid with ``2**M`` (real)
  steps per binade, ``M`` alone sets the relative precision of normal values.
* **E moves the two ends of the range.** In units of ``x`` the subnormal threshold is
  ``2**(X + emin)`` (below it the step is frozen at ``2**(X + emin - M)``) and the saturation
  value is ``2**X * max_normal``; both move continuously with E between scale changes.
* **Consequence: the error is not monotone in E.** How much of the block maximum's binade
  saturates depends on ``frac(log2(amax) - emax)``; as ``emax`` grows this fraction sweeps a
  sawtooth, so a block's clipping error can rise while E grows (between two integer points of
  ``fp8_fp4`` the mean error of a heavy-tailed tensor is not monotone on a fine β grid; it is
  from one integer point to the next). The gradient (``dmx.autograd``) sees the smooth part.
* A fractional step ``2**(e - M)`` does not divide a binade into a whole number of steps: a
  value of the binade ``[2**e, 2**(e+1))`` goes to the nearest multiple of its own step, which
  near the top of the binade can be the multiple just above ``2**(e+1)``, while the values
  from ``2**(e+1)`` on use the next, doubled step. So at fractional M the grid is not a single
  ordered set and the rounding is monotone only within a binade. This is the rule as specified
  (step from the value's own binade); it matters only while learning, never for a deployed
  format (integer widths).
* ``max_normal`` is a grid point only at integer M. At fractional M it is kept as an extra
  representable value: an element goes to the nearest of {grid points <= max_normal,
  max_normal}, and everything beyond ``max_normal`` saturates to it. The saturation value is
  therefore exactly the stated element max and grows smoothly with E and M (clip-then-round
  alone would saturate at a grid point below it, which *falls* as M grows).

The shared exponent at a fractional ``emax = n + f`` (``n`` integer, ``0 <= f < 1``) is computed
with the standard primitive as ``shared_exponent(amax * 2**-f, n)``:
``floor(log2(amax) - n - f) = floor(log2(amax * 2**-f)) - n``. At integer ``emax`` (``f = 0``)
the call is exactly the standard one, so the integer points stay bit-exact.

Two rules for the scale at fractional widths (``fractional_scale``)
------------------------------------------------------------------
* ``"maxfloat"`` (default, the authors' Brevitas ``FloatScaling``/``FloatQuant``):
  ``X = floor(log2 amax) - floor(log2 max_normal)``, ``max_normal`` capped at 448 as above. The
  scale exponent of the format is the integer ``floor(log2 max_normal)``, so the scale moves
  only when ``max_normal`` crosses a power of two and clips more in between.
* ``"emax"`` (this project's first rule): ``X = floor(log2(amax) - emax)`` with the real emax.

For every standard format ``floor(log2 max_normal) = emax`` (``max_normal = (2 - 2**-M)·2**emax``
lies in ``[2**emax, 2**(emax+1))``; E4M3: ``floor(log2 448) = 8``), so the two rules give the
same bits at every deployable point and differ only while learning (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mx_spec.blocks import block_amax, check_axis, check_block_size, from_blocks, to_blocks
from mx_spec.elements import as_working, round_to_element_grid
from mx_spec.formats import DEFAULT_BLOCK_SIZE, ELEMENT_FORMATS
from mx_spec.scale import check_scale_mode, shared_exponent

__all__ = [
    "E4M3_MAX_NORMAL",
    "FRACTIONAL_SCALES",
    "MINIFLOAT_SCALE_MODES",
    "MinifloatParams",
    "minifloat_params",
    "block_scale_exponent",
    "quantize_dequantize_minifloat",
]

#: Largest finite OCP E4M3 value (448: S.1111.111 is NaN, so the top code is S.1111.110 = 1.75 * 2**8),
#: the default cap of the minifloat's max normal.
E4M3_MAX_NORMAL = ELEMENT_FORMATS["e4m3"].max_normal

#: How the block scale is taken at fractional widths (module docstring); the first is the default.
FRACTIONAL_SCALES = ("maxfloat", "emax")

#: The shared-exponent rules defined at a real emax: "even" needs an integer mantissa width and
#: "rceil" the standard element's max normal, so only these two of ``SCALE_MODES`` apply.
MINIFLOAT_SCALE_MODES: tuple[str, ...] = ("floor", "ceil")

_EBITS_RANGE = (1.0, 8.0)
_MBITS_RANGE = (0.0, 23.0)


@dataclass(frozen=True)
class MinifloatParams:
    """Derived constants of the real-width minifloat ``E``/``M`` (see the module docstring)."""

    ebits: float
    mbits: float
    max_normal_cap: float = E4M3_MAX_NORMAL
    fractional_scale: str = FRACTIONAL_SCALES[0]

    @property
    def bias(self) -> float:
        """``2**(E-1) - 1``."""
        return 2.0 ** (self.ebits - 1.0) - 1.0

    @property
    def emax(self) -> float:
        """Largest normal exponent ``2**E - 1 - bias`` (equals ``2**(E-1)``)."""
        return 2.0**self.ebits - 1.0 - self.bias

    @property
    def emin(self) -> float:
        """Smallest normal exponent ``1 - bias``."""
        return 1.0 - self.bias

    @property
    def uncapped_max_normal(self) -> float:
        """``(2 - 2**-M) * 2**emax`` before the E4M3 NaN-code cap."""
        return (2.0 - 2.0**-self.mbits) * 2.0**self.emax

    @property
    def max_normal(self) -> float:
        """``min((2 - 2**-M) * 2**emax, max_normal_cap)``."""
        return min(self.uncapped_max_normal, self.max_normal_cap)

    @property
    def capped(self) -> bool:
        """Whether the 448 cap sets ``max_normal`` (only near the E4M3 end)."""
        return self.uncapped_max_normal > self.max_normal_cap

    @property
    def scale_emax(self) -> float:
        """The exponent the block scale is taken against: ``X = floor(log2(amax) - scale_emax)``.

        ``floor(log2 max_normal)`` under ``"maxfloat"``, the real ``emax`` under ``"emax"``;
        equal at integer widths.
        """
        if self.fractional_scale == "maxfloat":
            return float(np.floor(np.log2(self.max_normal)))
        return self.emax

    @property
    def element_bits(self) -> float:
        """Sign + exponent + mantissa bits ``1 + E + M``."""
        return 1.0 + self.ebits + self.mbits


def minifloat_params(
    ebits: float, mbits: float, *, max_normal_cap: float = E4M3_MAX_NORMAL,
    fractional_scale: str = FRACTIONAL_SCALES[0],
) -> MinifloatParams:
    """Validate real widths and return their :class:`MinifloatParams`.

    Raises ``ValueError`` for non-finite widths, ``E`` outside ``[1, 8]`` or ``M`` outside
    ``[0, 23]`` (the widths a float32 intermediate can represent exactly), or an unknown
    ``fractional_scale`` (valid: ``FRACTIONAL_SCALES``).
    """
    if fractional_scale not in FRACTIONAL_SCALES:
        raise ValueError(f"unknown fractional_scale {fractional_scale!r}; choose one of {list(FRACTIONAL_SCALES)} "
                         "(maxfloat: the authors' floor(log2 amax) - floor(log2 max_normal); emax: floor(log2 amax - emax))")
    e, m = float(ebits), float(mbits)
    if not (np.isfinite(e) and _EBITS_RANGE[0] <= e <= _EBITS_RANGE[1]):
        raise ValueError(
            f"exponent width E={ebits!r} must be a finite real in [{_EBITS_RANGE[0]:g}, "
            f"{_EBITS_RANGE[1]:g}] (E=2 is FP4/FP6-E2M3, E=4 is FP8-E4M3)"
        )
    if not (np.isfinite(m) and _MBITS_RANGE[0] <= m <= _MBITS_RANGE[1]):
        raise ValueError(
            f"mantissa width M={mbits!r} must be a finite real in [{_MBITS_RANGE[0]:g}, "
            f"{_MBITS_RANGE[1]:g}] (M=1 is FP4-E2M1, M=3 is FP8-E4M3)"
        )
    cap = float(max_normal_cap)
    if not cap > 0.0:
        raise ValueError(f"max_normal_cap must be > 0 (448 is the E4M3 cap); got {max_normal_cap!r}")
    return MinifloatParams(e, m, cap, fractional_scale)


def check_minifloat_scale_mode(scale_mode: str) -> str:
    """``scale_mode`` if the real-width minifloat takes it, else ValueError naming the valid ones."""
    check_scale_mode(scale_mode)
    if scale_mode not in MINIFLOAT_SCALE_MODES:
        raise ValueError(f"the real-width minifloat supports scale_mode {' and '.join(map(repr, MINIFLOAT_SCALE_MODES))} "
                         f"(as mx_spec); got {scale_mode!r}")
    return scale_mode


def block_scale_exponent(amax: np.ndarray, emax: float, scale_mode: str = "floor") -> np.ndarray:
    """Shared exponent ``X = floor(log2(amax) - emax)`` of each block for a real ``emax``.

    Computed with ``mx_spec.scale.shared_exponent`` as ``shared_exponent(amax * 2**-f, n)``
    where ``emax = n + f``; at integer ``emax`` this is the unmodified standard call (OCP MX
    v1.0 §6.3), so E8M0 clamping and the zero/NaN/Inf conventions are those of ``mx_spec``.
    """
    check_minifloat_scale_mode(scale_mode)
    n = float(np.floor(emax))
    f = float(emax) - n
    amax = np.asarray(amax)
    if f != 0.0:
        # Multiplying by 2**-f is the only place a rounding error could enter; it is done in
        # float64 so that only amax within ~1e-16 relative of a binade edge could be affected.
        amax = amax.astype(np.float64) * np.float64(2.0**-f)
    return shared_exponent(amax, int(n), scale_mode)


def _with_max_normal_representable(y: np.ndarray, q: np.ndarray, max_normal: float) -> np.ndarray:
    """Make ``±max_normal`` a representable value: the nearest of {grid points, max_normal}.

    ``round_to_element_grid`` clips to ``max_normal`` and then rounds to the grid; at fractional
    M, ``max_normal`` is not a grid point, so the largest output would be a grid point below it
    (or, rounded up, ``max_normal`` clipped) and would move *down* as M grows. Keeping
    ``max_normal`` itself as the saturation value makes the element max the stated
    ``(2 - 2**-M)·2**emax``. At integer widths ``max_normal`` is already the nearest candidate
    whenever it is closer than the grid result, so nothing changes there (bit-exact).
    """
    ay, aq = np.abs(y), np.abs(q)
    to_max = (ay >= max_normal) | (np.abs(ay - max_normal) < np.abs(ay - aq))
    if not to_max.any():
        return q
    return np.where(to_max, np.copysign(q.dtype.type(max_normal), y).astype(q.dtype), q)


def quantize_dequantize_minifloat(
    x: np.ndarray,
    ebits: float,
    mbits: float,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    axis: int = -1,
    scale_mode: str = "floor",
    rounding: str = "rne",
    max_normal_cap: float = E4M3_MAX_NORMAL,
    fractional_scale: str = FRACTIONAL_SCALES[0],
    return_scale_exponent: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """MX quantize-dequantize ``x`` with the real-width minifloat ``(E, M)`` (module docstring).

    ``x`` is blocked along ``axis`` in blocks of ``block_size`` (a short last block is allowed);
    ``fractional_scale`` picks the scale rule at fractional widths (module docstring).
    Returns an array of ``x``'s shape, float64 for float64 input and float32 for float16,
    bfloat16 and float32 input (``TypeError`` for other dtypes, from ``mx_spec``); with
    ``return_scale_exponent`` also the per-block shared exponents ``X`` with the blocked axis
    moved last (shape ``x.shape`` with that axis replaced by the number of blocks).
    """
    bs = check_block_size(block_size)
    p = minifloat_params(ebits, mbits, max_normal_cap=max_normal_cap, fractional_scale=fractional_scale)
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension to block along")
    # float64 stays float64 (no double rounding); float16/bfloat16/float32 widen exactly to float32.
    xw, work = as_working(x)
    ax = check_axis(axis, x.ndim)
    blocks = to_blocks(xw, ax, bs)

    # block_amax propagates NaN; shared_exponent turns a NaN/Inf amax into a NaN exponent, which
    # (as in mx_spec.quantize, OCP MX v1.0 §6.3) makes the whole block NaN.
    amax = block_amax(blocks)
    X = block_scale_exponent(amax, p.scale_emax, scale_mode)
    nan_scale = np.isnan(X)
    Xi = np.where(nan_scale, 0.0, X).astype(np.int32)[..., None]
    # Power-of-two scaling is exact (ldexp): no rounding enters before the element grid.
    with np.errstate(invalid="ignore"):  # Inf inputs: their blocks get a NaN scale below
        y = np.ldexp(blocks, -Xi)
    q = round_to_element_grid(
        y, emin=p.emin, mbits=p.mbits, max_normal=p.max_normal, rounding=rounding
    )
    q = _with_max_normal_representable(y, q, p.max_normal)
    out = np.ldexp(q.astype(work.float_dtype, copy=False), Xi)
    if nan_scale.any():
        out[np.broadcast_to(nan_scale[..., None], out.shape)] = np.nan
    out = from_blocks(out, ax, x.shape[ax])
    if return_scale_exponent:
        return out, X
    return out
