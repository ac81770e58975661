"""Block quantization against hand-worked OCP MX v1.0 §6.3 examples and the brute-force reference."""

import math

import ml_dtypes
import numpy as np
import pytest

from brute_force_mx import ELEM_OF, EMAX, code_values, nearest_codes, reference_block
from mx_spec import MX_FORMATS, dequantize, get_format, quantize, quantize_dequantize
from mx_spec.elements import as_working
from mx_spec.quantize import _quantize_general

FORMATS = list(MX_FORMATS)


def random_blocks(n_blocks: int, k: int, seed: int) -> np.ndarray:
    """Normal, heavy-tailed, mixed-magnitude and FP32-subnormal blocks (float32)."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 4, n_blocks)[:, None]
    normal = rng.standard_normal((n_blocks, k))
    heavy = rng.standard_t(2, (n_blocks, k))
    mixed = normal * np.exp2(rng.integers(-30, 30, (n_blocks, k)))
    sub = normal * 2.0**-135
    x = np.where(kind == 0, normal, np.where(kind == 1, heavy, np.where(kind == 2, mixed, sub)))
    x *= np.exp2(rng.integers(-60, 60, (n_blocks, 1)))
    return x.astype(np.float32)


def reference(x2d: np.ndarray, elem: str, rounding: str = "rne"):
    out = [reference_block(b, elem, rounding) for b in x2d]
    return np.array([s for s, _ in out], np.uint8), np.stack([c for _, c in out])


def test_hand_examples():
    x = np.zeros(32, np.float32)
    x[0] = 464.0  # amax 464: X = 8 - 8 = 0; 464 is the tie 448|480 -> even 448 (0x7E)
    mx = quantize(x, "mxfp8_e4m3")
    assert mx.scales.tolist() == [127] and mx.elements[0] == 0x7E and not mx.elements[1:].any()
    mx = quantize(np.full(32, 1.0, np.float32), "mxfp4_e2m1")  # X = 0 - 2 -> P = 4.0 = 0b0110
    assert mx.scales.tolist() == [125] and set(mx.elements.tolist()) == {0x6}
    mx = quantize(np.array([1.0, -1.0, 0.5, -2.0**-7, 2.0**-7 * 3], np.float32), "mxint8")
    assert mx.scales.tolist() == [127] and mx.elements.tolist() == [64, 192, 32, 0, 2]
    # the block max 6*2^k lands exactly on E2M1's max normal
    mx = quantize(np.array([-6.0 * 2**20, 1.5 * 2**20], np.float32), "mxfp4_e2m1")
    assert mx.scales.tolist() == [127 + 20] and mx.elements.tolist() == [0xF, 0x3]


def test_all_zero_block_and_signed_zeros():
    x = np.array([0.0, -0.0] * 16, np.float32)
    for fmt in FORMATS:
        mx = quantize(x, fmt)
        assert mx.scales.tolist() == [0]
        sign = 0 if fmt == "mxint8" else get_format(fmt).element.sign_bit
        assert mx.elements.tolist() == [0, sign] * 16
        assert np.array_equal(np.signbit(dequantize(mx)), np.signbit(x) & (fmt != "mxint8"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_block_gets_nan_scale_and_zero_codes(bad):
    x = np.ones((2, 32), np.float32)
    x[1, 7] = bad
    for fmt in FORMATS:
        mx = quantize(x, fmt)
        assert mx.scales[:, 0].tolist() == [127 - EMAX[ELEM_OF[fmt]], 255]
        assert not mx.elements[1].any()
        back = dequantize(mx)
        assert np.all(np.isnan(back[1])) and np.all(np.isfinite(back[0]))


# Bit patterns of +Inf, -Inf, a quiet NaN and a signalling NaN (quiet bit clear) per input dtype.
SPECIAL_BITS = {
    np.float16: (np.uint16, [0x7C00, 0xFC00, 0x7E00, 0x7C01]),
    ml_dtypes.bfloat16: (np.uint16, [0x7F80, 0xFF80, 0x7FC0, 0x7F81]),
    np.float32: (np.uint32, [0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001]),
    np.float64: (np.uint64, [0x7FF0000000000000, 0xFFF0000000000000, 0x7FF8000000000000, 0x7FF0000000000001]),
}


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("dtype", list(SPECIAL_BITS), ids=lambda d: np.dtype(d).name)
def test_inf_and_nan_blocks_raise_no_warning(dtype):
    """Blocks with Inf or (quiet or signalling) NaN are a handled case: NaN scale, no RuntimeWarning."""
    uint, patterns = SPECIAL_BITS[dtype]
    x = np.ones((len(patterns) + 1, 48), dtype)  # 48: a full block and a ragged one per row
    for row, pattern in enumerate(patterns):
        x.view(uint)[row, 5] = pattern
        x.view(uint)[row, 40] = pattern
    for fmt in FORMATS:
        for rounding in ("rne", "away"):
            mx = quantize(x, fmt, rounding=rounding)
            assert (mx.scales[:-1] == 255).all() and not mx.elements[:-1].any()
            fake = quantize_dequantize(x, fmt, rounding=rounding).astype(np.float64)
            assert np.isnan(fake[:-1]).all() and np.isfinite(fake[-1]).all()
            assert np.isnan(dequantize(mx)[:-1]).all()


def test_scale_clamps_and_saturation_with_float64():
    x = np.array([2.0**200, 2.0**190, -(2.0**120)])
    for fmt in FORMATS:
        elem = get_format(fmt).element
        mx = quantize(x, fmt)
        assert mx.scales.tolist() == [254]
        assert dequantize(mx, np.float64)[0] == elem.max_normal * 2.0**127
    tiny = np.array([2.0**-300, -(2.0**-140)])
    for fmt in FORMATS:
        mx = quantize(tiny, fmt)
        assert mx.scales.tolist() == [0]
        np.testing.assert_array_equal(mx.elements, nearest_codes(np.ldexp(tiny, 127), ELEM_OF[fmt]))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rounding", ["rne", "away"])
def test_random_blocks_match_reference(fmt, rounding):
    x = random_blocks(600, 32, seed=hash(fmt) % 1000)
    x[::37, 5] = 0
    x[::53] = 0
    x[7, :] = np.float32(2.0**-149) * np.arange(32)  # FP32 subnormals, exact
    x[11, 3] = np.nan
    scales, codes = reference(x, ELEM_OF[fmt], rounding)
    mx = quantize(x, fmt, rounding=rounding)  # last axis: the fast path for rne
    np.testing.assert_array_equal(mx.scales[:, 0], scales)
    np.testing.assert_array_equal(mx.elements, codes)
    mx_t = quantize(np.ascontiguousarray(x.T), fmt, axis=0, rounding=rounding)  # general path
    np.testing.assert_array_equal(mx_t.elements.T, codes)
    np.testing.assert_array_equal(mx_t.scales[0], scales)


@pytest.mark.parametrize("fmt", ["mxfp8_e4m3", "mxfp6_e2m3", "mxint8"])
def test_dequantize_is_code_value_times_scale(fmt):
    x = random_blocks(200, 32, seed=7)
    mx = quantize(x, fmt)
    ref = code_values(ELEM_OF[fmt])[mx.elements] * np.ldexp(1.0, mx.scales.astype(int) - 127)
    np.testing.assert_array_equal(dequantize(mx, np.float64), ref)
    np.testing.assert_array_equal(dequantize(mx), ref.astype(np.float32))
    with np.errstate(over="ignore"):  # magnitudes beyond float16 become Inf on both sides
        np.testing.assert_array_equal(dequantize(mx, np.float16), ref.astype(np.float16))
    assert dequantize(mx, ml_dtypes.bfloat16).dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(quantize_dequantize(x, fmt), ref.astype(np.float32))


@pytest.mark.parametrize("fmt", ["mxfp4_e2m1", "mxfp6_e3m2", "mxint8"])
def test_any_axis_and_ragged_last_block(fmt):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((5, 70, 3)) * np.exp2(rng.integers(-8, 8, (5, 70, 3)))).astype(np.float32)
    mx = quantize(x, fmt, axis=1, block_size=32)
    assert mx.elements.shape == x.shape and mx.scales.shape == (5, 3, 3) and mx.axis == 1
    flat = np.moveaxis(x, 1, -1).reshape(-1, 70)
    for (i, row) in enumerate(flat):
        for j, start in enumerate(range(0, 70, 32)):
            s, c = reference_block(row[start:start + 32], ELEM_OF[fmt])  # last block: 6 elements
            assert np.moveaxis(mx.scales, 1, -1).reshape(-1, 3)[i, j] == s
            np.testing.assert_array_equal(np.moveaxis(mx.elements, 1, -1).reshape(-1, 70)[i, start:start + 32], c)
    back = dequantize(mx)
    assert back.shape == x.shape
    np.testing.assert_array_equal(back, np.moveaxis(dequantize(quantize(np.moveaxis(x, 1, -1), fmt)), -1, 1))


@pytest.mark.parametrize("block_size", [1, 7, 16, 64])
def test_other_block_sizes(block_size):
    x = random_blocks(20, block_size * 3, seed=block_size)
    mx = quantize(x, "mxfp8_e5m2", block_size=block_size)
    assert mx.scales.shape == (20, 3) and mx.block_size == block_size
    scales, codes = reference(x.reshape(-1, block_size), "e5m2")
    np.testing.assert_array_equal(mx.scales.ravel(), scales)
    np.testing.assert_array_equal(mx.elements.reshape(-1, block_size), codes)


@pytest.mark.parametrize("fmt", FORMATS)
def test_input_dtypes(fmt):
    x = random_blocks(50, 32, seed=9)
    f16 = np.clip(x, -60000, 60000).astype(np.float16)
    bf16 = x.astype(ml_dtypes.bfloat16)
    for low in (f16, bf16):
        a, b = quantize(low, fmt), quantize(low.astype(np.float32), fmt)
        np.testing.assert_array_equal(a.elements, b.elements)
        np.testing.assert_array_equal(a.scales, b.scales)
        assert quantize_dequantize(low, fmt).dtype == low.dtype
    # float64: values between float32 neighbours must not be rounded through float32
    x64 = x.astype(np.float64) * (1 + 2.0**-30)
    scales, codes = reference(x64, ELEM_OF[fmt])
    mx = quantize(x64, fmt)
    np.testing.assert_array_equal(mx.elements, codes)
    np.testing.assert_array_equal(mx.scales[:, 0], scales)


def _exp_ref(amax: float, fmt: str, mode: str) -> int:
    elem = get_format(fmt).element
    if amax == 0:
        return -127
    fl = math.floor(math.log2(amax))
    fl += (math.ldexp(1, fl + 1) <= amax) - (math.ldexp(1, fl) > amax)
    if mode == "floor":
        x = fl - elem.emax
    elif mode == "ceil":
        x = fl + (math.ldexp(1, fl) != amax) - elem.emax
    elif mode == "even":  # round amax to 1 + mbits significant bits (ties away), then floor
        q = math.ldexp(1, fl - elem.mbits)
        x = math.floor(math.log2(math.floor(amax / q + 0.5) * q)) - elem.emax
    else:  # rceil: smallest X with amax <= max_normal * 2^X
        x = fl - elem.emax - 1
        while amax > elem.max_normal * math.ldexp(1, x):
            x += 1
    return min(max(x, -127), 127)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mode", ["floor", "ceil", "even", "rceil"])
def test_scale_modes_blockwise(fmt, mode):
    x = random_blocks(300, 32, seed=11)
    x[:40, 0] = np.float32(1.875) * np.exp2(np.arange(40, dtype=np.float32) - 20)  # EVEN carries
    x[40:80, 0] = np.float32(get_format(fmt).element.max_normal) * np.exp2(np.arange(40, dtype=np.float32) - 20)
    mx = quantize(x, fmt, scale_mode=mode)
    xs = np.array([_exp_ref(float(np.max(np.abs(b.astype(np.float64)))), fmt, mode) for b in x])
    np.testing.assert_array_equal(mx.scales[:, 0].astype(int) - 127, xs)
    y = np.ldexp(x.astype(np.float64), -xs[:, None])
    np.testing.assert_array_equal(mx.elements, nearest_codes(y, ELEM_OF[fmt]))
    if mode == "rceil":  # no element saturates: every |y| <= max normal
        assert np.all(np.abs(y) <= get_format(fmt).element.max_normal)


def test_empty_arrays():
    for shape, axis in (((0,), 0), ((0, 32), -1), ((4, 0), 1), ((3, 0, 5), 1)):
        mx = quantize(np.zeros(shape, np.float32), "mxfp4_e2m1", axis=axis)
        assert mx.elements.shape == shape and mx.elements.dtype == np.uint8
        assert dequantize(mx).shape == shape
    assert quantize(np.zeros((0, 32), np.float32), "mxfp8_e4m3").scales.shape == (0, 1)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_fast_paths_agree_with_general_path(fmt, dtype):
    """The chunked RNE kernels (quantize, fused quantize_dequantize) vs the plain general path."""
    x = random_blocks(1100, 32, seed=4)  # > one chunk (1024 blocks) of the kernel
    x[5] = [0.0, -0.0] * 16
    x[6, 3], x[7, 9], x[8, 1] = np.nan, -np.inf, np.inf
    x[9] = -0.0
    with np.errstate(over="ignore"):
        x = x.astype(dtype)
    work = as_working(x)[1]
    for mode in ("floor", "ceil", "even", "rceil"):
        fast = quantize(x, fmt, scale_mode=mode)
        scales, elements = _quantize_general(x.astype(work.float_dtype), get_format(fmt), 32, 1, mode, "rne", work)
        np.testing.assert_array_equal(fast.elements, elements)
        np.testing.assert_array_equal(fast.scales, scales)
        # any axis and a ragged last block go through the same kernel after a transpose
        xt = np.ascontiguousarray(x[:64, :30].T)
        t_fast = quantize(xt, fmt, axis=0, scale_mode=mode, block_size=8)
        t_scales, t_elements = _quantize_general(xt.astype(work.float_dtype), get_format(fmt), 8, 0, mode, "rne", work)
        np.testing.assert_array_equal(t_fast.elements, t_elements)
        np.testing.assert_array_equal(t_fast.scales, t_scales)
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(quantize_dequantize(xt, fmt, axis=0, scale_mode=mode, block_size=8),
                                          dequantize(t_fast, dtype=dtype))
        with np.errstate(over="ignore"):
            fused = quantize_dequantize(x, fmt, scale_mode=mode)
            ref = dequantize(fast, dtype=dtype)
        assert fused.dtype == dtype
        np.testing.assert_array_equal(fused, ref)
        assert np.array_equal(np.signbit(fused), np.signbit(ref))


def test_mxarray_normalises_axis_and_format_name():
    from mx_spec import MXArray

    mx = quantize(np.ones((2, 64), np.float32), "mxfp8_e4m3")
    again = MXArray("mxfp8_e4m3", mx.scales, mx.elements, -1, 32)
    assert again.axis == 1 and again.fmt is get_format("mxfp8_e4m3")
    np.testing.assert_array_equal(dequantize(again), dequantize(mx))


def test_inputs_are_never_modified_and_may_be_read_only():
    from mx_spec import encode_elements, round_to_element_grid

    x = random_blocks(64, 96, seed=12)
    x0 = x.copy()
    x.flags.writeable = False
    for fmt in FORMATS:
        for rounding in ("rne", "away"):
            quantize(x, fmt, rounding=rounding)
            quantize(x, fmt, axis=0, rounding=rounding)
            quantize_dequantize(x, fmt, rounding=rounding)
    round_to_element_grid(x, emin=-2, mbits=2, max_normal=28.0)
    round_to_element_grid(x, emin=-2.5, mbits=2.5, max_normal=28.0)
    encode_elements(x, "e4m3")
    np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("rounding", ["rne", "away"])
@pytest.mark.parametrize("axis,block_size", [(-1, 32), (0, 7)])
def test_quantize_dequantize_return_scales_are_quantize_scales(rounding, axis, block_size):
    """``return_scales`` gives quantize's E8M0 codes beside the values, without building element codes."""
    x = random_blocks(45, 70, seed=21)
    x[0, :3] = [np.nan, np.inf, 0.0]
    for fmt in FORMATS:
        values, scales = quantize_dequantize(x, fmt, axis=axis, block_size=block_size, rounding=rounding,
                                             return_scales=True)
        mx = quantize(x, fmt, axis=axis, block_size=block_size, rounding=rounding)
        assert scales.dtype == np.uint8 and scales.flags.c_contiguous
        np.testing.assert_array_equal(scales, mx.scales)
        np.testing.assert_array_equal(values, dequantize(mx, dtype=x.dtype))
