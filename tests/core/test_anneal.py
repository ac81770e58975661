"""Temperature schedules and the offset map beta_hat -> beta."""

from __future__ import annotations

import math

import pytest
import torch

from dmx.anneal import (
    HoldThenCosine,
    HoldThenExponential,
    HoldThenLinear,
    RoundSTE,
    get_schedule,
)
from dmx.offset import hard_beta, offset_to_beta


def test_default_schedule_holds_then_goes_exponentially_to_20():
    sched = HoldThenExponential()
    n = 100  # 60 hold steps, N_a = 40 annealing steps
    values = [sched(k, n) for k in range(n)]
    assert values[:60] == [0.4] * 60
    for k in range(40):
        assert values[60 + k] == pytest.approx(0.4 * 50 ** (k / 39), rel=1e-12)
    assert values[-1] == pytest.approx(20.0)


def test_schedule_is_configurable_and_variants_share_the_hold():
    sched = HoldThenExponential(start=1.0, end=4.0, hold_fraction=0.5)
    assert [sched(k, 6) for k in range(6)] == pytest.approx([1.0, 1.0, 1.0, 1.0, 2.0, 4.0])
    lin = HoldThenLinear(start=1.0, end=3.0, hold_fraction=0.0)
    assert [lin(k, 3) for k in range(3)] == pytest.approx([1.0, 2.0, 3.0])
    cos = HoldThenCosine(start=1.0, end=3.0, hold_fraction=0.0)
    assert [cos(k, 3) for k in range(3)] == pytest.approx([1.0, 2.0, 3.0])
    assert get_schedule("exponential", end=10.0)(9, 10) == pytest.approx(10.0)
    assert HoldThenExponential()(0, 1) == pytest.approx(20.0)  # a single step is the last step


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: HoldThenExponential(start=0.0), "temperature must be finite and > 0"),
        (lambda: HoldThenExponential(end=-1.0), "temperature must be finite and > 0"),
        (lambda: HoldThenExponential(hold_fraction=1.0), "hold_fraction"),
        (lambda: HoldThenExponential()(10, 10), r"step must be an integer in \[0, 9\]"),
        (lambda: HoldThenExponential()(0, 0), "total_steps"),
        (lambda: get_schedule("step"), "valid schedules"),
    ],
)
def test_bad_schedule_inputs(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_soft_offset_formula_and_symmetry():
    beta_hat = torch.tensor([-2.5, -1.0, 0.0, 0.3, 1.0, 1.7, 3.0])
    for t in (0.4, 2.0, 20.0):
        got = offset_to_beta(beta_hat, t, training=True)
        want = [2 / (1 + math.exp(-20 * t * (abs(b) / 2 - 0.5))) for b in beta_hat.tolist()]
        assert got.tolist() == pytest.approx(want, rel=1e-6)
    assert offset_to_beta(torch.tensor(1.0), 0.4, True).item() == pytest.approx(1.0)


def test_hard_offset_is_the_deployed_format_and_the_high_temperature_limit():
    beta_hat = torch.tensor([-1.5, -0.99, 0.0, 0.99, 1.0, 1.01, 2.0])
    hard = offset_to_beta(beta_hat, 0.4, training=False)
    assert hard.tolist() == [2.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.0]
    soft_hot = offset_to_beta(beta_hat[[0, 1, 2, 3, 5, 6]], 1e4, training=True)
    assert soft_hot.tolist() == pytest.approx(hard[[0, 1, 2, 3, 5, 6]].tolist(), abs=1e-6)


def test_round_ste_is_hard_forward_identity_backward():
    beta_hat = torch.tensor([-1.4, 0.6, 1.2], requires_grad=True)
    beta = offset_to_beta(beta_hat, 0.4, training=True, mode="round_ste")
    assert beta.tolist() == [2.0, 0.0, 2.0]
    beta.sum().backward()
    assert beta_hat.grad.tolist() == [-1.0, 1.0, 1.0]
    assert RoundSTE().offset_mode == "round_ste" and HoldThenExponential().offset_mode == "sigmoid"


def test_bad_offset_inputs():
    with pytest.raises(FloatingPointError, match="beta_hat is not finite"):
        offset_to_beta(torch.tensor(float("nan")), 0.4, True)
    with pytest.raises(FloatingPointError, match="beta_hat is not finite"):
        hard_beta(torch.tensor(float("inf")))
    for t in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="temperature must be finite and > 0"):
            offset_to_beta(torch.tensor(1.0), t, True)
    with pytest.raises(ValueError, match="valid modes"):
        offset_to_beta(torch.tensor(1.0), 0.4, True, mode="gumbel")


def test_abs_has_sign_gradient_so_an_offset_moves_from_exactly_zero():
    from dmx.offset import abs_sign_grad

    x = torch.tensor([-0.5, 0.0, 0.5], requires_grad=True)
    abs_sign_grad(x).sum().backward()
    assert x.grad.tolist() == [-1.0, 1.0, 1.0]  # sign(0) = +1, where torch.abs gives 0
    # through the offset map: an offset at exactly 0 gets a gradient and a step moves it
    beta_hat = torch.tensor(0.0, requires_grad=True)
    opt = torch.optim.SGD([beta_hat], lr=1.0)
    (-offset_to_beta(beta_hat, 0.4, True)).backward()  # a loss that wants more bits
    assert beta_hat.grad.item() < 0
    opt.step()
    assert beta_hat.item() > 0
    plain = torch.tensor(0.0, requires_grad=True)
    (-2 * torch.sigmoid(8 * (plain.abs() / 2 - 0.5))).backward()
    assert plain.grad.item() == 0.0  # what torch.abs would have done: frozen for ever


def _authors_temperatures(max_steps: int, delay_start: float = 0.6, start: float = 20.0, end: float = 0.4):
    """The temperature each step of the authors' trainer runs at, rebuilt from their callback's
    rule (Brevitas dMX ``TemperatureAnnealingCallback``): T starts at 0.4; after the step that
    ends with ``global_step`` g, T is set to the (g - int(delay_start * max_steps))-th value of an
    exponential decay from ``start`` to ``end`` over the annealed steps, read backwards."""
    first = int(delay_start * max_steps)
    anneal = max_steps - first
    x = [i / (anneal - 1) for i in range(anneal)] if anneal > 1 else [0.0]
    values = [start * math.exp(math.log(end / start) * u) for u in x][::-1]
    temperature, used = 0.4, []
    for step in range(max_steps):
        used.append(temperature)
        index = step + 1 - first
        if 0 <= index < len(values):
            temperature = values[index]
    return used


@pytest.mark.parametrize("steps", [7, 40, 100, 400])
def test_default_schedule_is_the_authors_step_by_step(steps):
    """docs/FIDELITY.md row 8: the default schedule gives every step the temperature the
    authors' callback gives it (their run's 400 steps and the demo's 40 included)."""
    schedule = get_schedule("exponential")
    ours = [schedule(k, steps) for k in range(steps)]
    assert ours == pytest.approx(_authors_temperatures(steps), rel=1e-12, abs=1e-12)
