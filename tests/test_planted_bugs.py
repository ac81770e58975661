"""The planted-bug table (issue #13): twelve classic MX quantizer bugs, each caught by the golden
vectors, and each named by the verifier's cause hint where a hint applies.

Every buggy quantizer is mx_spec plus one deliberate defect, written independently of the
verifier's own policy code (see mx_spec/policies.py) so a shared mistake cannot hide a bug.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import mx_spec
from mx_spec.formats import get_format
from mx_spec.verify import verify_quantizer

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


# bug name, quantizer, formats (None = all six), the hint's key phrase (None: no hint expected)
PLANTED = [
    ("ties away", ties_away, None, "every element mismatch is a tie"),
    ("ceil scale", ceil_scale, None, "scale one high in every mismatching block"),
    ("no saturation", no_saturation, None, "above the max normal"),
    ("E4M3 max 480", e4m3_max_480, ["mxfp8_e4m3"], "max normal is 448, not 480"),
    ("nibble swap", nibble_swap, ["mxfp4_e2m1"], "all packed mismatches are nibble swaps"),
    ("FP6 MSB-first", fp6_msb_first, ["mxfp6_e3m2", "mxfp6_e2m3"], "matches an MSB-first bit stream"),
    ("subnormal flush", subnormal_flush, None, "element subnormals are flushed"),
    ("zero-block scale", zero_block_scale, None, "every scale mismatch is an all-zero block"),
    ("float64 via float32", float64_via_float32, None, "every failing case has a float64 input"),
    ("Inf policy", inf_saturates, None, "pass under --policy inf=saturate"),
    ("INT8 -128", int8_minus_128, ["mxint8"], "--policy int8=full-range"),
    ("NaN-scale decode ignored", nan_scale_decode_ignored, ["mxfp4_e2m1", "mxfp8_e4m3"],
     "of NaN-scale blocks (scale 0xFF) are not NaN"),
]


@pytest.mark.parametrize("name,fn,formats,hint", PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_bug_is_caught_and_named(name, fn, formats, hint):
    report = verify_quantizer(fn, formats=formats, modes=SPEC)
    assert not report.ok and report.n_failed > 0, f"{name} was not caught"
    assert not any(m.field == "exception" for m in report.mismatches), "the planted quantizer itself crashed"
    hints = report.hints()
    assert any(hint in h for h in hints), f"{name}: hints {hints}"
    assert hint in report.summary()


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
    for _, _, formats, _ in PLANTED:
        for f in formats or []:
            get_format(f)
