"""What the calibration loop trains, and the checkpoint state of a run.

A :class:`Trainable` is one group of parameters trained from the dMX loss with its own optimiser:
the offsets (``dmx.calibrate.offset_trainable``) and whatever a caller plugs in (a learned
rotation: ``dmx.llm.rotation.training.rotation_trainables``). A :class:`CalibrationRun` holds the
trainables, their optimisers and what identifies the run; :meth:`CalibrationRun.state` builds the
one checkpoint dict and :meth:`CalibrationRun.restore` loads it back.

Checkpoint layout (``dmx.checkpoint`` writes it atomically): ``version``, ``step``, ``rng``
(torch RNG state), ``config`` (the settings), ``layers``, ``windows_hash``, the model setup keys
(e.g. ``rotation``), ``metrics`` (the last step's), and per trainable its two
``checkpoint_keys``: parameter values and optimiser state (``beta_hat``/``optimizer`` for the
offsets, ``rotation_matrices``/``rotation_optimizer`` for a learned rotation, the layout runs
before this module wrote, so their checkpoints still resume).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dmx.checkpoint import CHECKPOINT_VERSION, CheckpointError

__all__ = ["Trainable", "CalibrationRun"]

#: The checkpoint entries of the run itself (the rest belong to the model setup and the trainables).
_RUN_KEYS = ("version", "step", "rng", "config", "layers", "windows_hash", "metrics")


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Trainable:
    """One group of parameters the calibration loop trains from the dMX loss.

    The loop builds the optimiser with ``make_optimizer(parameters)``, runs each step's forward
    and backward passes inside ``step_context()``, clips the gradients of all trainables by one
    joint norm, steps every optimiser, and calls ``finish()`` once after the last step, before the
    formats are deployed. ``checkpoint_keys``: the checkpoint entries of the parameter values and
    of the optimiser's state; ``names``: the values are stored as ``{name: tensor}`` (else as a
    list in order).
    """

    parameters: tuple[nn.Parameter, ...]
    make_optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer]
    checkpoint_keys: tuple[str, str]
    names: tuple[str, ...] | None = None
    step_context: Callable[[], AbstractContextManager] = nullcontext
    finish: Callable[[], Any] = _nothing

    def values(self) -> dict[str, torch.Tensor] | list[torch.Tensor]:
        """Host copies of the parameter values, as the checkpoint stores them."""
        copies = [p.detach().cpu().clone() for p in self.parameters]
        return copies if self.names is None else dict(zip(self.names, copies, strict=True))

    @torch.no_grad()
    def load_values(self, saved: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> None:
        """Copy values stored by :meth:`values` into the parameters (on their devices)."""
        tensors = list(saved) if self.names is None else [saved[name] for name in self.names]
        for p, value in zip(self.parameters, tensors, strict=True):
            p.copy_(value.to(p.device))


@dataclass(frozen=True)
class CalibrationRun:
    """The trainables of one calibration run, their optimisers, and what a checkpoint must match.

    ``settings``: the run's config as a dict (checked against a checkpoint by
    ``dmx.calibrate.check_checkpoint`` before any model is loaded); ``layer_names``: the
    calibrated layers, sorted; ``windows_hash``: sha256 of the calibration windows;
    ``model_setup``: what was done to the model that the trajectory depends on (e.g.
    ``{"rotation": description}``).
    """

    trainables: tuple[Trainable, ...]
    optimizers: tuple[torch.optim.Optimizer, ...]
    settings: dict[str, Any]
    layer_names: list[str]
    windows_hash: str
    model_setup: dict[str, Any]

    def __post_init__(self) -> None:
        keys = [*_RUN_KEYS, *self.model_setup, *(k for t in self.trainables for k in t.checkpoint_keys)]
        clashing = sorted({k for k in keys if keys.count(k) > 1})
        if clashing:
            raise ValueError(f"checkpoint entries {clashing} are claimed twice (by the run, the model setup or two "
                             "trainables); give each trainable its own checkpoint_keys")

    @property
    def parameters(self) -> list[nn.Parameter]:
        """Every trained parameter, trainable by trainable (the order of the joint gradient norm)."""
        return [p for t in self.trainables for p in t.parameters]

    def state(self, step: int, metrics: Mapping[str, float]) -> dict[str, Any]:
        """The checkpoint after ``step`` completed steps (module docstring)."""
        state: dict[str, Any] = {
            "version": CHECKPOINT_VERSION,
            "step": step,
            "rng": {"torch": torch.get_rng_state()},
            "config": dict(self.settings),
            "layers": list(self.layer_names),
            "windows_hash": self.windows_hash,
            **self.model_setup,
            "metrics": dict(metrics),  # the last step's, so a finished run re-deployed still reports them
        }
        for trainable, optimizer in zip(self.trainables, self.optimizers, strict=True):
            values_key, optimizer_key = trainable.checkpoint_keys
            state[values_key] = trainable.values()
            state[optimizer_key] = optimizer.state_dict()
        return state

    def restore(self, state: Mapping[str, Any]) -> tuple[int, dict[str, float]]:
        """Load ``state`` into the trainables, optimisers and torch RNG; ``(completed steps, last metrics)``.

        ``CheckpointError`` when the checkpoint belongs to another run: other layers, windows or
        model setup (another rotation, say).
        """
        if state["layers"] != self.layer_names:
            raise CheckpointError("checkpoint was written for different layers (another model or include_lm_head setting)")
        if state.get("windows_hash") != self.windows_hash:
            raise CheckpointError("cannot resume: calibration windows differ from the checkpoint (other data, seqlen, "
                                  "seed or model tokenizer)")
        for key, now in self.model_setup.items():
            if state.get(key) != now:
                raise CheckpointError(f"cannot resume: the checkpoint was written under {key} {state.get(key)}, the "
                                      f"model now has {now}; use the same {key} or a new checkpoint_dir")
        for trainable, optimizer in zip(self.trainables, self.optimizers, strict=True):
            values_key, optimizer_key = trainable.checkpoint_keys
            trainable.load_values(state[values_key])
            optimizer.load_state_dict(state[optimizer_key])
        torch.set_rng_state(state["rng"]["torch"])
        return int(state["step"]), dict(state.get("metrics", {}))
