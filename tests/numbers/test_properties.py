"""Hypothesis property tests of the element codecs and of MX block quantization."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from brute_force_mx import ELEM_OF, code_values
from mx_spec import MX_FORMATS, decode_elements, encode_elements, get_element, get_format, quantize, quantize_dequantize

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ELEMS = ["e4m3", "e5m2", "e3m2", "e2m3", "e2m1", "int8"]
FORMATS = list(MX_FORMATS)


def finite_values(width=64, max_abs=None):
    kw = dict(allow_nan=False, allow_infinity=False, width=width)
    if max_abs is not None:
        kw.update(min_value=-max_abs, max_value=max_abs)
    return st.floats(**kw)


def blocks(width=32):
    dtype = np.float32 if width == 32 else np.float64
    return st.integers(1, 3).flatmap(
        lambda nb: arrays(dtype, (nb, 32), elements=finite_values(width)))


@SETTINGS
@given(elem=st.sampled_from(ELEMS), v=arrays(np.float64, 16, elements=finite_values(64, 1e6)))
def test_decode_encode_is_nearest_representable(elem, v):
    e = get_element(elem)
    got = decode_elements(encode_elements(v, elem), elem, dtype=np.float64)
    table = code_values(elem)
    table = table[np.isfinite(table)]
    target = np.clip(v, -e.max_normal, e.max_normal)
    best = np.min(np.abs(table[None, :] - target[:, None]), axis=1)
    assert np.all(np.abs(got - target) == best)


@SETTINGS
@given(elem=st.sampled_from(ELEMS), v=arrays(np.float64, 32, elements=finite_values(64, 1e5)),
       rounding=st.sampled_from(["rne", "away"]))
def test_encode_is_monotone_and_sign_symmetric(elem, v, rounding):
    e = get_element(elem)
    v = np.sort(v)
    dec = decode_elements(encode_elements(v, elem, rounding), elem, dtype=np.float64)
    assert np.all(np.diff(dec) >= 0)
    pos, neg = encode_elements(np.abs(v), elem, rounding), encode_elements(-np.abs(v), elem, rounding)
    if e.kind == "int":
        assert np.array_equal((-pos.astype(np.int16)) & 0xFF, neg)
    else:
        assert np.array_equal(pos | e.sign_bit, neg)


@SETTINGS
@given(fmt=st.sampled_from(FORMATS), x=blocks(32), mode=st.sampled_from(["floor", "ceil", "even", "rceil"]),
       rounding=st.sampled_from(["rne", "away"]))
def test_quantize_dequantize_is_idempotent_and_odd(fmt, x, mode, rounding):
    kw = dict(scale_mode=mode, rounding=rounding)
    with np.errstate(over="ignore"):
        once = quantize_dequantize(x, fmt, **kw)
    once = np.where(np.isfinite(once), once, 0).astype(np.float32)  # Inf: beyond float32 range
    with np.errstate(over="ignore"):
        twice = quantize_dequantize(once, fmt, **kw)
        np.testing.assert_array_equal(twice, once)
        neg = quantize_dequantize(-x, fmt, **kw)
        np.testing.assert_array_equal(neg, -quantize_dequantize(x, fmt, **kw))


@SETTINGS
@given(fmt=st.sampled_from(FORMATS), x=arrays(np.float64, (2, 32), elements=finite_values(64, 1e30)),
       k=st.integers(-40, 40), mode=st.sampled_from(["floor", "ceil", "even", "rceil"]))
def test_power_of_two_equivariance(fmt, x, k, mode):
    a = quantize(x, fmt, scale_mode=mode)
    b = quantize(np.ldexp(x, k), fmt, scale_mode=mode)
    sa, sb = a.scales.astype(int), b.scales.astype(int)
    inside = (sa > 0) & (sa < 254) & (sa + k > 0) & (sa + k < 254)
    assert np.array_equal(sb[inside], sa[inside] + k)
    rows = inside[:, 0]
    assert np.array_equal(a.elements[rows], b.elements[rows])


@SETTINGS
@given(fmt=st.sampled_from(FORMATS), x=blocks(64), rounding=st.sampled_from(["rne", "away"]))
def test_error_at_most_half_a_grid_step_unless_saturating(fmt, x, rounding):
    e = get_format(fmt).element
    mx = quantize(x, fmt, rounding=rounding)
    xs = mx.scales[:, :1].astype(np.int64) - 127
    y = np.ldexp(x, -xs)
    err = np.abs(np.ldexp(decode_elements(mx.elements, e, np.float64), xs) - x)
    with np.errstate(divide="ignore"):
        fl = np.floor(np.log2(np.abs(y)))
    half_step = np.ldexp(0.5, (np.maximum(fl, e.emin) - e.mbits).astype(np.int64) + xs)
    unsaturated = np.abs(y) <= e.max_normal
    assert np.all(err[unsaturated] <= half_step[unsaturated])
    got = decode_elements(mx.elements, e, np.float64)
    assert np.all(got[~unsaturated] == np.sign(y[~unsaturated]) * e.max_normal)  # saturates to ±max


@SETTINGS
@given(fmt=st.sampled_from(FORMATS), x=blocks(32), mode=st.sampled_from(["floor", "ceil", "even", "rceil"]))
def test_codes_always_valid_for_finite_input(fmt, x, mode):
    e = get_format(fmt).element
    mx = quantize(x, fmt, scale_mode=mode)
    assert mx.elements.dtype == np.uint8 and mx.scales.dtype == np.uint8
    assert np.all(mx.elements <= e.code_mask) and np.all(mx.scales != 0xFF)
    if e.kind == "int":
        assert not np.any(mx.elements == 0x80)
    else:
        assert np.all((mx.elements & ~np.uint8(e.sign_bit)) <= e.max_code)
    assert np.all(np.isfinite(decode_elements(mx.elements, e)))
