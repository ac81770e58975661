"""DMXLinear and wrap_linears."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dmx
from dmx.autograd import BACKENDS
from dmx.linear import DMXLinear, DMXLinearConfig
from mx_spec.minifloat import quantize_dequantize_minifloat
from mx_spec.quantize import quantize_dequantize

STANDARD = ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1", "mxint8"]


def _linear(seed=0, n_in=64, n_out=48, bias=True) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out, bias=bias)


def _reference(x: torch.Tensor, lin: nn.Linear, fmt: str) -> torch.Tensor:
    """F.linear on operands quantised by the numpy mx_spec directly (blocks along in_features)."""
    xq = torch.from_numpy(quantize_dequantize(x.detach().numpy(), fmt))
    wq = torch.from_numpy(quantize_dequantize(lin.weight.detach().numpy(), fmt))
    return F.linear(xq, wq, lin.bias)


def test_wrapped_module_api_is_kept_and_weights_are_frozen():
    lin = _linear()
    m = DMXLinear(lin)
    assert m.weight is lin.weight and m.bias is lin.bias and m.linear is lin
    assert (m.in_features, m.out_features) == (64, 48)
    assert not lin.weight.requires_grad and not lin.bias.requires_grad
    assert [n for n, p in m.named_parameters() if p.requires_grad] == ["beta_hat"]
    untied = DMXLinear(_linear(), DMXLinearConfig(tie=False))
    assert sorted(n for n, p in untied.named_parameters() if p.requires_grad) == ["beta_hat", "beta_hat_input"]


@pytest.mark.parametrize("beta_hat,fmt", [(1.5, "mxfp8_e4m3"), (-1.2, "mxfp8_e4m3"), (0.4, "mxfp4_e2m1")])
def test_eval_mode_is_the_hard_standard_format(beta_hat, fmt):
    lin = _linear()
    m = DMXLinear(lin, DMXLinearConfig(beta_init=beta_hat)).eval()
    x = torch.randn(3, 5, 64)
    assert m.format_name() == fmt
    assert torch.equal(m(x), _reference(x, lin, fmt))
    assert m.element_bits().item() == {"mxfp8_e4m3": 8.0, "mxfp4_e2m1": 4.0}[fmt]
    assert m.storage_bits().item() == m.element_bits().item() + 0.25
    fam6 = DMXLinear(_linear(), DMXLinearConfig(family="fp6_fp4", beta_init=1.5)).eval()
    assert fam6.format_name() == "mxfp6_e2m3"


def test_training_forward_uses_real_width_formats_and_reaches_beta_hat():
    lin = _linear()
    m = DMXLinear(lin, DMXLinearConfig(beta_init=1.3, temperature=0.4))
    x = torch.randn(8, 64, requires_grad=True)
    y = m(x)
    beta = m.beta().detach()
    e, mm = m.family.ebits(beta), m.family.mbits(beta)
    xq = quantize_dequantize_minifloat(x.detach().numpy(), float(e), float(mm))
    wq = quantize_dequantize_minifloat(lin.weight.numpy(), float(e), float(mm))
    assert torch.equal(y, F.linear(torch.from_numpy(xq), torch.from_numpy(wq), lin.bias))
    y.pow(2).sum().backward()
    assert m.beta_hat.grad is not None and m.beta_hat.grad.item() != 0.0
    assert x.grad is not None and lin.weight.grad is None


def test_round_ste_training_forward_equals_the_hard_format():
    lin = _linear()
    m = DMXLinear(lin, DMXLinearConfig(beta_init=1.7, offset_mode="round_ste"))
    x = torch.randn(4, 64)
    assert torch.equal(m(x), _reference(x, lin, "mxfp8_e4m3"))


def test_tied_gradient_is_the_sum_of_weight_and_input_gradients():
    x = torch.randn(16, 64)
    grads = {}
    for tie in (True, False):
        m = DMXLinear(_linear(), DMXLinearConfig(tie=tie, beta_init=0.9))
        m(x).pow(2).mean().backward()
        grads[tie] = m.beta_hat.grad.item() + (0.0 if tie else m.beta_hat_input.grad.item())
    assert grads[True] == pytest.approx(grads[False], rel=1e-5)


@pytest.mark.parametrize("fmt", STANDARD)
def test_fixed_formats_for_uniform_baselines(fmt):
    lin = _linear()
    m = DMXLinear(lin)
    m.reconfigure(fixed_format=fmt)
    x = torch.randn(2, 64)
    for mode in (m.train(), m.eval()):
        assert torch.equal(mode(x), _reference(x, lin, fmt))
    assert m.format_name() == fmt
    assert m.element_bits().item() == {"mxfp8_e4m3": 8, "mxfp8_e5m2": 8, "mxfp6_e3m2": 6,
                                       "mxfp6_e2m3": 6, "mxfp4_e2m1": 4, "mxint8": 8}[fmt]
    m.reconfigure(fixed_format=None)
    assert m.fixed_format is None and m.format_name() == "mxfp4_e2m1"  # beta_init = 0.0


def test_cached_hard_weight_follows_weight_updates():
    lin = _linear()
    m = DMXLinear(lin, DMXLinearConfig(beta_init=2.0)).eval()
    x = torch.randn(2, 64)
    m(x)
    with torch.no_grad():
        lin.weight.mul_(3.0)
    assert torch.equal(m(x), _reference(x, lin, "mxfp8_e4m3"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_kept_weight_amax_follows_weight_updates(backend):
    """The soft path keeps a frozen weight's block amax: after an in-place change of the weight,
    or new storage behind it, the layer gives what a fresh layer gives."""
    lin, cfg = _linear(), DMXLinearConfig(beta_init=0.7, backend=backend)
    m = DMXLinear(lin, cfg).train()
    x = torch.randn(2, 64)
    m(x)
    with torch.no_grad():
        lin.weight.mul_(3.0)
    assert torch.equal(m(x), DMXLinear(lin, cfg).train()(x))
    lin.weight.data = lin.weight.data * 0.25  # new storage, same tensor, no version bump
    assert torch.equal(m(x), DMXLinear(lin, cfg).train()(x))



def test_the_settings_are_the_config_changed_only_by_reconfigure():
    m = DMXLinear(_linear(), DMXLinearConfig(family="fp6_fp4", temperature=2))
    first = m.config
    assert (m.temperature, type(m.temperature), m.family.name, m.backend) == (2.0, float, "fp6_fp4", "torch")
    for name, value in (("temperature", 1.0), ("fixed_format", "mxint8"), ("backend", "numpy"), ("config", first)):
        with pytest.raises(AttributeError):
            setattr(m, name, value)
    assert m.reconfigure(temperature=0.5, offset_mode="round_ste") is m.config
    assert (m.temperature, m.offset_mode) == (0.5, "round_ste") and first.temperature == 2  # replaced, not mutated
    assert m.config == DMXLinearConfig(family="fp6_fp4", temperature=0.5, offset_mode="round_ste")
    before = m.config
    for bad, match in (({"temprature": 1.0}, r"unknown DMXLinear setting\(s\) \['temprature'\]"),
                       ({"fixed_format": "mxfp5"}, "valid formats"), ({"temperature": -1.0}, "temperature"),
                       ({"tie": False}, r"\['tie'\] are fixed when the layer is built"),
                       ({"beta_init": 1.0, "temperature": 1.0}, "beta_init")):
        with pytest.raises(ValueError, match=match):
            m.reconfigure(**bad)
        assert m.config is before  # nothing changed
    m.reconfigure(tie=True, freeze_weight=True)  # the values it was built with: allowed, a no-op
    assert m.config == before
    assert DMXLinear(_linear(), DMXLinearConfig(fixed_format="mxfp6_e3m2")).format_names() == {
        "weight": "mxfp6_e3m2", "input": "mxfp6_e3m2"}


@pytest.mark.parametrize("training", [False, True])
def test_reconfigure_drops_the_kept_values_only_when_their_settings_change(training):
    """The kept hard weight / block amax hold no settings in their keys: a changed block size or
    scale rule must reach them through reconfigure, and a new temperature must not cost them."""
    lin, x = _linear(seed=3), torch.randn(2, 64)
    m = DMXLinear(lin, DMXLinearConfig(beta_init=0.7)).train(training)
    slot = "_amax_cache" if training else "_weight_cache"
    first = m(x)
    kept = getattr(m, slot)[2]
    m.reconfigure(temperature=0.9)
    m(x)
    assert getattr(m, slot)[2] is kept
    for changes in ({"scale_mode": "ceil"}, {"block_size": 16}, {"rounding": "away"}):
        m.reconfigure(**changes)
        fresh = DMXLinear(lin, m.config).train(training)
        assert torch.equal(m(x), fresh(x)), changes
    assert not torch.equal(m(x), first)
    m.invalidate_caches()
    assert m._weight_cache is None and m._amax_cache is None

def test_bfloat16_layer_runs():
    lin = _linear().to(torch.bfloat16)
    m = DMXLinear(lin)
    y = m(torch.randn(4, 64, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert torch.isfinite(m.beta_hat.grad)


def test_bad_inputs_raise_clear_errors():
    m = DMXLinear(_linear())
    with pytest.raises(ValueError, match="valid formats"):
        m.reconfigure(fixed_format="mxfp5")
    with pytest.raises(TypeError, match="torch.float32 and torch.bfloat16"):
        m(torch.randn(2, 64, dtype=torch.float64))
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        m.reconfigure(temperature=0.0)
    with pytest.raises(ValueError, match="valid modes"):
        m.reconfigure(offset_mode="soft")
    with pytest.raises(TypeError, match="wraps an nn.Linear"):
        DMXLinear(nn.Conv1d(2, 2, 1))
    with pytest.raises(ValueError, match="valid families"):
        DMXLinear(_linear(), DMXLinearConfig(family="fp4"))
    with pytest.raises(TypeError, match="DMXLinearConfig"):
        DMXLinear(_linear(), "fp6_fp4")
    with torch.no_grad():
        m.beta_hat.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="beta_hat is not finite"):
        m(torch.randn(2, 64))


def test_wrap_linears_names_predicate_and_helpers():
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 8)))
    layers = dmx.wrap_linears(model, dmx.DMXLinearConfig(family="fp6_fp4"),
                              predicate=lambda name, mod: mod.out_features != 8)
    assert list(layers) == ["0", "2.0"]
    assert isinstance(model[0], DMXLinear) and isinstance(model[2][1], nn.Linear)
    assert all(m.family.name == "fp6_fp4" for m in layers.values())
    more = dmx.wrap_linears(model)  # only the remaining plain Linear; no double wrapping
    assert list(more) == ["2.1"]
    assert list(dmx.dmx_layers(model)) == ["0", "2.0", "2.1"]
    dmx.set_temperature(model, 3.0)
    assert all(m.temperature == 3.0 for m in dmx.dmx_layers(model).values())
    assert dmx.apply_schedule(model, dmx.RoundSTE(), 0, 10) == 1.0
    assert all(m.offset_mode == "round_ste" for m in dmx.dmx_layers(model).values())
    dmx.set_fixed_format(model, "mxfp6_e3m2")
    assert {m.format_name() for m in dmx.dmx_layers(model).values()} == {"mxfp6_e3m2"}
    with pytest.raises(ValueError, match="not plain nn.Linear"):
        dmx.wrap_linears(nn.Sequential(nn.Linear(4, 4)), names=["1"])
    with pytest.raises(ValueError, match="temperature"):
        dmx.set_temperature(model, -1.0)
    with pytest.raises(ValueError, match="wrap_linears"):
        dmx.set_temperature(nn.Sequential(nn.Linear(4, 4)), 1.0)


def test_config_settings_are_checked_before_any_layer_is_built():
    for bad, match in (({"block_size": 0}, "block_size"), ({"beta_init": float("inf")}, "beta_init"),
                       ({"temperature": 0.0}, "temperature"), ({"offset_mode": "soft"}, "valid modes"),
                       ({"fractional_scale": "max"}, "valid rules"), ({"scale_mode": "round"}, "scale_mode"),
                       ({"rounding": "rtz"}, "rounding"), ({"backend": "jax"}, "valid backends"),
                       ({"fixed_format": "fp4"}, "valid formats"), ({"fixed_format": 4}, "valid formats")):
        with pytest.raises(ValueError, match=match):
            DMXLinearConfig(**bad)
    # settings read from YAML/JSON come as a dict: an unknown key is named with the valid ones
    with pytest.raises(ValueError, match=r"unknown DMXLinear setting\(s\) \['blocksize'\].*'block_size'"):
        dmx.wrap_linears(nn.Sequential(nn.Linear(32, 32)), {"blocksize": 16})
    layers = dmx.wrap_linears(nn.Sequential(nn.Linear(32, 32)), {"family": "fp6_fp4", "tie": False, "beta_init": 1.5})
    layer = layers["0"]
    assert (layer.family.name, layer.tie, float(layer.beta_hat.detach()), float(layer.beta_hat_input.detach())) == ("fp6_fp4", False, 1.5, 1.5)
