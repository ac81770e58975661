"""Golden case inputs: deterministic, platform-independent inputs, one function per case group.

Random inputs are built from raw PCG64 words (``numpy.random.PCG64.random_raw``, whose stream
is fixed by its seed) with integer operations, ``np.ldexp`` (exact) and IEEE
round-to-nearest-even casts; no libm function is used, so every platform builds the same bits.

A case group is a function ``fmt_name -> list[CaseInput]`` listed in :data:`EDGE_GROUPS` (the
same inputs for every mode), plus :func:`random_inputs` per mode.  The expected outputs and the
files are :mod:`mx_spec.conformance.golden_gen`'s.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mx_spec.elements import decode_elements
from mx_spec.formats import DEFAULT_BLOCK_SIZE, get_element, get_format
from mx_spec.conformance.golden import INPUT_DTYPES, SPEC_MODE
from mx_spec.scale import E8M0_MAX_EXP, E8M0_MIN_EXP

#: Random blocks per format: the spec-default mode gets many, every other mode a few.
RANDOM_BLOCKS_SPEC_MODE = 1024
RANDOM_BLOCKS_OTHER_MODE = 64
RANDOM_BLOCKS_PER_CASE = 16

#: Groups every (format, mode) pair must cover; `tests/conformance/test_golden.py` checks the files do.
REQUIRED_GROUPS: tuple[str, ...] = (
    "grid", "ties", "ties_scaled", "saturation", "signed_zero", "all_zero", "scale_clamp", "scale_boundary",
    "fp32_subnormal", "nan_inf", "float64", "bfloat16", "float16", "layout", "block_sizes", "axes", "random",
)



@dataclass(frozen=True)
class CaseInput:
    """One quantize call's input, before the expected outputs are attached."""

    group: str
    note: str
    x: np.ndarray
    block_size: int = DEFAULT_BLOCK_SIZE
    axis: int = -1


# --------------------------------------------------------------------------- deterministic inputs
def _seed(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode("utf-8"))


def _raw_words(seed: int, n: int) -> np.ndarray:
    """``n`` raw uint64 words of PCG64(seed): a stream fixed by the seed on every platform."""
    return np.random.PCG64(seed).random_raw(n).astype(np.uint64)


def _trailing_zeros(w: np.ndarray) -> np.ndarray:
    """Trailing zero count of uint64 words: a geometric(1/2) variate for random words."""
    lowest = w & (~w + np.uint64(1))
    return np.bitwise_count(lowest - np.uint64(1)).astype(np.int64)


def _compose(sign: np.ndarray, exponent: np.ndarray, mantissa52: np.ndarray) -> np.ndarray:
    """float64 values (-1)^sign * (1 + mantissa52 / 2^52) * 2^exponent, computed exactly."""
    significand = 1.0 + mantissa52.astype(np.float64) * np.float64(2.0**-52)
    value = np.ldexp(significand, exponent.astype(np.int32))
    return np.where(sign.astype(bool), -value, value)


def random_blocks(seed: int, n_blocks: int, block_size: int = DEFAULT_BLOCK_SIZE) -> np.ndarray:
    """float64 array (n_blocks, block_size) mixing four distributions, one per block.

    Block kinds (block index mod 4): 'uniform' (exponent = block exponent - geometric(1/2), the
    exponent law of a uniform variate), 'heavy' (uniform plus 1-in-8 outliers up to 2^21 times
    larger), 'mixed' (exponent uniform over 48 binades), 'sparse' (uniform with about a quarter
    exact zeros of either sign).  Block exponents are mostly in [-24, 24]; one block in eight is
    drawn from [-150, 100] to reach FP32 subnormals and the top of the scale range.
    """
    n = n_blocks * block_size
    w = _raw_words(seed, 5 * n + 2 * n_blocks)
    w_sign, w_mant, w_geo, w_aux, w_aux2 = (w[i * n:(i + 1) * n] for i in range(5))
    w_block = w[5 * n:5 * n + n_blocks]
    w_block2 = w[5 * n + n_blocks:]

    shape = (n_blocks, block_size)
    sign = (w_sign >> np.uint64(63)).reshape(shape)
    mant = (w_mant & np.uint64((1 << 52) - 1)).reshape(shape)
    geo = np.minimum(_trailing_zeros(w_geo), 40).reshape(shape)
    aux = (w_aux % np.uint64(1 << 16)).astype(np.int64).reshape(shape)
    aux2 = (w_aux2 % np.uint64(1 << 16)).astype(np.int64).reshape(shape)

    wide = (w_block2 % np.uint64(8)) == 0
    base = np.where(
        wide,
        (w_block % np.uint64(251)).astype(np.int64) - 150,
        (w_block % np.uint64(49)).astype(np.int64) - 24,
    )[:, None]
    kind = (np.arange(n_blocks) % 4)[:, None]

    exp_uniform = base - 1 - geo
    exp_heavy = np.where(aux % 8 == 0, base + aux2 % 22, exp_uniform)
    exp_mixed = base - 24 + aux % 49
    exponent = np.select([kind == 0, kind == 1, kind == 2], [exp_uniform, exp_heavy, exp_mixed], exp_uniform)
    values = _compose(sign, exponent, mant)
    sparse_zero = (kind == 3) & (aux2 % 4 == 0)
    return np.where(sparse_zero, np.where(sign.astype(bool), -0.0, 0.0), values)


def _element_grid(elem_name: str) -> np.ndarray:
    """Sorted distinct non-negative finite element values (float64), +0 first."""
    elem = get_element(elem_name)
    codes = np.arange(1 << elem.bits, dtype=np.uint8)
    values = np.asarray(decode_elements(codes, elem_name, dtype=np.float64), dtype=np.float64)
    keep = np.isfinite(values) & (values >= 0) & ~np.signbit(values)
    return np.unique(values[keep])


def _blocks_with_anchor(values: np.ndarray, anchor: float, block_size: int = DEFAULT_BLOCK_SIZE) -> np.ndarray:
    """Rows of ``block_size``: ``anchor`` first (it fixes amax), then ``values`` (padding 0)."""
    per = block_size - 1
    n_blocks = max(1, -(-len(values) // per))
    padded = np.zeros(n_blocks * per, dtype=np.float64)
    padded[: len(values)] = values
    body = padded.reshape(n_blocks, per)
    return np.concatenate([np.full((n_blocks, 1), anchor), body], axis=1)


def _tie_values(grid: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Each midpoint of adjacent grid values, and its neighbours in ``dtype``, both signs."""
    mids = (grid[:-1] + grid[1:]) / 2.0
    m = mids.astype(dtype)
    below = np.nextafter(m, np.array(-np.inf, dtype=dtype))
    above = np.nextafter(m, np.array(np.inf, dtype=dtype))
    trio = np.stack([m, below, above], axis=1).astype(np.float64).ravel()
    return np.stack([trio, -trio], axis=1).ravel()


def _cast(values: np.ndarray, dtype: str) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).astype(INPUT_DTYPES[dtype][0])


def _facts(fmt_name: str):
    """(element format, sorted non-negative element grid, max normal, top step, emax) of a format."""
    elem = get_format(fmt_name).element
    grid = _element_grid(elem.name)
    return elem, grid, float(grid[-1]), float(grid[-1] - grid[-2]), int(elem.emax)


def grid_inputs(fmt_name: str) -> list[CaseInput]:
    """Group ``grid``: every finite element value of both signs, anchored so the floor scale is 2^0."""
    _, grid, max_normal, _, _ = _facts(fmt_name)
    grid_values = np.stack([grid, -grid], axis=1).ravel()
    return [CaseInput("grid", "every element value, both signs, block amax = max normal",
                      _cast(_blocks_with_anchor(grid_values, max_normal), "float32"))]


def tie_inputs(fmt_name: str) -> list[CaseInput]:
    """Groups ``ties`` and ``ties_scaled``: every midpoint of adjacent values (subnormals and
    0/min-subnormal included), at scale 2^0 and far from it."""
    _, grid, max_normal, _, _ = _facts(fmt_name)
    ties = _tie_values(grid, np.dtype(np.float32))
    cases = [CaseInput("ties", "midpoints of adjacent element values and their float32 neighbours",
                       _cast(_blocks_with_anchor(ties, max_normal), "float32"))]
    for k in (-118, 100):
        scaled = np.ldexp(_tie_values(grid, np.dtype(np.float64)), k)
        cases.append(CaseInput("ties_scaled", f"ties times 2^{k} (scale away from 2^0)",
                               _cast(_blocks_with_anchor(scaled, np.ldexp(max_normal, k)), "float32")))
    return cases


def saturation_inputs(fmt_name: str) -> list[CaseInput]:
    """Group ``saturation``: values between max normal and the next power of two round or clamp to max."""
    _, _, max_normal, top_step, emax = _facts(fmt_name)
    f32 = np.float32
    above = max_normal + np.array([0.25, 0.5, 0.75, 1.0, 1.5, 2.0]) * top_step
    top_pow2 = np.ldexp(1.0, emax + 1)
    sat = np.concatenate([above, [np.nextafter(f32(top_pow2), f32(0)), max_normal]])
    tie = f32(max_normal + top_step / 2)
    sat = np.concatenate([sat, -sat, [np.nextafter(tie, f32(0)), np.nextafter(tie, f32(np.inf))]])
    sat = sat[np.abs(sat) < top_pow2]
    block = np.zeros(32)
    block[: len(sat)] = sat
    return [CaseInput("saturation", f"|x| in [max normal, 2^{emax + 1}): round/clamp to +-{max_normal:g}",
                      _cast(block[None, :], "float32")),
            CaseInput("saturation", "a lone value just below 2^(emax+1) with tiny neighbours",
                      _cast(np.array([[np.nextafter(f32(top_pow2), f32(0)), 1e-3, -1e-3] + [0.0] * 29]), "float32"))]


def zero_inputs(fmt_name: str) -> list[CaseInput]:
    """Groups ``signed_zero`` and ``all_zero``: signed zeros, underflow, all-zero blocks in each dtype."""
    cases = [CaseInput("signed_zero", "mixed +0/-0 beside a 1.0 and values that underflow",
                       _cast(np.array([[1.0, -0.0, 0.0, -1e-30, 1e-30, -0.0] + [0.0, -0.0] * 13]), "float32"))]
    for dtype in ("float32", "float64", "bfloat16", "float16"):
        cases.append(CaseInput("all_zero", f"all +0 ({dtype})", _cast(np.zeros((1, 32)), dtype)))
        cases.append(CaseInput("all_zero", f"all -0 ({dtype})", _cast(np.full((1, 32), -0.0), dtype)))
    cases.append(CaseInput("all_zero", "all-zero block between two non-zero blocks",
                           _cast(np.concatenate([np.full(32, 3.0), np.zeros(32), np.full(32, -0.5)])[None, :], "float32")))
    return cases


#: The relative shape of the blocks whose maxima the scale groups move around.
SHAPE_OF_BLOCK = np.array([1.0, -0.75, 0.5, 0.3, -2.0**-3, 2.0**-8, -2.0**-12, 2.0**-20] * 4)


def scale_clamp_inputs(fmt_name: str) -> list[CaseInput]:
    """Group ``scale_clamp``: block maxima at and beyond both ends of the E8M0 range."""
    _, _, _, _, emax = _facts(fmt_name)
    cases = []
    # amax 2^(emax + E8M0_MIN_EXP) has X = -127 exactly; below it X clamps
    amaxes_f32 = [np.ldexp(1.0, emax + E8M0_MIN_EXP), np.ldexp(1.0, emax + E8M0_MIN_EXP - 1),
                  np.ldexp(1.0, emax + E8M0_MIN_EXP - 3), 2.0**-126, 2.0**-149, float(np.finfo(np.float32).max),
                  np.ldexp(1.0, 127)]
    for a in amaxes_f32:
        cases.append(CaseInput("scale_clamp", f"amax {a!r} (float32)", _cast(a * SHAPE_OF_BLOCK[None, :], "float32")))
    amaxes_f64 = [np.ldexp(1.0, emax + E8M0_MAX_EXP), np.ldexp(1.0, emax + E8M0_MAX_EXP + 1), 1e300,
                  np.ldexp(1.0, emax + E8M0_MIN_EXP - 1), 5e-324]
    for a in amaxes_f64:
        cases.append(CaseInput("scale_clamp", f"amax {a!r} (float64)", _cast(a * SHAPE_OF_BLOCK[None, :], "float64")))
    return cases


def scale_boundary_inputs(fmt_name: str) -> list[CaseInput]:
    """Group ``scale_boundary``: amax at and one float32 ulp around the points where a scale rule
    steps (max normal * 2^k for rceil, powers of two for floor/ceil, the rounding point for even)."""
    elem, _, max_normal, _, emax = _facts(fmt_name)
    f32 = np.float32
    rows = []
    for k in (0, 100, -100):
        pts = [max_normal, np.ldexp(1.0, emax + 1), np.ldexp(1.0, emax), np.ldexp(2.0 - 2.0**-(elem.mbits + 1), emax)]
        for p in np.ldexp(np.array(pts), k).astype(f32):
            for a in (np.nextafter(p, f32(0)), p, np.nextafter(p, f32(np.inf))):
                rows.append(float(a) * SHAPE_OF_BLOCK)
    low = np.float32(np.ldexp(max_normal, E8M0_MIN_EXP))  # amax / max normal = 2^-127 exactly
    tiny = [np.nextafter(low, f32(0)), low] + [low + f32(i) * np.spacing(low) for i in (1, 2, 3, 64)]
    tiny += [f32(2.0**-149), f32(2.0**-140)]  # quotients that underflow to 0 or to a few subnormal steps
    return [CaseInput("scale_boundary", "amax = max normal, 2^(emax+1), 2^emax, (2-2^-(mbits+1))*2^emax "
                      "times 2^0, 2^100, 2^-100, each -1 ulp / exact / +1 ulp (one per block)",
                      _cast(np.array(rows), "float32")),
            # appended (issue #25): rceil=float32's quotient amax / max normal in the float32 subnormal range
            CaseInput("scale_boundary", "block_size 8: amax around max normal * 2^-127 (-1 ulp, exact, "
                      "+1/+2/+3/+64 ulp), 2^-149 and 2^-140: rceil=float32's quotient is a float32 subnormal or 0",
                      _cast(np.array([float(a) * SHAPE_OF_BLOCK[:8] for a in tiny]), "float32"), block_size=8)]


def fp32_subnormal_inputs(fmt_name: str) -> list[CaseInput]:
    """Group ``fp32_subnormal``: float32 inputs with a zero exponent field."""
    w = _raw_words(_seed(fmt_name, "fp32_subnormal"), 96)
    bits = (w % np.uint64(1 << 23)).astype(np.uint32) | np.uint32(1)
    bits[::2] &= np.uint32(0xFF)  # some tiny subnormals too
    bits |= ((w >> np.uint64(40)) & np.uint64(1)).astype(np.uint32) << np.uint32(31)
    sub = bits.view(np.float32).reshape(3, 32).copy()
    sub[2, 0] = np.float32(2.0**-126)  # one block whose amax is the smallest normal
    small_ints = np.arange(-15, 17, dtype=np.float64) * 2.0**-149
    return [CaseInput("fp32_subnormal", "float32 subnormal inputs (third block: amax = 2^-126)", sub),
            CaseInput("fp32_subnormal", "integers times 2^-149 (exact multiples of the smallest subnormal)",
                      _cast(small_ints[None, :], "float32"))]


def nan_inf_inputs(fmt_name: str) -> list[CaseInput]:
    """Group ``nan_inf``: NaN (quiet, signalling, negative, payloads) and ±Inf in blocks, each dtype."""
    specials = {
        "nan": [np.nan, 1.0, -2.0, 0.5],
        "+inf": [np.inf, 1.0, -2.0, 0.5],
        "-inf": [-np.inf, 1.0, -2.0, 0.5],
        "nan+inf": [np.inf, np.nan, 1.0, -1.0],
        "only nan": [np.nan] * 4,
    }
    cases = []
    for label, head in specials.items():
        row = np.concatenate([head, np.linspace(-3.0, 3.0, 28)])
        cases.append(CaseInput("nan_inf", f"{label} in the block (float32)", _cast(row[None, :], "float32")))
    payloads = np.array([0x7F800001, 0xFFC00000, 0x7FC00001, 0x3F800000] + [0x40000000] * 28, dtype=np.uint32)
    cases.append(CaseInput("nan_inf", "signalling NaN, negative NaN and NaN payloads (float32)",
                           payloads.view(np.float32)[None, :].copy()))
    two = np.concatenate([[np.nan], np.ones(31), [np.inf], np.full(31, 0.25), np.linspace(-1, 1, 32)])
    cases.append(CaseInput("nan_inf", "three blocks: NaN only in block 0, Inf only in block 1", _cast(two[None, :], "float32")))
    for dtype in ("float64", "bfloat16", "float16"):
        row = np.concatenate([[np.nan, np.inf, -np.inf], np.linspace(-3.0, 3.0, 29)])
        cases.append(CaseInput("nan_inf", f"NaN and +-Inf ({dtype})", np.stack([_cast(row, dtype), _cast(np.linspace(-4, 4, 32), dtype)])))
    return cases


def float64_inputs(fmt_name: str) -> list[CaseInput]:
    """Group ``float64``: values that a float32 detour would round (no double rounding allowed)."""
    _, grid, max_normal, _, emax = _facts(fmt_name)
    mids = _tie_values(grid, np.dtype(np.float64))[0::6]  # the exact positive midpoints
    nudged = np.stack([mids + np.ldexp(mids, -30), mids - np.ldexp(mids, -30)], axis=1).ravel()
    nudged = np.stack([nudged, -nudged], axis=1).ravel()
    below_pow2 = np.array([np.nextafter(np.ldexp(1.0, emax + 21), 0.0)] + list(np.ldexp([1.0, -0.5] + [0.25] * 29, 20)))
    return [CaseInput("float64", "midpoints nudged by 2^-30 relative (a float32 detour would make them ties)",
                      _cast(_blocks_with_anchor(nudged, max_normal), "float64")),
            CaseInput("float64", "amax one float64 ulp below 2^(emax+21): floor(log2(amax)) = emax+20",
                      _cast(below_pow2[None, :], "float64")),
            CaseInput("float64", "random float64 blocks (full 52-bit mantissas)",
                      random_blocks(_seed(fmt_name, "float64"), 4)),
            # appended (issue #25): rceil on float64 stays exact under both rceil policies
            CaseInput("float64", "block_size 4: amax = max normal * 2^k * (1 + 2^-40), (1 - 2^-40), (1 + 2^-25) for "
                      "k = 0, 30, -30: rounding amax or amax / max normal to float32 gives rceil X one low",
                      _cast(np.array([max_normal * 2.0**k * f * SHAPE_OF_BLOCK[:4] for k in (0, 30, -30)
                                      for f in (1 + 2.0**-40, 1 - 2.0**-40, 1 + 2.0**-25)]), "float64"), block_size=4)]


def half_inputs(fmt_name: str) -> list[CaseInput]:
    """Groups ``bfloat16`` and ``float16``: ties and random blocks in those dtypes."""
    _, grid, max_normal, _, _ = _facts(fmt_name)
    cases = []
    for dtype in ("bfloat16", "float16"):
        if dtype == "float16" and max_normal > float(np.finfo(np.float16).max):
            tie_src = _tie_values(grid[grid <= 2048.0], np.dtype(np.float16))
            anchor = 2048.0
        else:
            tie_src = _tie_values(grid, INPUT_DTYPES[dtype][0])
            anchor = max_normal
        cases.append(CaseInput(dtype, f"ties rounded to {dtype}", _cast(_blocks_with_anchor(tie_src, anchor), dtype)))
        rnd = random_blocks(_seed(fmt_name, dtype), 4)
        if dtype == "float16":
            rnd = np.clip(rnd, -60000.0, 60000.0)
        cases.append(CaseInput(dtype, f"random {dtype} blocks", _cast(rnd, dtype)))
    return cases


def layout_inputs(fmt_name: str) -> list[CaseInput]:
    """Group ``layout``: other axes, block sizes and ragged last blocks, an empty input."""
    lay = random_blocks(_seed(fmt_name, "layout"), 8).ravel()
    return [
        CaseInput("layout", "shape (3, 45), axis -1: ragged last block of 13", _cast(lay[:135].reshape(3, 45), "float32")),
        CaseInput("layout", "shape (50, 3), axis 0: blocks run down the columns, last of 18",
                  _cast(lay[:150].reshape(50, 3), "float32"), axis=0),
        CaseInput("layout", "shape (2, 40, 3), axis 1", _cast(lay[:240].reshape(2, 40, 3), "float32"), axis=1),
        CaseInput("layout", "shape (4, 48), block_size 16", _cast(lay[:192].reshape(4, 48), "float32"), block_size=16),
        CaseInput("layout", "shape (29,), block_size 7: ragged last block of 1", _cast(lay[:29], "float32"), block_size=7),
        CaseInput("layout", "shape (0, 32): empty input", np.zeros((0, 32), dtype=np.float32)),
    ]


#: Block sizes besides the OCP 32 that implementations use (NVFP4-style 16, 64, 128).
OTHER_BLOCK_SIZES: tuple[int, ...] = (16, 64, 128)


def block_size_inputs(fmt_name: str) -> list[CaseInput]:
    """Group ``block_sizes``: two random blocks per size, and a ragged row for the large sizes."""
    out = []
    for k in OTHER_BLOCK_SIZES:
        rnd = random_blocks(_seed(fmt_name, "block_sizes", k), 2, block_size=k).astype(np.float32).reshape(1, 2 * k)
        out.append(CaseInput("block_sizes", f"shape (1, {2 * k}), block_size {k}: random blocks", rnd, block_size=k))
        if k > 32:
            out.append(CaseInput("block_sizes", f"shape (1, {k + 5}), block_size {k}: ragged last block of 5",
                                 rnd[:, : k + 5].copy(), block_size=k))
    return out


def axes_inputs(fmt_name: str) -> list[CaseInput]:
    """Group ``axes``: negative block axes other than -1 (issue #25: only -1 was exercised), with
    ragged last blocks, so an implementation that takes any negative axis as the last one fails."""
    vals = random_blocks(_seed(fmt_name, "axes"), 7).ravel()
    return [
        CaseInput("axes", "shape (36, 2), axis -2: blocks down the columns, last of 4",
                  _cast(vals[:72].reshape(36, 2), "float32"), axis=-2),
        CaseInput("axes", "shape (2, 18, 2), axis -2, block_size 16: last block of 2",
                  _cast(vals[72:144].reshape(2, 18, 2), "float32"), block_size=16, axis=-2),
        CaseInput("axes", "shape (33, 1, 2), axis -3: last block of 1",
                  _cast(vals[144:210].reshape(33, 1, 2), "float32"), axis=-3),
    ]


#: The non-random case groups in file order.  A new case goes at the END of its group's function
#: (or in a new group), so no existing id renumbers (ids count cases per mode and group).
EDGE_GROUPS: tuple[Callable[[str], list[CaseInput]], ...] = (
    grid_inputs, tie_inputs, saturation_inputs, zero_inputs, scale_clamp_inputs, scale_boundary_inputs,
    fp32_subnormal_inputs, nan_inf_inputs, float64_inputs, half_inputs, layout_inputs, block_size_inputs,
    axes_inputs,
)


def edge_inputs(fmt_name: str) -> list[CaseInput]:
    """All non-random case inputs for one MX format (the same for every mode)."""
    return [case for make in EDGE_GROUPS for case in make(fmt_name)]


def random_inputs(fmt_name: str, scale_mode: str, rounding: str) -> list[CaseInput]:
    """Random float32 blocks for one (format, mode); many for the spec-default mode."""
    n_blocks = RANDOM_BLOCKS_SPEC_MODE if (scale_mode, rounding) == SPEC_MODE else RANDOM_BLOCKS_OTHER_MODE
    blocks = random_blocks(_seed(fmt_name, scale_mode, rounding, "random"), n_blocks).astype(np.float32)
    per = RANDOM_BLOCKS_PER_CASE
    return [CaseInput("random", f"random float32 blocks {i}..{min(i + per, n_blocks) - 1} "
                      "(uniform / heavy-tailed / mixed-magnitude / sparse)", blocks[i:i + per])
            for i in range(0, n_blocks, per)]
