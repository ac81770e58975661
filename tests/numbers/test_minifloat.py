"""Real-width MX minifloat (mx_spec.minifloat): exact at the integer points, documented rule elsewhere."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mx_spec.conformance.golden import load_golden
from mx_spec.minifloat import (
    block_scale_exponent,
    minifloat_params,
    quantize_dequantize_minifloat,
)
from mx_spec.quantize import quantize_dequantize

INTEGER_POINTS = {
    (2, 1): "mxfp4_e2m1",
    (3, 2): "mxfp6_e3m2",
    (2, 3): "mxfp6_e2m3",
    (4, 3): "mxfp8_e4m3",
}


def _hard_blocks(rng: np.random.Generator, n_blocks: int, dtype=np.float32) -> np.ndarray:
    """Heavy-tailed blocks over a wide exponent range, with zeros, ties, NaN/Inf and subnormals."""
    x = rng.standard_t(2, size=(n_blocks, 32)) * np.exp2(rng.integers(-30, 30, size=(n_blocks, 1)))
    x[0] = 0.0
    x[1, 3] = np.nan
    x[2, 7] = -np.inf
    x[3] = rng.standard_normal(32) * 1e-42  # float32 subnormals
    x[4] = np.ldexp(rng.integers(-64, 64, size=32) + 0.5, -4)  # exact ties on fine grids
    x[5, :] = -0.0
    return x.astype(dtype)


@pytest.mark.parametrize("widths,fmt", list(INTEGER_POINTS.items()), ids=list(INTEGER_POINTS.values()))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rounding", ["rne", "away"])
def test_integer_points_equal_standard_formats_bit_for_bit(widths, fmt, dtype, rounding):
    rng = np.random.default_rng(sum(widths) * 7 + (dtype == np.float64))
    x = _hard_blocks(rng, 400, dtype).reshape(20, 640)  # 20 blocks per row along the last axis
    got = quantize_dequantize_minifloat(x, *widths, rounding=rounding)
    want = quantize_dequantize(x, fmt, rounding=rounding)
    assert got.dtype == want.dtype
    view = np.int64 if dtype == np.float64 else np.int32
    assert np.array_equal(got.view(view), want.view(view))


@pytest.mark.parametrize("widths,fmt", list(INTEGER_POINTS.items()), ids=list(INTEGER_POINTS.values()))
def test_integer_points_other_axis_and_ragged_blocks(widths, fmt):
    rng = np.random.default_rng(3)
    x = _hard_blocks(rng, 21, np.float32).reshape(7, 96).T.copy()  # blocks along axis 0, 96 rows
    x = x[:83]  # ragged: 83 = 2 * 32 + 19
    got = quantize_dequantize_minifloat(x, *widths, axis=0, block_size=32)
    want = quantize_dequantize(x, fmt, axis=0, block_size=32)
    assert np.array_equal(got.view(np.int32), want.view(np.int32))


def test_integer_points_match_golden_files():
    files = load_golden(formats=list(INTEGER_POINTS.values()))  # committed under golden/
    widths = {v: k for k, v in INTEGER_POINTS.items()}
    checked = 0
    for fmt, gf in files.items():
        for case in gf.cases:
            if case.scale_mode != "floor":
                continue  # the minifloat implements the OCP floor scale only
            got = quantize_dequantize_minifloat(
                case.x, *widths[fmt], block_size=case.block_size, axis=case.axis,
                rounding=case.rounding,
            )
            want = case.decoded_f64 if got.dtype == np.float64 else case.decoded_f32
            assert np.array_equal(got, want.astype(got.dtype), equal_nan=True), case.id
            checked += 1
    assert checked > 100


def test_parameters_follow_the_stated_formulas():
    for e, m in [(2, 1), (3, 2), (2, 3), (4, 3), (2.5, 1.7), (3.9, 2.9)]:
        p = minifloat_params(e, m)
        bias = 2 ** (e - 1) - 1
        assert p.bias == pytest.approx(bias)
        assert p.emax == pytest.approx(2**e - 1 - bias)
        assert p.emin == pytest.approx(1 - bias)
        assert p.max_normal == pytest.approx(min((2 - 2**-m) * 2 ** (2**e - 1 - bias), 448.0))
        assert p.element_bits == pytest.approx(1 + e + m)
    # OCP Table 1 max normals at the integer points
    assert [minifloat_params(*w).max_normal for w in INTEGER_POINTS] == [6.0, 28.0, 7.5, 448.0]
    # the 448 cap (E4M3's S.1111.111 is NaN) is continuous and inactive below beta ~ 1.98
    assert minifloat_params(3.95, 2.95).max_normal < 448.0
    assert minifloat_params(3.999, 2.999).max_normal == 448.0


def test_fractional_scale_is_power_of_two_floor_of_log2_amax_minus_emax():
    rng = np.random.default_rng(11)
    amax = np.abs(rng.standard_t(3, size=5000)) * np.exp2(rng.integers(-20, 20, size=5000))
    for emax in [2.0, 2.3, 2.8284271247461903, 5.5, 7.9]:
        X = block_scale_exponent(amax, emax)
        want = np.array([math.floor(math.log2(a) - emax) for a in amax])
        assert np.array_equal(X, want)


def _scale_exponent_by_rule(amax, e, m, rule):
    """Independent statement of the two rules (module docstring of mx_spec.minifloat)."""
    bias = 2.0 ** (e - 1) - 1
    emax = 2.0**e - 1 - bias
    if rule == "emax":
        return np.floor(np.log2(amax) - emax)
    max_normal = min((2 - 2.0**-m) * 2.0**emax, 448.0)
    return np.floor(np.log2(amax)) - math.floor(math.log2(max_normal))


@pytest.mark.parametrize("rule", ["maxfloat", "emax"])
@pytest.mark.parametrize("e,m", [(2.5, 1.5), (3.3, 2.3), (2.0, 2.4), (3.9, 2.9)])
def test_fractional_widths_round_to_the_documented_grid(e, m, rule):
    rng = np.random.default_rng(5)
    x = (rng.standard_t(3, size=(64, 32)) * np.exp2(rng.integers(-6, 6, size=(64, 1)))).astype(np.float64)
    q, X = quantize_dequantize_minifloat(x, e, m, fractional_scale=rule, return_scale_exponent=True)
    p = minifloat_params(e, m, fractional_scale=rule)
    amax = np.abs(x).max(axis=1)
    assert X.shape == (64, 1)
    assert np.array_equal(X[:, 0], _scale_exponent_by_rule(amax, e, m, rule))
    s = np.exp2(X)
    y = x / s
    saturated = np.abs(y) >= p.max_normal
    assert np.count_nonzero(saturated) > 0
    # in units of x: step = 2^(max(floor(log2|x/s|), emin) - M) * s; each element goes to the
    # nearest of {multiples of its step, +-max_normal}; beyond max_normal it saturates
    step = np.exp2(np.maximum(np.floor(np.log2(np.abs(y))), p.emin) - m) * s
    err = np.abs(q - x)
    assert np.all(err[~saturated] <= step[~saturated] / 2 * (1 + 1e-12))
    on_grid = ~saturated & (np.abs(q) != s * p.max_normal)
    k = q[on_grid] / step[on_grid]
    assert np.allclose(k, np.round(k), rtol=0, atol=1e-9)
    assert np.array_equal(np.abs(q[saturated]), (s * p.max_normal * np.ones_like(x))[saturated])
    assert np.all(np.abs(q) <= s * p.max_normal)


@pytest.mark.parametrize("widths", INTEGER_POINTS)
@pytest.mark.parametrize("scale_mode", ["floor", "ceil"])  # the modes the minifloat takes
def test_both_scale_rules_agree_bit_for_bit_at_integer_widths(widths, scale_mode):
    rng = np.random.default_rng(17)
    x = (rng.standard_t(2, size=(256, 32)) * np.exp2(rng.integers(-30, 30, size=(256, 1)))).astype(np.float32)
    a, xa = quantize_dequantize_minifloat(x, *widths, scale_mode=scale_mode, fractional_scale="maxfloat",
                                          return_scale_exponent=True)
    b, xb = quantize_dequantize_minifloat(x, *widths, scale_mode=scale_mode, fractional_scale="emax",
                                          return_scale_exponent=True)
    assert np.array_equal(xa, xb)
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_the_scale_rules_differ_between_integer_points():
    rng = np.random.default_rng(3)
    amax = np.abs(rng.standard_t(3, size=4096)) + 1e-3
    x = np.concatenate([amax[:, None], np.zeros((4096, 31))], axis=1)
    differ = 0
    for beta in np.linspace(0.05, 1.95, 12):
        _, xm = quantize_dequantize_minifloat(x, 2 + beta, 1 + beta, return_scale_exponent=True)
        _, xe = quantize_dequantize_minifloat(x, 2 + beta, 1 + beta, fractional_scale="emax",
                                              return_scale_exponent=True)
        differ += int(np.any(xm != xe))
    assert differ >= 6


def test_unknown_scale_rule_is_a_clear_error():
    with pytest.raises(ValueError, match="maxfloat"):
        quantize_dequantize_minifloat(np.ones((2, 32), np.float32), 2.5, 1.5, fractional_scale="max")


def test_error_decreases_with_more_bits():
    rng = np.random.default_rng(2)
    x = rng.standard_t(5, size=(2048, 32))
    betas = np.linspace(0, 2, 9)
    # E fixed (fp6_fp4 path): the scale does not move, more mantissa is always better here
    mse_m = [np.mean((quantize_dequantize_minifloat(x, 2, 1 + b) - x) ** 2) for b in betas]
    assert all(a > b for a, b in zip(mse_m, mse_m[1:]))
    # E and M together (fp8_fp4 path): better from each integer point to the next and on every
    # half-unit step, but not on every small step: the floor scale's clipping of the block
    # maximum is a sawtooth in emax (module docstring), so the error is not monotone in beta.
    mse = {b: np.mean((quantize_dequantize_minifloat(x, 2 + b, 1 + b, fractional_scale="emax") - x) ** 2)
           for b in betas}
    assert mse[0.0] > mse[1.0] > mse[2.0]
    assert all(mse[b] > mse[b + 0.5] for b in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(ebits=0.5, mbits=1), "exponent width"),
        (dict(ebits=float("nan"), mbits=1), "exponent width"),
        (dict(ebits=2, mbits=-0.1), "mantissa width"),
        (dict(ebits=2, mbits=1, block_size=0), "block_size"),
    ],
)
def test_bad_parameters_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        quantize_dequantize_minifloat(np.ones((2, 32), np.float32), **kwargs)
