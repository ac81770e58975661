"""The planted-bug table: classic MX quantizer bugs (issue #13's twelve and issue #25's twelve),
each caught by the golden vectors, and each given the right cause hint or none.

Every buggy quantizer is mx_spec plus one deliberate defect, written independently of the
verifier's own policy code (see mx_spec/policies.py) so a shared mistake cannot hide a bug.  A
row may declare policies or layouts (the bug is then in what the implementation claims).  For
each row the expected hint must be given; every other known hint that would send the author the
wrong way (a scale hint for element bugs, a float64 hint for FTZ or decode bugs, a policy
suggestion that breaks passing cases, "declare fp4=high-first" when it is declared) must not.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import mx_spec
from mx_spec.formats import get_format
from mx_spec.conformance.policy_hints import policy_effect
from mx_spec.conformance.verify import verify_quantizer

SPEC = [("floor", "rne")]


def _mx(x, fmt, **kw):
    return mx_spec.quantize(x, fmt, **kw)


def ties_away(x, fmt, **kw):
    return _mx(x, fmt, **{**kw, "rounding": "away"})


def ceil_scale(x, fmt, **kw):
    return _mx(x, fmt, **{**kw, "scale_mode": "ceil"})


def _scaled(x, mx):
    """x / 2^X per element (float64), X from the MXArray's scale codes (NaN blocks -> NaN)."""
    ax = mx.axis
    n = x.shape[ax]
    sc = np.take(mx.scales, np.arange(n) // mx.block_size, axis=ax).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(sc == 255, np.nan, np.asarray(x, dtype=np.float64) * np.exp2(127.0 - sc))


def no_saturation(x, fmt, **kw):
    """Values beyond the max normal get the next code up (wrapping into NaN/Inf/sign codes)."""
    mx = _mx(x, fmt, **kw)
    elem = mx.fmt.element
    over = np.abs(_scaled(x, mx)) > elem.max_normal
    el = np.where(over, (mx.elements + 1) & elem.code_mask, mx.elements).astype(np.uint8)
    return {"scales": mx.scales, "elements": el}


def e4m3_max_480(x, fmt, **kw):
    """E4M3 with an IEEE-style top binade: 480 = S.1111.111 is taken as the max normal."""
    mx = _mx(x, fmt, **kw)
    if fmt != "mxfp8_e4m3":
        return mx
    y = np.abs(_scaled(x, mx))
    el = mx.elements.copy()
    el[y >= 464] = (el[y >= 464] & 0x80) | 0x7F  # 464 is the 448|480 midpoint: rounds up to "480"
    return {"scales": mx.scales, "elements": el}


def nibble_swap(x, fmt, **kw):
    mx = _mx(x, fmt, **kw)
    packed = np.asarray(mx_spec.pack(mx))
    if mx.fmt.element.bits == 4:
        packed = ((packed << 4) | (packed >> 4)).astype(np.uint8)
    return {"scales": mx.scales, "elements": mx.elements, "packed": packed}


def fp6_msb_first(x, fmt, **kw):
    mx = _mx(x, fmt, **kw)
    if mx.fmt.element.bits != 6:
        return {"scales": mx.scales, "elements": mx.elements, "packed": np.asarray(mx_spec.pack(mx))}
    codes = np.moveaxis(mx.elements, mx.axis, -1).reshape(-1)
    bits = ((codes[:, None] >> np.arange(5, -1, -1)) & 1).astype(np.uint8).reshape(-1)
    return {"scales": mx.scales, "elements": mx.elements, "packed": np.packbits(bits)}


def subnormal_flush(x, fmt, **kw):
    """FP element subnormals (exponent field 0, mantissa != 0) flushed to zero of the same sign."""
    mx = _mx(x, fmt, **kw)
    elem = mx.fmt.element
    if elem.kind != "fp":
        return mx
    mag = mx.elements & ~np.uint8(elem.sign_bit)
    sub = (mag > 0) & (mag < (1 << elem.mbits))
    return {"scales": mx.scales, "elements": np.where(sub, mx.elements & np.uint8(elem.sign_bit), mx.elements)}


def zero_block_scale(x, fmt, **kw):
    """All-zero blocks get X = 0 (code 0x7F) instead of the clamped -127 (code 0x00)."""
    mx = _mx(x, fmt, **kw)
    if x.size == 0:
        return mx
    moved = np.moveaxis(np.asarray(x, dtype=np.float64), mx.axis, -1)
    n = moved.shape[-1]
    pad = np.concatenate([moved, np.zeros(moved.shape[:-1] + (-n % mx.block_size,))], axis=-1)
    zero = np.all(pad.reshape(pad.shape[:-1] + (-1, mx.block_size)) == 0, axis=-1)
    scales = np.where(np.moveaxis(zero, -1, mx.axis), np.uint8(0x7F), mx.scales)
    return {"scales": scales, "elements": mx.elements}


def float64_via_float32(x, fmt, **kw):
    return _mx(x.astype(np.float32) if x.dtype == np.float64 else x, fmt, **kw)


def inf_saturates(x, fmt, **kw):
    """torchao/gfloat style: ±Inf treated as the dtype's largest finite value (saturates)."""
    big = float(ml_dtypes.finfo(x.dtype).max) if x.dtype == ml_dtypes.bfloat16 else float(np.finfo(x.dtype).max)
    with np.errstate(invalid="ignore"):
        y = np.where(np.isinf(x), np.copysign(big, x.astype(np.float64)), x.astype(np.float64)).astype(x.dtype)
    return _mx(y, fmt, **kw)


def int8_minus_128(x, fmt, **kw):
    """MXINT8 negative saturation to -128 (0x80) where |x/2^X| >= 127.5/64 (gfloat, TOSA)."""
    mx = _mx(x, fmt, **kw)
    if fmt != "mxint8":
        return mx
    el = np.where(_scaled(x, mx) <= -127.5 / 64, np.uint8(0x80), mx.elements)
    return {"scales": mx.scales, "elements": el}


def nan_scale_decode_ignored(x, fmt, **kw):
    """Dequantizer that multiplies element values by 2^X and ignores the NaN scale code."""
    mx = _mx(x, fmt, **kw)
    safe = np.where(mx.scales == 0xFF, np.uint8(127), mx.scales)
    fixed = mx_spec.MXArray(mx.fmt, safe, mx.elements, mx.axis, mx.block_size)
    return {"scales": mx.scales, "elements": mx.elements, "decoded_f32": mx_spec.dequantize(fixed, np.float32)}


# --------------------------------------------------------------------------- issue #25's bugs
def _with_exponents(x, fmt, kw, choose):
    """mx_spec.quantize, with each finite block's exponents replaced: ``choose(amax, X)`` returns
    (the scale's X, the X its elements are divided by), both per block."""
    mx = _mx(x, fmt, **kw)
    if x.size == 0:
        return mx
    ax, k, elem = mx.axis, mx.block_size, mx.fmt.element
    xb = np.moveaxis(np.asarray(x, dtype=np.float64), ax, -1)
    n = xb.shape[-1]
    pad = np.concatenate([xb, np.zeros(xb.shape[:-1] + (-n % k,))], axis=-1)
    blocks = pad.reshape(pad.shape[:-1] + (-1, k))
    old_x = np.moveaxis(mx.scales, ax, -1).astype(np.int64) - 127
    finite = np.isfinite(blocks).all(axis=-1)
    amax = np.abs(np.where(np.isfinite(blocks), blocks, 0.0)).max(axis=-1)
    scale_x, elem_x = choose(amax, old_x)
    scale_x = np.clip(np.where(finite, scale_x, old_x), -127, 127)
    elem_x = np.clip(np.where(finite, elem_x, old_x), -127, 127)
    with np.errstate(over="ignore", invalid="ignore"):
        y = np.clip(blocks * np.exp2(-elem_x.astype(np.float64))[..., None], -elem.max_normal, elem.max_normal)
    codes = mx_spec.encode_elements(np.where(np.isnan(y), 0.0, y), elem, mx.rounding).reshape(pad.shape)[..., :n]
    redo = np.repeat(finite & ((scale_x != old_x) | (elem_x != old_x)), k, axis=-1)[..., :n]
    el = np.where(redo, codes, np.moveaxis(mx.elements, ax, -1))
    scales = np.where(finite, scale_x + 127, old_x + 127).astype(np.uint8)
    return {"scales": np.moveaxis(scales, -1, ax), "elements": np.moveaxis(el, -1, ax)}


def negative_axis_as_last(x, fmt, **kw):
    """Any negative axis taken as the last one (``axis < 0`` -> ``ndim - 1``)."""
    if kw["axis"] < 0:
        kw = {**kw, "axis": x.ndim - 1}
    return _mx(x, fmt, **kw)


def rceil_float32_on_float64(x, fmt, **kw):
    """Declares rceil=float32 and applies it to float64 inputs too (the policy is float32-only)."""
    if kw["scale_mode"] != "rceil":
        return _mx(x, fmt, **kw)
    maxn = np.float32(get_format(fmt).element.max_normal)

    def choose(amax, old):
        with np.errstate(divide="ignore", over="ignore"):
            q = amax.astype(np.float32) / maxn
            xx = np.ceil(np.log2(q).astype(np.float64))
        xx = np.where(q == 0, -127, xx)
        return xx, xx

    return _with_exponents(x, fmt, kw, choose)


def e3m2_max_24(x, fmt, **kw):
    """E3M2 with a wrong max normal, 24 (1.5 x 2^4) instead of 28: elements saturate to 24, and
    rceil divides by 24."""
    if fmt != "mxfp6_e3m2":
        return _mx(x, fmt, **kw)
    out = _mx(x, fmt, **kw)
    if kw["scale_mode"] == "rceil":
        def choose(amax, old):
            with np.errstate(divide="ignore"):
                xx = np.ceil(np.log2(amax / 24.0))
            xx = np.where(amax == 0, -127, xx)
            return xx, xx
        out = _with_exponents(x, fmt, kw, choose)
    scales, el = (out.scales, out.elements) if hasattr(out, "scales") else (out["scales"], out["elements"])
    el = np.where((el & 0x1F) == 0x1F, (el & 0x20) | 0x1E, el).astype(np.uint8)
    return {"scales": scales, "elements": el}


def ftz_float64_too(x, fmt, **kw):
    """Declares ftz=inputs and flushes float64 inputs below 2^-126 too (the policy is float32/bfloat16)."""
    if x.dtype == np.float64:
        x = np.where(np.abs(x) < 2.0**-126, np.copysign(0.0, x), x)
    elif x.dtype.name in ("float32", "bfloat16"):
        wide = x.astype(np.float32)
        x = np.where(np.abs(wide) < np.float32(2.0**-126), wide * np.float32(0.0), wide).astype(x.dtype)
    return _mx(x, fmt, **kw)


def decode_via_float32(x, fmt, **kw):
    """Right codes; the float64 decode is the float32 one widened (overflows and flushes)."""
    mx = _mx(x, fmt, **kw)
    with np.errstate(over="ignore"):
        dec = mx_spec.dequantize(mx, np.float32).astype(np.float64)
    return {"scales": mx.scales, "elements": mx.elements, "decoded_f64": dec}


def scale_code_0_at_2m126(x, fmt, **kw):
    """torchao-style: blocks with scale code 0 (X = -127) have their elements divided by 2^-126."""
    return _with_exponents(x, fmt, kw, lambda amax, old: (old, np.where(old == -127, -126, old)))


def fp4_declared_high_first(x, fmt, **kw):
    """Packs the default low-first way but is run with --layout fp4=high-first declared."""
    mx = _mx(x, fmt, **kw)
    return {"scales": mx.scales, "elements": mx.elements, "packed": np.asarray(mx_spec.pack(mx))}


def float_codes(x, fmt, **kw):
    """Element codes returned as floats with a fractional part (truncation would hide it)."""
    mx = _mx(x, fmt, **kw)
    return {"scales": mx.scales, "elements": mx.elements.astype(np.float64) + 0.5}


def wrapped_codes(x, fmt, **kw):
    """Element codes off by 256 in a wide integer type (a uint8 cast would wrap them back)."""
    mx = _mx(x, fmt, **kw)
    return {"scales": mx.scales, "elements": mx.elements.astype(np.int16) + 256}


def decoded_f32_in_float64(x, fmt, **kw):
    """decoded_f32 computed and returned in float64 (a float32 cast could round it onto the answer)."""
    mx = _mx(x, fmt, **kw)
    return {"scales": mx.scales, "elements": mx.elements, "decoded_f32": mx_spec.dequantize(mx, np.float64)}


def int8_minus_inf_to_0x81(x, fmt, **kw):
    """Declares inf=saturate,int8=full-range, but ±Inf is taken as ±(largest finite input) and
    rounded like a finite value, so -Inf saturates to -127/64 (0x81) instead of -2.0 (0x80)."""
    return inf_saturates(x, fmt, **kw)


def float64_log2_scale(x, fmt, **kw):
    """gfloat-style floor scale from float64 log2: one high just below a power of two."""
    if kw["scale_mode"] != "floor":
        return _mx(x, fmt, **kw)
    emax = get_format(fmt).element.emax

    def choose(amax, old):
        with np.errstate(divide="ignore"):
            xx = np.floor(np.log2(amax)) - emax
        xx = np.where(amax == 0, -127, xx)
        return xx, xx

    return _with_exponents(x, fmt, kw, choose)


ALL = None
FLOOR = [("floor", "rne"), ("floor", "away")]
RCEIL = [("rceil", "rne"), ("rceil", "away")]
#: Phrases of hints that would mislead when given for a bug they do not name.
MISLEADING = {
    "scale": "scale one high in every mismatching block",
    "float64": "every failing case has a float64 input",
    "declare fp4": "declare the layout fp4=high-first",
    "ftz": "pass under policy ftz=inputs",
}

# bug name, quantizer, formats (None = all six), modes, declared policies / layouts,
# the hint's key phrase (None: no hint may be given)
PLANTED = [
    ("ties away", ties_away, None, SPEC, "", "", "every element mismatch is a tie"),
    ("ceil scale", ceil_scale, None, SPEC, "", "", "scale one high in every mismatching block"),
    ("no saturation", no_saturation, None, SPEC, "", "", "above the max normal"),
    ("E4M3 max 480", e4m3_max_480, ["mxfp8_e4m3"], SPEC, "", "", "max normal is 448, not 480"),
    ("nibble swap", nibble_swap, ["mxfp4_e2m1"], SPEC, "", "", "all packed mismatches are nibble swaps"),
    ("FP6 MSB-first", fp6_msb_first, ["mxfp6_e3m2", "mxfp6_e2m3"], SPEC, "", "", "matches an MSB-first bit stream"),
    ("subnormal flush", subnormal_flush, None, SPEC, "", "", "element subnormals are flushed"),
    ("zero-block scale", zero_block_scale, None, SPEC, "", "", "every scale mismatch is an all-zero block"),
    ("float64 via float32", float64_via_float32, None, SPEC, "", "", "every failing case has a float64 input"),
    ("Inf policy", inf_saturates, None, SPEC, "", "", "pass under policy inf=saturate"),
    ("INT8 -128", int8_minus_128, ["mxint8"], SPEC, "", "", "the policy int8=full-range"),
    ("NaN-scale decode ignored", nan_scale_decode_ignored, ["mxfp4_e2m1", "mxfp8_e4m3"], SPEC, "", "",
     "of NaN-scale blocks (scale 0xFF) are not NaN"),
    # issue #25
    ("negative axis as last", negative_axis_as_last, None, SPEC, "", "", None),
    ("rceil=float32 on float64", rceil_float32_on_float64, None, RCEIL, "rceil=float32", "",
     "the declared rceil=float32 covers float32, bfloat16 and float16 inputs only"),
    ("E3M2 max normal 24", e3m2_max_24, ["mxfp6_e3m2"], ALL, "", "", None),
    ("FTZ of float64 inputs", ftz_float64_too, None, SPEC, "ftz=inputs", "", None),
    ("float64 decode via float32", decode_via_float32, None, SPEC, "", "", None),
    ("scale code 0 at 2^-126", scale_code_0_at_2m126, None, SPEC, "", "", None),
    ("fp4=high-first declared, low-first packed", fp4_declared_high_first, ["mxfp4_e2m1"], SPEC, "",
     "fp4=high-first", "drop the declared layout fp4=high-first"),
    ("float element codes", float_codes, ["mxfp8_e4m3"], SPEC, "", "", None),
    ("codes off by 256", wrapped_codes, ["mxint8"], SPEC, "", "", None),
    ("decoded_f32 in float64", decoded_f32_in_float64, ["mxfp6_e2m3"], SPEC, "", "", None),
    ("-Inf to 0x81 under int8=full-range", int8_minus_inf_to_0x81, ["mxint8"], SPEC, "inf=saturate,int8=full-range",
     "", None),
    ("float64 log2 scale", float64_log2_scale, None, SPEC, "", "", "scale one high in every mismatching block"),
]


@pytest.mark.parametrize("name,fn,formats,modes,policies,layouts,hint", PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_bug_is_caught_and_hinted_right_or_not_at_all(name, fn, formats, modes, policies, layouts, hint):
    report = verify_quantizer(fn, formats=formats, modes=modes, policies=policies, layouts=layouts)
    assert report.verdict == "FAIL" and report.n_failed > 0, f"{name} was not caught"
    assert not any(m.field == "exception" for m in report.mismatches), "the planted quantizer itself crashed"
    hints = report.hints()
    if hint is None:
        assert hints == [], f"{name}: no hint fits, but got {hints}"
    else:
        assert any(hint in h for h in hints), f"{name}: hints {hints}"
        assert hint in report.summary()
        wrong = [h for h in hints for phrase in MISLEADING.values() if phrase in h and hint not in h]
        assert not wrong, f"{name}: misleading hints {wrong}"


def test_every_bug_row_has_a_distinct_quantizer():
    assert len({p[1] for p in PLANTED}) == len(PLANTED) == 24


def test_correct_quantizer_gets_no_hint():
    report = verify_quantizer(_mx, formats=["mxfp4_e2m1", "mxint8"], modes=SPEC)
    assert report.verdict == "PASS" and report.hints() == []


def test_hints_stay_quiet_on_a_mixture():
    """Two bugs at once: no 'every mismatch is ...' hint may claim the whole failure."""
    def two_bugs(x, fmt, **kw):
        return ceil_scale(x, fmt, **kw) if x.dtype == np.float64 else ties_away(x, fmt, **kw)

    hints = verify_quantizer(two_bugs, formats=["mxfp8_e4m3"], modes=SPEC).hints()
    assert not any("every element mismatch is a tie" in h for h in hints)
    assert not any("every failing case has a float64 input" in h for h in hints)


def test_formats_cover_every_planted_bug():
    for _, _, formats, *_ in PLANTED:
        for f in formats or []:
            get_format(f)


def test_a_policy_that_breaks_passing_cases_is_not_suggested():
    """torchao-style scale-code-0 bug: 3 failing cases happen to pass under ftz=inputs, but
    declaring it would make 10 passing cases fail, so no ftz hint and no per-case annotation."""
    report = verify_quantizer(scale_code_0_at_2m126, modes=SPEC)
    assert "ftz=inputs" in report._case_policy_match.values()
    fixed, _, broken = policy_effect(report, "ftz=inputs")
    assert fixed > 0 and broken > 0
    assert not any("ftz" in h for h in report.hints())
    assert not any("[passes under" in m for m in report.failed_cases.values())


def test_element_bug_with_some_scale_mismatches_gets_no_scale_hint():
    """E3M2 max normal 24: most failing cases have right scales and wrong elements; the rceil
    scale mismatches (all one high) must not produce 'scale one high in every mismatching block'."""
    report = verify_quantizer(e3m2_max_24, formats=["mxfp6_e3m2"])
    scale_cases = {m.case_id for m in report.mismatches if m.field == "scales"}
    assert scale_cases and len(scale_cases) < report.n_failed
    assert not any("scale" in h for h in report.hints())
