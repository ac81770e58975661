"""Torch bridge over mx_spec: exact forward, straight-through x-gradient, closed-form width gradient."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dmx.autograd import mx_qdq_minifloat, mx_qdq_standard
from dmx.family import FormatFamily, get_family
from mx_spec.minifloat import minifloat_params, quantize_dequantize_minifloat
from mx_spec.quantize import quantize_dequantize

STANDARD = ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1", "mxint8"]


def _heavy(shape, seed=0) -> torch.Tensor:
    g = np.random.default_rng(seed)
    return torch.from_numpy((g.standard_t(2, size=shape) * np.exp2(g.integers(-8, 8, size=shape[:-1] + (1,)))).astype(np.float32))


@pytest.mark.parametrize("fmt", STANDARD)
@pytest.mark.parametrize("shape", [(3, 5, 64), (7, 50)])  # 3-d, and a ragged last block
def test_standard_forward_is_mx_spec_bit_for_bit(fmt, shape):
    x = _heavy(shape, seed=len(fmt))
    got = mx_qdq_standard(x, fmt)
    want = quantize_dequantize(x.numpy(), fmt)
    assert torch.equal(got, torch.from_numpy(want))
    xb = x.bfloat16()
    got_b = mx_qdq_standard(xb, fmt)
    assert got_b.dtype == torch.bfloat16
    want_b = quantize_dequantize(xb.float().numpy(), fmt)  # bf16 -> f32 is exact
    assert torch.equal(got_b.float(), torch.from_numpy(want_b))  # MX values are exact in bf16


@pytest.mark.parametrize("widths", [(2.0, 1.0), (3.0, 2.0), (2.0, 3.0), (4.0, 3.0), (2.7, 1.7), (3.4, 2.9)])
def test_minifloat_forward_is_the_numpy_reference(widths):
    x = _heavy((4, 6, 96), seed=3)
    e, m = torch.tensor(widths[0]), torch.tensor(widths[1])  # float32, as DMXLinear passes them
    got = mx_qdq_minifloat(x, e, m)
    want = quantize_dequantize_minifloat(x.numpy(), float(e), float(m))
    assert torch.equal(got, torch.from_numpy(want))


def test_straight_through_gradient_to_x():
    x = torch.tensor([[0.01, -0.3, 1.0, 3.0, -100.0] + [0.5] * 27], requires_grad=True)
    # mxfp4: amax 100 -> X = floor(log2 100) - 2 = 4, s = 16, saturation at 16 * 6 = 96
    y = mx_qdq_standard(x, "mxfp4_e2m1")
    y.backward(torch.arange(1.0, 33.0).reshape(1, 32))
    want = torch.arange(1.0, 33.0).reshape(1, 32)
    want[0, 4] = 0.0  # |-100| > 96 saturates: no gradient
    assert torch.equal(x.grad, want)
    x2 = x.detach().clone().requires_grad_(True)
    mx_qdq_minifloat(x2, torch.tensor(2.0), torch.tensor(1.0)).backward(torch.ones(1, 32))
    assert x2.grad[0, 4] == 0 and torch.all(x2.grad[0, :4] == 1) and torch.all(x2.grad[0, 5:] == 1)


# --- closed-form width gradient vs finite differences of a smoothed quantizer -----------------

def _continuous_scale_exponent(amax, E, M, rule, cap=448.0):
    """log2 of the scale with every floor removed: ``emax`` rule or the authors' ``maxfloat``."""
    bias = 2.0 ** (E - 1) - 1
    emax = 2.0**E - 1 - bias
    if rule == "emax":
        return np.log2(amax) - emax
    return np.log2(amax) - np.log2(min((2 - 2.0**-M) * 2.0**emax, cap))


def _smoothed_loss(x, w, u, phi, regions, E, M, rule, cap=448.0):
    """Mean weighted squared error of the smoothed quantizer, written independently in float64.

    Rounding -> fixed uniform perturbation u*D, scale floor -> identity (offset phi frozen),
    region membership (normal / subnormal / saturated) frozen at the base point.
    """
    bias = 2.0 ** (E - 1) - 1
    emax, emin = 2.0**E - 1 - bias, 1 - bias
    max_normal = min((2 - 2.0**-M) * 2.0**emax, cap)
    amax = np.abs(x).max(axis=1, keepdims=True)
    S = _continuous_scale_exponent(amax, E, M, rule, cap) - phi  # continuous log2 of the scale
    normal, subnormal, saturated = regions
    D = np.where(subnormal, np.exp2(S + emin - M), np.exp2(np.floor(np.log2(np.abs(x))) - M))
    err = np.where(saturated, np.abs(x) - np.exp2(S) * max_normal, u * D)
    return float((w * err**2).sum() / w.sum())


@pytest.mark.parametrize("rule", ["maxfloat", "emax"])
@pytest.mark.parametrize(
    "E,M,anchor",
    [(2.2, 1.2, 1.0), (2.5, 1.5, 1.0), (2.0, 1.6, 1.0), (3.3, 2.3, 1.0), (3.99, 2.99, 1.9)],
)
def test_width_gradient_matches_finite_differences_of_smoothed_quantizer(E, M, anchor, rule):
    g = np.random.default_rng(7)
    nb = 8192
    x = np.tanh(g.standard_normal((nb, 32)) * 0.8) * anchor * 0.999
    x[:, 0] = np.where(g.random(nb) < 0.5, -anchor, anchor)  # fixes each block's amax
    x = x.astype(np.float32).astype(np.float64)
    w = np.ones_like(x)
    w[:, 0] = 0.0  # the anchor only sets the scale
    # analytic gradient of the hard quantizer's loss
    Et, Mt = torch.tensor(E, requires_grad=True), torch.tensor(M, requires_grad=True)
    xt, wt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(w)
    q = mx_qdq_minifloat(xt, Et, Mt, fractional_scale=rule)
    ((q.double() - xt.double()) ** 2 * wt).sum().div(wt.sum()).backward()
    # base-point regions and scale offset of the hard quantizer
    p = minifloat_params(E, M, fractional_scale=rule)
    amax = np.abs(x).max(axis=1, keepdims=True)
    t = _continuous_scale_exponent(amax, E, M, rule)
    # the hard scale exponent: floor(t) for emax, floor(log2 amax) - floor(log2 max_normal) for maxfloat
    X = np.floor(t) if rule == "emax" else np.floor(np.log2(amax)) - math.floor(math.log2(p.max_normal))
    phi, s = t - X, np.exp2(X)
    saturated = np.abs(x) > s * p.max_normal
    subnormal = ~saturated & (np.abs(x) < s * 2.0 ** math.ceil(p.emin))
    regions = (~saturated & ~subnormal, subnormal, saturated)
    u = g.uniform(-0.5, 0.5, size=x.shape)
    h = 1e-6
    fd_e = (_smoothed_loss(x, w, u, phi, regions, E + h, M, rule)
            - _smoothed_loss(x, w, u, phi, regions, E - h, M, rule)) / (2 * h)
    fd_m = (_smoothed_loss(x, w, u, phi, regions, E, M + h, rule)
            - _smoothed_loss(x, w, u, phi, regions, E, M - h, rule)) / (2 * h)
    assert Mt.grad.item() == pytest.approx(fd_m, rel=0.1)
    assert Et.grad.item() == pytest.approx(fd_e, rel=0.1, abs=1e-3 * abs(fd_m))
    if anchor == 1.9:
        assert saturated.any() and p.max_normal == 448.0  # the cap case is exercised


@pytest.mark.parametrize("rule,steps", [("emax", 15), ("maxfloat", 30)])
def test_gradient_descent_on_beta_reduces_error_of_heavy_tailed_tensor(rule, steps):
    x = _heavy((1024, 32), seed=11)
    fam = get_family("fp8_fp4")
    beta = torch.tensor(0.3, requires_grad=True)
    with torch.no_grad():
        ref = float(((mx_qdq_minifloat(x, fam.ebits(beta), fam.mbits(beta), fractional_scale=rule) - x) ** 2).mean())
    opt = torch.optim.SGD([beta], lr=0.2)
    losses = []
    for _ in range(steps):
        q = mx_qdq_minifloat(x, fam.ebits(beta), fam.mbits(beta), fractional_scale=rule)
        loss = ((q - x) ** 2).mean() / ref
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            beta.clamp_(0.0, 2.0)
        losses.append(loss.item())
    # the error along beta is bumpy (floor-scale sawtooth, t(2) outliers) but descends overall;
    # the maxfloat rule's sawtooth is steeper (its scale jumps when max_normal crosses a power of
    # two), so beta climbs more slowly there
    assert beta.item() > (1.0 if rule == "emax" else 0.5)
    assert np.mean(losses[-5:]) < 0.5 * losses[0]


def test_gradient_trades_exponent_for_mantissa_at_constant_bits():
    # 6-bit family E2M3 (beta=0) <-> E3M2 (beta=2): only the split between E and M is learned.
    fam = FormatFamily("e2m3_e3m2", 2.0, 0.5, 3.0, -0.5, "mxfp6_e2m3", "mxfp6_e3m2")
    x = torch.randn(1024, 32, generator=torch.Generator().manual_seed(0))
    e2m3, e3m2 = (float(((mx_qdq_standard(x, f) - x) ** 2).mean()) for f in ("mxfp6_e2m3", "mxfp6_e3m2"))
    assert e2m3 < e3m2  # Gaussian blocks need mantissa, not range
    beta = torch.tensor(1.5, requires_grad=True)
    opt = torch.optim.SGD([beta], lr=0.2)
    for _ in range(20):
        q = mx_qdq_minifloat(x, fam.ebits(beta), fam.mbits(beta))
        loss = ((q - x) ** 2).mean() / e2m3
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            beta.clamp_(0.0, 2.0)
    assert beta.item() < 0.25


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(TypeError, match="torch.float32 and torch.bfloat16"):
        mx_qdq_standard(torch.ones(32, dtype=torch.float16), "mxfp4_e2m1")
    with pytest.raises(TypeError, match="torch.float32 and torch.bfloat16"):
        mx_qdq_minifloat(torch.ones(32, dtype=torch.float64), 2.0, 1.0)
    with pytest.raises(ValueError, match="meta tensor"):
        mx_qdq_standard(torch.ones(32, device="meta"), "mxfp4_e2m1")
    with pytest.raises(ValueError, match="valid choices|valid"):
        mx_qdq_standard(torch.ones(32), "mxfp5")
    with pytest.raises(ValueError, match="at least one dimension"):
        mx_qdq_minifloat(torch.tensor(1.0), 2.0, 1.0)
    with pytest.raises(ValueError, match="exponent width"):
        mx_qdq_minifloat(torch.ones(32), 9.0, 1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_give_the_cpu_bits_and_gradients():
    """On an accelerator the bridge (torch backend by default) gives the CPU outputs and gradients."""
    torch.manual_seed(0)
    x = torch.randn(4, 96) * 3
    outs = {}
    for device in ("cpu", "cuda"):
        xd = x.to(device).requires_grad_(True)
        e = torch.tensor(2.6, device=device, requires_grad=True)
        m = torch.tensor(1.4, requires_grad=True)  # widths may live on another device than x
        y = mx_qdq_minifloat(xd, e, m) + mx_qdq_standard(xd, "mxfp4_e2m1")
        (y * torch.linspace(-1, 1, 96, device=device)).sum().backward()
        outs[device] = (y.detach().cpu(), xd.grad.cpu(), e.grad.cpu(), m.grad)
    for a, b in zip(outs["cpu"], outs["cuda"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch.equal(outs["cpu"][0], outs["cuda"][0])
