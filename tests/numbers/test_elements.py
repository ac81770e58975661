"""Element codecs, the rounding primitive and E8M0, against ml_dtypes and a brute-force reference."""

import ml_dtypes
import numpy as np
import pytest

from brute_force_mx import ML_DTYPES, code_values, nearest_codes, positive_grid
from mx_spec import (
    decode_e8m0,
    decode_elements,
    encode_e8m0,
    encode_elements,
    get_element,
    round_to_element_grid,
    shared_exponent,
)

ELEMS = ["e4m3", "e5m2", "e3m2", "e2m3", "e2m1", "int8"]


def dense_sweep_f32(elem: str) -> np.ndarray:
    """Every float16 value, every grid midpoint and its float32 neighbours, random bit patterns."""
    rng = np.random.default_rng(0)
    grid, _ = positive_grid(elem)
    mids = ((grid[1:] + grid[:-1]) / 2).astype(np.float32)
    near = np.concatenate([mids, np.nextafter(mids, np.float32(0)), np.nextafter(mids, np.float32(np.inf))])
    f16 = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
    rand = rng.integers(0, 1 << 32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    v = np.concatenate([f16, near, -near, grid.astype(np.float32), rand])
    return v[np.isfinite(v)]


@pytest.mark.parametrize("elem", list(ML_DTYPES))
def test_decode_every_code_equals_ml_dtypes(elem):
    codes = np.arange(1 << get_element(elem).bits, dtype=np.uint8)
    ref = codes.view(ML_DTYPES[elem]).astype(np.float64)
    ours = decode_elements(codes, elem, dtype=np.float64)
    np.testing.assert_array_equal(ours, ref)
    assert np.array_equal(np.signbit(ours), np.signbit(ref))
    np.testing.assert_array_equal(decode_elements(codes, elem), ref.astype(np.float32))


def test_decode_int8_is_twos_complement_over_64():
    codes = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(decode_elements(codes, "int8", dtype=np.float64), code_values("int8"))
    assert decode_elements(np.array([0x80], np.uint8), "int8")[0] == -2.0
    assert decode_elements(np.array([0x7F, 0x81], np.uint8), "int8").tolist() == [127 / 64, -127 / 64]


@pytest.mark.parametrize("elem", list(ML_DTYPES))
def test_encode_matches_ml_dtypes_rne_cast(elem):
    """ml_dtypes casts overflow to NaN (e4m3) or Inf (e5m2), so inputs are saturated first."""
    e = get_element(elem)
    v = dense_sweep_f32(elem)
    sat = np.clip(v, -e.max_normal, e.max_normal)
    ref = sat.astype(ML_DTYPES[elem]).view(np.uint8)
    np.testing.assert_array_equal(encode_elements(v, elem), ref)


@pytest.mark.parametrize("elem", ELEMS)
@pytest.mark.parametrize("rounding", ["rne", "away"])
def test_encode_matches_brute_force_nearest(elem, rounding):
    v = dense_sweep_f32(elem)
    np.testing.assert_array_equal(encode_elements(v, elem, rounding=rounding), nearest_codes(v, elem, rounding))


@pytest.mark.parametrize("elem", ELEMS)
def test_float64_inputs_are_not_rounded_through_float32(elem):
    """Midpoint + 2^-40 relative rounds to the midpoint in float32 (then to even): must go up."""
    grid, _ = positive_grid(elem)
    mids = (grid[1:] + grid[:-1]) / 2
    above = mids * (1 + 2.0**-40)
    below = mids * (1 - 2.0**-40)
    v = np.concatenate([above, below, -above])
    assert np.any(above.astype(np.float32) == mids)  # float32 would destroy the information
    np.testing.assert_array_equal(encode_elements(v, elem), nearest_codes(v, elem))
    np.testing.assert_array_equal(encode_elements(above, elem, "away"), nearest_codes(above, elem, "away"))


@pytest.mark.parametrize("elem", ELEMS)
def test_half_precision_inputs_widen_exactly(elem):
    f16 = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    f16 = f16[np.isfinite(f16)]
    np.testing.assert_array_equal(encode_elements(f16, elem), nearest_codes(f16.astype(np.float64), elem))
    bf = np.arange(1 << 16, dtype=np.uint16).view(ml_dtypes.bfloat16)
    bf = bf[np.isfinite(bf.astype(np.float32))]
    np.testing.assert_array_equal(encode_elements(bf, elem), nearest_codes(bf.astype(np.float64), elem))


@pytest.mark.parametrize("elem", ELEMS)
def test_round_to_element_grid_returns_nearest_grid_value(elem):
    e = get_element(elem)
    v = dense_sweep_f32(elem)
    for rounding in ("rne", "away"):
        r = round_to_element_grid(v, emin=e.emin, mbits=e.mbits, max_normal=e.max_normal, rounding=rounding)
        assert r.dtype == np.float32
        ref = code_values(elem)[nearest_codes(v, elem, rounding)]
        np.testing.assert_array_equal(r, ref)
        if e.kind == "fp":
            assert np.array_equal(np.signbit(r), np.signbit(v))
    r64 = round_to_element_grid(v.astype(np.float64), emin=e.emin, mbits=e.mbits, max_normal=e.max_normal)
    assert r64.dtype == np.float64


def test_round_to_element_grid_hand_examples():
    kw = dict(emin=-6, mbits=3, max_normal=448.0)  # E4M3
    x = np.array([464.0, 465.0, 1e9, -np.inf, 2.0**-10, 2.0**-10 * 3, -(2.0**-11), 17.0, 19.0, np.nan])
    r = round_to_element_grid(x, **kw)
    np.testing.assert_array_equal(r[:-1], [448, 448, 448, -448, 0, 2.0**-8, -0.0, 16, 20])
    assert np.signbit(r[6]) and np.isnan(r[-1])
    assert round_to_element_grid(np.array([2.5, 3.5]), emin=0, mbits=1, max_normal=6.0, rounding="away").tolist() == [3, 4]


def test_round_to_element_grid_real_parameters():
    """Fractional widths: results are integer multiples of the real step, within half a step."""
    rng = np.random.default_rng(3)
    y = rng.uniform(-20, 20, 100_000)  # several chunks of the elementwise kernel
    emin, mbits, mx = -2.0, 2.5, 24.0
    r = round_to_element_grid(y, emin=emin, mbits=mbits, max_normal=mx)
    a = np.minimum(np.abs(y), mx)
    step = np.exp2(np.maximum(np.floor(np.log2(np.maximum(a, 1e-300))), emin) - mbits)
    q = np.abs(r) / step
    assert np.all(np.abs(q - np.round(q)) < 1e-9)
    assert np.all(np.abs(np.abs(r) - a) <= step / 2 * (1 + 1e-12))
    assert np.all(np.abs(r) <= mx)
    assert np.array_equal(np.signbit(r), np.signbit(y))
    r32 = round_to_element_grid(y.astype(np.float32), emin=emin, mbits=mbits, max_normal=mx)
    assert r32.dtype == np.float32
    np.testing.assert_array_equal(r32, round_to_element_grid(y.astype(np.float32).astype(np.float64), emin=emin,
                                                             mbits=mbits, max_normal=mx).astype(np.float32))
    # Integer-valued parameters given as floats take the exact path.
    e = get_element("e3m2")
    np.testing.assert_array_equal(
        round_to_element_grid(y, emin=float(e.emin), mbits=float(e.mbits), max_normal=e.max_normal),
        code_values("e3m2")[nearest_codes(y, "e3m2")],
    )


def test_encode_specials():
    x = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0])
    assert encode_elements(x, "e4m3").tolist() == [0x7F, 0xFF, 0x7E, 0xFE, 0x80]
    assert encode_elements(x, "e5m2").tolist() == [0x7F, 0xFF, 0x7C, 0xFC, 0x80]
    assert encode_elements(np.array([np.inf, -np.inf, -0.0]), "e2m1").tolist() == [0x7, 0xF, 0x8]
    assert encode_elements(np.array([np.inf, -np.inf, -0.0]), "int8").tolist() == [0x7F, 0x81, 0x00]
    for elem in ("e3m2", "e2m3", "e2m1", "int8"):
        with pytest.raises(ValueError, match="no NaN"):
            encode_elements(np.array([np.nan]), elem)


def test_e8m0_against_ml_dtypes():
    codes = np.arange(256, dtype=np.uint8)
    ref = codes.view(ml_dtypes.float8_e8m0fnu).astype(np.float64)
    np.testing.assert_array_equal(decode_e8m0(codes), ref)
    np.testing.assert_array_equal(decode_e8m0(codes, np.float32), ref.astype(np.float32))
    x = np.arange(-127, 128, dtype=np.float64)
    np.testing.assert_array_equal(encode_e8m0(np.append(x, np.nan)), np.append(codes[:255], 255))
    for bad in ([128.0], [-128.0], [0.5]):
        with pytest.raises(ValueError, match="-127, 127"):
            encode_e8m0(np.array(bad))


def _bracket(amax: np.ndarray) -> np.ndarray:
    """floor(log2 a) by comparison with exact powers of two (independent of frexp)."""
    e = np.floor(np.log2(amax)).astype(np.int64)
    e -= np.ldexp(1.0, e) > amax
    e += np.ldexp(1.0, e + 1) <= amax
    return e


def _amax_sweep() -> np.ndarray:
    rng = np.random.default_rng(5)
    a = np.abs(rng.standard_normal(20_000) * np.exp2(rng.integers(-150, 128, 20_000)))
    pows = np.ldexp(1.0, np.arange(-149, 128))
    a = np.concatenate([a, pows, pows * (1 + 2.0**-23), pows * (2 - 2.0**-23), pows * 1.75, pows * 1.875])
    a = a[a < float(np.finfo(np.float32).max)]
    return a.astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("elem", ELEMS)
def test_shared_exponent_modes_against_bracketing(elem):
    e = get_element(elem)
    a = _amax_sweep()
    a = a[a > 0]
    fl = _bracket(a)
    clamp = lambda x: np.clip(x, -127, 127)  # noqa: E731
    np.testing.assert_array_equal(shared_exponent(a, e.emax, "floor"), clamp(fl - e.emax))
    is_pow2 = np.ldexp(1.0, fl) == a
    np.testing.assert_array_equal(shared_exponent(a, e.emax, "ceil"), clamp(fl + ~is_pow2 - e.emax))
    # rceil: the smallest X with a <= max_normal * 2^X
    x = shared_exponent(a, e.emax, "rceil", max_normal=e.max_normal)
    raw = fl - e.emax - 1
    raw = raw + (a > e.max_normal * np.exp2(raw.astype(np.float64)))
    raw = raw + (a > e.max_normal * np.exp2(raw.astype(np.float64)))
    np.testing.assert_array_equal(x, clamp(raw))


@pytest.mark.parametrize("elem", list(ML_DTYPES))
def test_shared_exponent_even_matches_torchao_bit_trick_on_normal_float32(elem):
    """torchao EVEN: add half an ulp at mbits to the float32 pattern, mask the mantissa off.

    Subnormal amax (no implicit bit) may round differently, but every block with a subnormal
    amax clamps to X = -127 either way, so the rules agree on all finite float32 amax.
    """
    e = get_element(elem)
    a32 = _amax_sweep().astype(np.float32)
    a32 = a32[a32 > 0]  # every finite float32 magnitude: subnormals and the top binade too
    bits = a32.view(np.int32)
    rounded = (bits + (1 << (23 - e.mbits - 1))) & np.int32(0x7F800000)
    ref = np.clip((rounded >> 23) - 127 - e.emax, -127, 127)
    np.testing.assert_array_equal(shared_exponent(a32, e.emax, "even", mbits=e.mbits), ref)


def test_shared_exponent_special_amax():
    x = shared_exponent(np.array([0.0, np.inf, np.nan, 2.0**200, 2.0**-200]), 8, "floor")
    assert x[0] == -127 and np.isnan(x[1]) and np.isnan(x[2]) and x[3] == 127 and x[4] == -127
    assert shared_exponent(np.array([3.0]), 1.5, "floor")[0] == -0.5  # real emax (minifloat)
