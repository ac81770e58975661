"""The torch MX backend (dmx.mx_torch) against mx_spec: golden vectors, bit equality, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmx import mx_torch
from dmx.autograd import BACKENDS, mx_qdq_minifloat, mx_qdq_standard
from dmx.mx_torch_primitives import frexp_positive
from mx_spec.minifloat import FRACTIONAL_SCALES, quantize_dequantize_minifloat
from mx_spec.quantize import quantize, quantize_dequantize
from mx_spec.scale import SCALE_MODES
from mx_spec.conformance.verify import verify_quantizer

STANDARD = ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1", "mxint8"]
#: integer points of the families and fractional widths in between (E4M3 end with the 448 cap)
WIDTHS = [(2.0, 1.0), (3.0, 2.0), (2.0, 3.0), (4.0, 3.0), (2.7, 1.7), (3.4, 2.9), (3.99, 2.98), (2.3, 1.0), (2.0, 1.5)]


def test_every_golden_vector_passes():
    """All six formats x four scale modes x two roundings, codes and decoded f32/f64 values."""
    report = verify_quantizer(mx_torch.golden_quantizer())
    assert report.n_failed == 0 and report.n_skipped == 0, report.summary()
    assert report.ok and report.n_passed >= 6 * 8 * 10
    # full coverage of what the backend claims: every format and (scale mode, rounding) pair
    assert {(f, m, r) for f, m, r in report.tallies} == {(f, m, r) for f in STANDARD for m in SCALE_MODES
                                                        for r in ("rne", "away")}


def _tensors(seed: int, shape=(6, 5, 100)):
    """Gaussian, heavy-tailed (Student t, per-row binade shifts), tiny and huge magnitudes."""
    g = np.random.default_rng(seed)
    heavy = g.standard_t(1.5, size=shape) * np.exp2(g.integers(-20, 20, size=shape[:-1] + (1,)))
    tiny = g.standard_normal(shape) * 2.0**-130  # float32 subnormal blocks
    huge = g.standard_normal(shape) * 2.0**120
    mixed = g.standard_normal(shape)
    mixed[..., ::7] = 0.0
    mixed[0, 0, :40] = -0.0
    return [g.standard_normal(shape), heavy, tiny, huge, mixed]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fmt", STANDARD)
def test_standard_bits_equal_numpy(fmt, dtype):
    for i, a in enumerate(_tensors(len(fmt))):
        x = torch.from_numpy(a.astype(np.float32)).to(dtype)
        xn = x.float().numpy()  # bf16 -> f32 is exact
        for mode in SCALE_MODES:
            for rounding in ("rne", "away"):
                s, e = mx_torch.quantize(x, fmt, scale_mode=mode, rounding=rounding)
                want = quantize(xn, fmt, scale_mode=mode, rounding=rounding)
                assert np.array_equal(s.numpy(), want.scales) and np.array_equal(e.numpy(), want.elements), (i, mode)
                got = mx_torch.quantize_dequantize(x, fmt, scale_mode=mode, rounding=rounding)
                ref = torch.from_numpy(quantize_dequantize(xn, fmt, scale_mode=mode, rounding=rounding)).to(dtype)
                assert got.dtype == dtype and torch.equal(got.view(torch.int16 if dtype == torch.bfloat16 else torch.int32),
                                                          ref.view(torch.int16 if dtype == torch.bfloat16 else torch.int32))


@pytest.mark.parametrize("rule", FRACTIONAL_SCALES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_minifloat_bits_equal_numpy(rule, dtype):
    for i, a in enumerate(_tensors(7)):
        x = torch.from_numpy(a).to(dtype)
        xn = x.double().numpy() if dtype == torch.float64 else x.float().numpy()
        for e, m in WIDTHS:
            for mode in ("floor", "ceil"):
                got, X = mx_torch.quantize_dequantize_minifloat(x, e, m, scale_mode=mode, fractional_scale=rule,
                                                                return_scale_exponent=True)
                want, wX = quantize_dequantize_minifloat(xn, e, m, scale_mode=mode, fractional_scale=rule,
                                                         return_scale_exponent=True)
                assert got.dtype == torch.from_numpy(want).dtype
                assert np.array_equal(got.numpy().view(np.uint8), want.view(np.uint8)), (i, e, m, mode)
                assert np.array_equal(X.numpy(), wX.astype(np.float32), equal_nan=True)


def test_nan_inf_blocks_and_ragged_tail():
    x = torch.randn(3, 70)
    x[0, 3] = float("nan")
    x[1, 40] = float("inf")
    x[2, 69] = -float("inf")
    for fmt in STANDARD:
        got = mx_torch.quantize_dequantize(x, fmt)
        assert np.array_equal(got.numpy(), quantize_dequantize(x.numpy(), fmt), equal_nan=True)
    got = mx_torch.quantize_dequantize_minifloat(x, 2.6, 1.4)
    assert np.array_equal(got.numpy(), quantize_dequantize_minifloat(x.numpy(), 2.6, 1.4), equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_frexp_from_bits_equals_torch_frexp(dtype):
    info = torch.finfo(dtype)
    g = np.random.default_rng(5)
    special = [info.tiny, info.tiny / 2, info.smallest_normal * info.eps, info.max, 1.0, 0.5, 0.75, 3.0]
    v = torch.cat([torch.tensor(special, dtype=dtype),
                   torch.from_numpy(np.exp2(g.uniform(-140 if dtype == torch.float32 else -1070, 120, 4000))).to(dtype),
                   torch.from_numpy(g.uniform(0, 1e-38, 500)).to(dtype)])
    v = v[v > 0]
    mant, exp = frexp_positive(v)
    want_mant, want_exp = torch.frexp(v)
    assert torch.equal(mant, want_mant) and torch.equal(exp, want_exp)


@pytest.mark.slow
def test_compiled_minifloat_bits_equal_numpy():
    """The torch.compile-fused kernel (backend "compiled") gives mx_spec's bits and block exponents:
    integer and fractional widths, both scale rules, both roundings, floor and ceil scales,
    float32/float64, NaN/Inf blocks, a ragged tail."""
    nonfinite = np.random.default_rng(3).standard_normal((3, 70))
    nonfinite[0, 3], nonfinite[1, 40], nonfinite[2, 69] = np.nan, np.inf, -np.inf
    # a recompile-limit fallback to eager would pass silently without this
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        for dtype in (torch.float32, torch.float64):
            for a in _tensors(13) + [nonfinite]:
                x = torch.from_numpy(a).to(dtype)
                for e, m in WIDTHS:
                    for rule in FRACTIONAL_SCALES:
                        for rounding, mode in (("rne", "floor"), ("away", "floor"), ("rne", "ceil")):
                            got, X = mx_torch.quantize_dequantize_minifloat(
                                x, e, m, fractional_scale=rule, rounding=rounding, scale_mode=mode, compiled=True,
                                return_scale_exponent=True)
                            want, wX = quantize_dequantize_minifloat(
                                x.numpy(), e, m, fractional_scale=rule, rounding=rounding, scale_mode=mode,
                                return_scale_exponent=True)
                            assert np.array_equal(got.numpy().view(np.uint8), want.view(np.uint8)), (e, m, rule)
                            assert np.array_equal(X.numpy(), wX.astype(np.float32), equal_nan=True)
                            # the scales from a kept block amax (a frozen weight's)
                            kept = mx_torch.quantize_dequantize_minifloat(
                                x, e, m, fractional_scale=rule, rounding=rounding, scale_mode=mode, compiled=True,
                                block_amax=mx_torch.block_amax_of(x))
                            assert np.array_equal(kept.numpy().view(np.uint8), want.view(np.uint8)), (e, m, rule)


def test_kept_block_amax_gives_the_same_bits_and_a_wrong_one_is_refused():
    """Eager torch backend with block_amax= (the compiled one is checked above): mx_spec's bits;
    an amax of another shape or dtype is refused, naming the function that makes it."""
    for a in _tensors(21):
        x = torch.from_numpy(a).float()
        for e, m in WIDTHS:
            want = quantize_dequantize_minifloat(a.astype(np.float32), e, m)
            got = mx_torch.quantize_dequantize_minifloat(x, e, m, block_amax=mx_torch.block_amax_of(x))
            assert np.array_equal(got.numpy().view(np.uint8), want.view(np.uint8)), (e, m)
    x = torch.randn(4, 64)
    for wrong in (mx_torch.block_amax_of(x, 16), mx_torch.block_amax_of(x).double()):
        with pytest.raises(ValueError, match="block_amax_of"):
            mx_torch.quantize_dequantize_minifloat(x, 2.5, 1.5, block_amax=wrong)


@pytest.mark.parametrize("rule", FRACTIONAL_SCALES)
@pytest.mark.parametrize("widths", [(2.0, 1.0), (2.7, 1.7), (3.9, 2.95), (4.0, 3.0)])
def test_bridge_backends_give_equal_outputs_and_gradients(widths, rule):
    """numpy and torch: equal bits and equal gradients (one backward); compiled: equal bits and
    gradient to x, width gradients equal to float rounding (its fused sums add in another order)."""
    g = np.random.default_rng(1)
    base = torch.from_numpy((g.standard_t(2, size=(4, 8, 96)) * 3).astype(np.float32))
    for dtype in (torch.float32, torch.bfloat16):
        outs = {}
        for backend in BACKENDS:
            x = base.to(dtype).clone().requires_grad_(True)
            e = torch.tensor(widths[0], requires_grad=True)
            m = torch.tensor(widths[1], requires_grad=True)
            y = mx_qdq_minifloat(x, e, m, fractional_scale=rule, backend=backend)
            (y.float() * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
            outs[backend] = (y.detach(), x.grad, e.grad, m.grad)
        for a, b in zip(outs["numpy"], outs["torch"]):
            assert torch.equal(a, b)
        for a, b in zip(outs["numpy"][:2], outs["compiled"][:2]):
            assert torch.equal(a, b)
        for a, b in zip(outs["numpy"][2:], outs["compiled"][2:]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for fmt in STANDARD:
        grads = {}
        for backend in BACKENDS:
            x = (base * 50).clone().requires_grad_(True)
            y = mx_qdq_standard(x, fmt, backend=backend)
            y.sum().backward()
            grads[backend] = (y.detach(), x.grad)
        for backend in BACKENDS[1:]:
            assert torch.equal(grads["numpy"][0], grads[backend][0]) and torch.equal(grads["numpy"][1], grads[backend][1])


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="valid backends"):
        mx_qdq_standard(torch.ones(32), "mxfp4_e2m1", backend="jax")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_backend_passes_the_golden_vectors_and_matches_numpy():
    report = verify_quantizer(mx_torch.golden_quantizer("cuda"))
    assert report.ok and report.n_failed == 0 and report.n_skipped == 0, report.summary()
    for a in _tensors(11):
        x = torch.from_numpy(a.astype(np.float32))
        for e, m in WIDTHS:
            for rule in FRACTIONAL_SCALES:
                got = mx_torch.quantize_dequantize_minifloat(x.cuda(), e, m, fractional_scale=rule).cpu().numpy()
                want = quantize_dequantize_minifloat(x.numpy(), e, m, fractional_scale=rule)
                assert np.array_equal(got.view(np.uint8), want.view(np.uint8)), (e, m, rule)


def test_backend_setting_on_layers_and_config():
    from dmx.calibrate import CalibrationConfig
    from dmx.cli import build_parser
    from dmx.linear import DMXLinear

    layer = DMXLinear(torch.nn.Linear(64, 8))
    assert layer.backend == "torch"
    x = torch.randn(3, 64)
    layer.train()
    y_torch = layer(x)
    layer.reconfigure(backend="numpy")
    assert torch.equal(layer(x), y_torch)
    layer.reconfigure(backend="compiled")
    assert torch.equal(layer(x), y_torch)
    with pytest.raises(ValueError, match="valid backends"):
        layer.reconfigure(backend="jax")
    with pytest.raises(ValueError, match="valid backends"):
        CalibrationConfig(backend="jax").validate()
    args = build_parser().parse_args(["calibrate", "--backend", "numpy"])
    assert args.backend == "numpy"
    assert build_parser().parse_args(["calibrate", "--backend", "compiled"]).backend == "compiled"


def test_compiled_backend_without_a_compiler_is_refused_with_the_fix(monkeypatch):
    """No C++ compiler: a clear error when the backend is chosen, naming the fix, not an inductor
    traceback in the first calibration step."""
    from torch._inductor import cpp_builder

    from dmx import autograd
    from dmx.linear import DMXLinear, DMXLinearConfig

    def no_compiler():
        raise RuntimeError("no working C++ compiler found")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    autograd._compiled_backend_problem.cache_clear()
    try:
        with pytest.raises(ValueError, match="needs a C\\+\\+ compiler.*use backend 'torch'"):
            DMXLinear(torch.nn.Linear(64, 8), DMXLinearConfig(backend="compiled"))
        with pytest.raises(ValueError, match="needs a C\\+\\+ compiler"):
            mx_qdq_minifloat(torch.randn(4, 32), 2.5, 1.5, backend="compiled")
    finally:
        autograd._compiled_backend_problem.cache_clear()
