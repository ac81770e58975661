"""Temperature schedules for the offset sigmoid (``dmx.offset``).

A schedule is a callable ``(step, total_steps) -> T`` with an ``offset_mode`` attribute telling
the layers which offset map to use (``"sigmoid"``, or ``"round_ste"`` for the plain
round-with-STE baseline). Steps count from 0 to ``total_steps - 1``.

Default (authors' code): :class:`HoldThenExponential` holds ``T = 0.4`` for the first 60 % of
the steps, then anneals exponentially to ``T = 20`` at the last step::

    N_h = floor(hold_fraction · N),  N_a = N − N_h,
    T(step) = start                                   for step <  N_h
    T(step) = start · (end/start) ** (k / (N_a − 1))  for step = N_h + k, k = 0 .. N_a − 1

so ``T_k = 0.4 · 50 ** (k / (N_a − 1))``. :class:`HoldThenLinear` and :class:`HoldThenCosine`
are drop-in variants with the same hold phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dmx.offset import check_temperature

__all__ = [
    "Schedule",
    "HoldThenExponential",
    "HoldThenLinear",
    "HoldThenCosine",
    "ConstantTemperature",
    "RoundSTE",
    "SCHEDULES",
    "get_schedule",
]


def _check_step(step: int, total_steps: int) -> None:
    if not (isinstance(total_steps, int) and total_steps >= 1):
        raise ValueError(f"total_steps must be a positive integer; got {total_steps!r}")
    if not (isinstance(step, int) and 0 <= step < total_steps):
        raise ValueError(f"step must be an integer in [0, {total_steps - 1}]; got {step!r}")


@dataclass(frozen=True)
class Schedule:
    """Base of the hold-then-anneal schedules: hold ``start``, then go to ``end`` at the last step."""

    start: float = 0.4
    end: float = 20.0
    hold_fraction: float = 0.6
    offset_mode = "sigmoid"

    def __post_init__(self) -> None:
        check_temperature(self.start)
        check_temperature(self.end)
        if not (0.0 <= float(self.hold_fraction) < 1.0):
            raise ValueError(f"hold_fraction must be in [0, 1); got {self.hold_fraction!r}")

    def progress(self, step: int, total_steps: int) -> float | None:
        """Annealing progress in [0, 1] (``None`` while holding)."""
        _check_step(step, total_steps)
        n_hold = math.floor(self.hold_fraction * total_steps + 1e-9)
        n_anneal = total_steps - n_hold
        if step < n_hold:
            return None
        if n_anneal == 1:
            return 1.0
        return (step - n_hold) / (n_anneal - 1)

    def interpolate(self, u: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, step: int, total_steps: int) -> float:
        u = self.progress(step, total_steps)
        return self.start if u is None else self.interpolate(u)


@dataclass(frozen=True)
class HoldThenExponential(Schedule):
    """``T = start · (end/start) ** u`` after the hold (the default, authors' schedule)."""

    def interpolate(self, u: float) -> float:
        return self.start * (self.end / self.start) ** u


@dataclass(frozen=True)
class HoldThenLinear(Schedule):
    """``T = start + (end − start) · u`` after the hold."""

    def interpolate(self, u: float) -> float:
        return self.start + (self.end - self.start) * u


@dataclass(frozen=True)
class HoldThenCosine(Schedule):
    """``T = end + (start − end) · (1 + cos(π u)) / 2`` after the hold."""

    def interpolate(self, u: float) -> float:
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * u))


@dataclass(frozen=True)
class ConstantTemperature:
    """``T`` fixed for every step (useful for ablations)."""

    temperature: float = 1.0
    offset_mode = "sigmoid"

    def __post_init__(self) -> None:
        check_temperature(self.temperature)

    def __call__(self, step: int, total_steps: int) -> float:
        _check_step(step, total_steps)
        return float(self.temperature)


@dataclass(frozen=True)
class RoundSTE:
    """Plain round-with-STE baseline: hard β in the forward, identity gradient to ``|β̂|``.

    The temperature it returns (1.0) is ignored by the layers; what matters is
    ``offset_mode = "round_ste"`` (see :func:`dmx.wrap.apply_schedule`).
    """

    offset_mode = "round_ste"

    def __call__(self, step: int, total_steps: int) -> float:
        _check_step(step, total_steps)
        return 1.0


SCHEDULES = {
    "exponential": HoldThenExponential,
    "linear": HoldThenLinear,
    "cosine": HoldThenCosine,
    "constant": ConstantTemperature,
    "round_ste": RoundSTE,
}


def get_schedule(name: str, **kwargs) -> object:
    """Build a schedule by name (``SCHEDULES`` keys) with keyword overrides."""
    try:
        cls = SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown schedule {name!r}; valid schedules: {sorted(SCHEDULES)}") from None
    return cls(**kwargs)
