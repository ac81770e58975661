"""Bit-budget penalty, average bits and storage bits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dmx.linear import DMXLinear, DMXLinearConfig
from dmx.regularizer import average_bits, bit_budget_penalty, dmx_objective, storage_bits


def test_penalty_is_a_hinge_on_the_mean_element_bits():
    bits = torch.tensor([4.0, 8.0, 6.0, 8.0])  # mean 6.5
    assert bit_budget_penalty(bits, 6.0).item() == pytest.approx(5.0 * 0.5)
    assert bit_budget_penalty(bits, 6.5).item() == 0.0
    assert bit_budget_penalty(bits, 7.0).item() == 0.0
    assert bit_budget_penalty(bits, 6.0, lam=2.0).item() == pytest.approx(1.0)
    # weighted by element counts: (4*1 + 8*3) / 4 = 7
    assert bit_budget_penalty(torch.tensor([4.0, 8.0]), 6.0, weights=[1, 3]).item() == pytest.approx(5.0)


def test_penalty_gradient_is_lambda_over_layers_when_active():
    bits = torch.tensor([5.0, 7.0, 8.0], requires_grad=True)
    bit_budget_penalty(bits, 5.0).backward()
    assert torch.allclose(bits.grad, torch.full((3,), 5.0 / 3))
    bits.grad = None
    bit_budget_penalty(bits, 7.5).backward()
    assert torch.all(bits.grad == 0)


def test_storage_bits_add_the_e8m0_scale():
    assert storage_bits(4.0, 32) == 4.25
    assert storage_bits(8.0, 16) == 8.5
    with pytest.raises(ValueError, match="block_size"):
        storage_bits(4.0, 0)


def _layers():
    big = DMXLinear(nn.Linear(64, 96), DMXLinearConfig(beta_init=2.0))   # 6144 weights, hard mxfp8 (8 bits)
    small = DMXLinear(nn.Linear(32, 32), DMXLinearConfig(beta_init=0.5))  # 1024 weights, hard mxfp4 (4 bits)
    return {"big": big, "small": small}


def test_average_bits_mean_and_element_weighted():
    layers = _layers()
    for m in layers.values():
        m.eval()
    assert average_bits(layers).item() == pytest.approx(6.0)
    assert average_bits(layers, "elements").item() == pytest.approx((8 * 6144 + 4 * 1024) / 7168)
    assert average_bits(layers, kind="storage").item() == pytest.approx(6.25)


def test_average_bits_is_differentiable_while_training():
    layers = _layers()
    b = average_bits(layers)
    b.backward()
    assert all(m.beta_hat.grad is not None and m.beta_hat.grad.item() != 0 for m in layers.values())


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="outside the reachable range"):
        bit_budget_penalty(torch.tensor([5.0]), 9.0, bits_range=(4.0, 8.0))
    with pytest.raises(ValueError, match="at least one layer"):
        bit_budget_penalty([], 5.0)
    with pytest.raises(FloatingPointError, match="not finite"):
        bit_budget_penalty(torch.tensor([float("nan")]), 5.0)
    with pytest.raises(ValueError, match="one entry per layer"):
        bit_budget_penalty(torch.tensor([4.0, 5.0]), 5.0, weights=[1.0])
    with pytest.raises(ValueError, match="valid: \\['mean', 'elements'\\]"):
        average_bits(_layers(), "median")
    with pytest.raises(FloatingPointError, match="task loss is not finite"):
        dmx_objective(torch.tensor(float("inf")), torch.tensor([5.0]), 5.0)
    loss = dmx_objective(torch.tensor(1.5), torch.tensor([6.0]), 5.0)
    assert loss.item() == pytest.approx(1.5 + 5.0)
