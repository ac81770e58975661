"""Bad input raises a clear exception that names the valid choices; never a silent number."""

import numpy as np
import pytest

from mx_spec import (
    decode_elements,
    dequantize,
    encode_elements,
    quantize,
    quantize_dequantize,
    round_to_element_grid,
    shared_exponent,
)

X = np.ones((2, 32), np.float32)


@pytest.mark.parametrize("arr", [np.ones(32, np.int32), np.ones(32, np.complex64), np.array([1.0] * 32, object),
                                 np.ones(32, bool), [1, 2, 3]])
def test_unsupported_dtypes(arr):
    with pytest.raises(TypeError, match="float16, bfloat16, float32, float64"):
        quantize(arr, "mxfp8_e4m3")
    with pytest.raises(TypeError, match="supported"):
        encode_elements(arr, "e4m3")
    with pytest.raises(TypeError, match="supported"):
        round_to_element_grid(arr, emin=-6, mbits=3, max_normal=448.0)


@pytest.mark.parametrize("arr,hint,wrong", [
    (np.ones(32, np.complex64), "x.real and x.imag", "integers"),
    (np.ones(32, np.int32), "convert integers with .astype(np.float32)", "real"),
    (np.array([1.0] * 32, object), "np.asarray(x, dtype=np.float32)", "integers"),
], ids=["complex", "int", "object"])
def test_unsupported_dtype_hint_fits_the_dtype(arr, hint, wrong):
    with pytest.raises(TypeError) as info:
        quantize(arr, "mxfp8_e4m3")
    assert hint in str(info.value) and wrong not in str(info.value)


@pytest.mark.parametrize("bs,exc,msg", [
    (0, ValueError, ">= 1"), (-32, ValueError, ">= 1"), (float("nan"), ValueError, "finite"),
    (float("inf"), ValueError, "finite"), (2.5, ValueError, "integer"), ("32", TypeError, "integer"),
    (True, TypeError, "integer"), (None, None, None),
])
def test_block_size(bs, exc, msg):
    if exc is None:
        assert quantize(X, "mxint8", block_size=bs).block_size == 32
        return
    with pytest.raises(exc, match=msg):
        quantize(X, "mxint8", block_size=bs)


def test_block_size_integral_float_is_accepted():
    assert quantize(X, "mxint8", block_size=16.0).scales.shape == (2, 2)


@pytest.mark.parametrize("axis", [2, -3, 10])
def test_axis_out_of_range(axis):
    with pytest.raises(ValueError, match=r"valid: -2\.\.1"):
        quantize(X, "mxfp4_e2m1", axis=axis)


def test_axis_type_and_zero_dim():
    with pytest.raises(TypeError, match="axis"):
        quantize(X, "mxfp4_e2m1", axis=1.0)
    with pytest.raises(ValueError, match="0-d"):
        quantize(np.float32(1.0), "mxfp4_e2m1")


def test_unknown_names():
    with pytest.raises(ValueError, match="mxfp4_e2m1"):
        quantize(X, "mxfp4")
    with pytest.raises(ValueError, match="floor, ceil, even, rceil"):
        quantize(X, "mxfp4_e2m1", scale_mode="round")
    with pytest.raises(ValueError, match="rne, away"):
        quantize(X, "mxfp4_e2m1", rounding="stochastic")
    with pytest.raises(ValueError, match="rne, away"):
        round_to_element_grid(X, emin=0, mbits=1, max_normal=6.0, rounding="nearest")
    with pytest.raises(ValueError, match="e4m3, e5m2"):
        encode_elements(X, "fp8")
    with pytest.raises(ValueError, match="floor, ceil"):
        shared_exponent(np.ones(2), 8, "nearest")
    with pytest.raises(ValueError, match="rne, away"):
        quantize_dequantize(X, "mxint8", rounding="up")


def test_codes_and_dequantize_inputs():
    with pytest.raises(ValueError, match="0..15"):
        decode_elements(np.array([16], np.uint8), "e2m1")
    with pytest.raises(TypeError, match="integer"):
        decode_elements(np.array([1.0]), "e2m1")
    with pytest.raises(TypeError, match="MXArray"):
        dequantize(X)
    with pytest.raises(TypeError, match="float16, bfloat16, float32, float64"):
        dequantize(quantize(X, "mxint8"), dtype=np.int32)


def test_shared_exponent_inputs():
    with pytest.raises(ValueError, match=">= 0"):
        shared_exponent(np.array([-1.0]), 8)
    with pytest.raises(ValueError, match="mbits"):
        shared_exponent(np.array([1.0]), 8, "even")
    with pytest.raises(ValueError, match="max_normal"):
        shared_exponent(np.array([1.0]), 8, "rceil")
    with pytest.raises(ValueError, match="integer emax"):
        shared_exponent(np.array([1.0]), 1.5, "ceil")


def test_grid_outside_exact_range():
    with pytest.raises(ValueError, match="float64"):
        round_to_element_grid(np.ones(2, np.float32), emin=-140, mbits=3, max_normal=448.0)
    with pytest.raises(ValueError, match="max_normal"):
        round_to_element_grid(np.ones(2), emin=-6, mbits=3, max_normal=float("inf"))


def test_dequantize_rejects_inconsistent_mxarray():
    from mx_spec import MXArray, get_format

    mx = quantize(np.ones((2, 64), np.float32), "mxfp8_e4m3")
    bad = MXArray(get_format("mxfp8_e4m3"), mx.scales[:, :1], mx.elements, 1, 32)
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        dequantize(bad)
    bad = MXArray(get_format("mxfp4_e2m1"), mx.scales, mx.elements, 1, 32)  # 8-bit codes as FP4
    with pytest.raises(ValueError, match="0..15"):
        dequantize(bad)
