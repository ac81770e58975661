"""The dMX calibration loop: learn one MX format per layer under an average-bit budget.

Objective per step (dMX): ``CE(next-token) + bit_budget_penalty(average_bits(layers), target, lam)``
— the target-aware hinge of dmx core — minimised over the per-layer offsets ``beta_hat`` only
(model weights frozen) with SGD (lr 1, momentum 0.99, Nesterov), while the temperature follows
dmx core's annealing schedule (``HoldThenExponential`` by default). Gradients of
``grad_accum`` micro-batches of ``batch_size`` windows are summed (each scaled by
``1/grad_accum``), their joint norm (offsets and any rotation matrices) is clipped to
``clip_grad_norm`` (1.0, the Hugging Face trainer's default the authors train with; 0 turns it
off), then one optimiser step is taken. A fresh run starts every offset at ``beta_init`` (0, the
authors' start: every layer near the low format). ``docs/FIDELITY.md`` compares each setting
with the authors' code.

Learned rotations (SpinQuant-style, :mod:`dmx.rotation` with ``kind="learned"``): when the model
carries trainable rotation matrices (:func:`dmx.rotation.rotation_parameters`), they are
optimised jointly with the offsets in the same loop, from the same loss and backward pass, by
:class:`dmx.cayley.CayleySGD` (``rotation_lr``, default 1.5); the weights stay frozen. At the end
the learned matrices are folded into the weights (:func:`dmx.rotation.bake_rotation`) before the
hard assignment is applied, and the provenance records the rotation's description.

Checkpoints (atomic, see :mod:`dmx.checkpoint`) hold the offsets, optimiser state, completed
step count, torch RNG state, the settings and, with a learned rotation, the rotation matrices and
the Cayley optimiser's state; they are written every ``checkpoint_every`` steps,
at the end, and when the run is interrupted with Ctrl-C (or SIGTERM, which the ``dmx`` CLI turns
into the same interrupt). The checkpoint before the latest is kept, and a corrupt latest one
resumes from it. ``resume=True`` continues from the checkpoint ("resuming from step N" on
stderr) and reproduces the uninterrupted run exactly (the window order is a pure function of the
seed and the step). A crash loses at most ``checkpoint_every`` steps.

Final rounding (``final_rounding``): ``"threshold"`` (the method's rule) deploys each layer's hard
format, ``|β̂| > β_max/2`` -> high. The hinge is one-sided, so the soft bits settle where the CE
gradient balances it, a little above the target; longer runs can end well over it (5.35 bits at
a 5-bit target after 120 steps on SmolLM2-135M). ``"budget"`` keeps what dMX learned, the
ranking of the layers by ``|β̂|``, and fills the budget exactly: every layer starts at the high
format and the smallest ``|β̂|`` are demoted until the average bits are ``<= target_bits``
(the greedy of :func:`dmx.kl_baseline.select_by_sensitivity`, with ``|β̂|`` as the score), so the
result never exceeds the budget and undershoots it by less than one layer's step. The threshold
rule's bits are kept in the provenance (``threshold_element_bits``).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from contextlib import nullcontext
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dmx.assignment import WEIGHTINGS, Assignment, apply_assignment
from dmx.checkpoint import (CHECKPOINT_VERSION, CheckpointError, checkpoint_exists, checkpoint_path, load_checkpoint,
                            save_checkpoint)
from dmx.data import token_hash
from dmx.models import input_device
from dmx.provenance import software_versions
from dmx.quantized import set_calibration_mode
from mx_spec.minifloat import FRACTIONAL_SCALES

__all__ = ["CalibrationConfig", "FINAL_ROUNDINGS", "window_order", "objective", "calibrate", "budget_formats",
           "check_checkpoint"]

#: How the learned offsets become the deployed formats (module docstring).
FINAL_ROUNDINGS = ("threshold", "budget")


@dataclass(frozen=True)
class CalibrationConfig:
    """Settings of one calibration run (the CLI flags of ``dmx calibrate`` mirror these).

    ``schedule_name`` is a key of ``dmx.anneal.SCHEDULES`` (default ``exponential`` =
    ``HoldThenExponential``); ``t_start``/``t_end``/``hold_fraction`` left as ``None`` take the
    schedule's defaults. ``weighting``: how the average bits of the budget are
    taken over layers, ``mean`` (each layer counts once) or ``elements`` (by weight count).
    ``rotation_lr``: Cayley SGD learning rate of learned rotation matrices (SpinQuant's 1.5);
    unused when the model has none. ``final_rounding``: one of ``FINAL_ROUNDINGS`` (module
    docstring): the method's threshold, or the budget filled exactly in the order of ``|β̂|``.
    ``beta_init``: the offset every layer starts from (0: the authors'; 1.0: this project's first
    default). ``clip_grad_norm``: max joint gradient norm per step (0: no clipping).
    ``fractional_scale``: the block-scale rule at fractional widths (``mx_spec.minifloat``).
    ``backend``: the MX forward of every layer (``dmx.autograd.BACKENDS``, ``None``: keep the layers'
    own, ``torch`` by default); the bits are the same, so a checkpoint resumes across backends.
    ``steps``/``batch_size``/``checkpoint_every`` default to the demo's 40 steps of 2 windows,
    checkpointed every 5 (``dmx calibrate`` and ``dmx sweep`` take their defaults from here;
    before issue #14 they were 60, 1, 10 here and 40, 2, 5 in the CLI).
    """

    family: str = "fp8_fp4"
    target_bits: float = 5.0
    lam: float = 5.0
    steps: int = 40
    batch_size: int = 2
    grad_accum: int = 1
    lr: float = 1.0
    momentum: float = 0.99
    nesterov: bool = True
    t_start: float | None = None
    t_end: float | None = None
    hold_fraction: float | None = None
    schedule_name: str = "exponential"
    weighting: str = "mean"
    checkpoint_every: int = 5
    seed: int = 0
    rotation_lr: float = 1.5
    final_rounding: str = "threshold"
    beta_init: float = 0.0
    clip_grad_norm: float = 1.0
    fractional_scale: str = FRACTIONAL_SCALES[0]
    backend: str | None = None

    def validate(self) -> None:
        """``ValueError`` naming the bad setting and the valid range."""
        positive = {"steps": self.steps, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
                    "checkpoint_every": self.checkpoint_every}
        for key, value in positive.items():
            if int(value) < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; choose one of {list(WEIGHTINGS)}")
        if self.lr <= 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"need lr > 0 and 0 <= momentum < 1, got lr={self.lr}, momentum={self.momentum}")
        if self.final_rounding not in FINAL_ROUNDINGS:
            raise ValueError(f"unknown final_rounding {self.final_rounding!r}; choose one of {list(FINAL_ROUNDINGS)}")
        if not self.rotation_lr > 0:
            raise ValueError(f"rotation_lr must be > 0, got {self.rotation_lr}")
        if not (math.isfinite(self.beta_init) and math.isfinite(self.clip_grad_norm) and self.clip_grad_norm >= 0):
            raise ValueError(f"need a finite beta_init and clip_grad_norm >= 0 (0: no clipping), got "
                             f"beta_init={self.beta_init}, clip_grad_norm={self.clip_grad_norm}")
        if self.backend is not None:
            from dmx.autograd import check_backend

            check_backend(self.backend)
        if self.fractional_scale not in FRACTIONAL_SCALES:
            raise ValueError(f"unknown fractional_scale {self.fractional_scale!r}; choose one of {list(FRACTIONAL_SCALES)}")
        from dmx.family import get_family

        get_family(self.family).validate_target(self.target_bits)
        self.schedule()  # unknown schedule name / bad temperatures raise here, before any work

    def schedule(self):
        """The temperature schedule ``(step, total_steps) -> T`` (``dmx.anneal.get_schedule``)."""
        from dmx.anneal import get_schedule

        overrides = {k: v for k, v in (("start", self.t_start), ("end", self.t_end),
                                       ("hold_fraction", self.hold_fraction)) if v is not None}
        return get_schedule(self.schedule_name, **overrides)


def window_order(n_windows: int, total: int, seed: int) -> torch.Tensor:
    """Window index for each of ``total`` micro-batch slots: seeded permutations of all windows, concatenated.

    A pure function of ``(n_windows, total, seed)``, so a resumed run sees the same windows.
    """
    generator = torch.Generator().manual_seed(int(seed))
    epochs = -(-total // n_windows)
    return torch.cat([torch.randperm(n_windows, generator=generator) for _ in range(epochs)])[:total]


def objective(
    model: nn.Module,
    layers: Mapping[str, Any],
    batch: torch.Tensor,
    *,
    target_bits: float,
    lam: float,
    weighting: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dMX loss on one batch ``LongTensor[b, s]``: returns ``(loss, ce, average_bits)``.

    ``ce`` is the mean next-token cross-entropy over the ``b * (s - 1)`` predicted tokens (in
    float32 even for a bf16 model); ``loss = dmx_objective(ce, average_bits, target, lam)`` =
    ``ce + max(0, lam * (average_bits - target))`` (``FloatingPointError`` on a non-finite CE).
    """
    from dmx.regularizer import average_bits, dmx_objective

    batch = batch.to(input_device(model))
    logits = model(input_ids=batch, use_cache=False).logits
    ce = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1).to(logits.device)
    )
    bits = average_bits(layers, weighting=weighting)
    loss = dmx_objective(ce, bits.reshape(1).to(ce.device), target_bits, lam)
    return loss, ce, bits


def _ordered(layers: Mapping[str, Any]) -> list[str]:
    return sorted(layers)


def _offsets(layers: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``{"<layer>.beta_hat": param, ...}`` (plus ``beta_hat_input`` of untied layers), name-sorted."""
    return {f"{name}.{pname}": p for name in _ordered(layers)
            for pname, p in layers[name].named_parameters(recurse=False)}


def budget_formats(layers: Mapping[str, Any], target_bits: float, *, weighting: str = "mean") -> dict[str, str]:
    """``{layer: format}`` filling ``target_bits`` in the order of the learned ``|β̂|`` (``final_rounding="budget"``).

    Every layer starts at its family's high format; the layers with the smallest ``|β̂|`` are
    demoted to the low format until the average element bits (``weighting`` as in
    :class:`dmx.assignment.Assignment`) are ``<= target_bits``. Needs one offset per layer
    (``tie=True``) and one family for all layers.
    """
    from dmx.kl_baseline import select_by_sensitivity

    untied = [n for n in _ordered(layers) if not layers[n].tie]
    if untied:
        raise ValueError(f"final_rounding='budget' ranks layers by their one shared offset, but {untied[0]!r} "
                         "has separate weight/input offsets (tie=False); use final_rounding='threshold'")
    families = {layers[n].family.name for n in layers}
    if len(families) != 1:
        raise ValueError(f"final_rounding='budget' needs one format family for all layers, got {sorted(families)}")
    family = next(iter(layers.values())).family
    scores = {n: float(layers[n].beta_hat.detach().abs()) for n in layers}
    sizes = {n: int(layers[n].linear.weight.numel()) for n in layers}
    return select_by_sensitivity(scores, _ordered(layers), low_format=family.low_format,
                                 high_format=family.high_format, target_bits=target_bits,
                                 sizes=sizes, weighting=weighting)


def _rotation_entry(model: nn.Module) -> dict[str, Any] | None:
    from dmx.rotation import rotation_state

    state = rotation_state(model)
    return None if state is None else state.describe()


def _state(step: int, layers, optimizer, cfg: CalibrationConfig, windows_hash: str, model: nn.Module,
           rotation_optimizer, metrics: Mapping[str, float]) -> dict[str, Any]:
    from dmx.rotation import rotation_parameters

    state = {
        "version": CHECKPOINT_VERSION,
        "step": step,
        "beta_hat": {key: p.detach().cpu().clone() for key, p in _offsets(layers).items()},
        "optimizer": optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state()},
        "config": dataclasses.asdict(cfg),
        "layers": _ordered(layers),
        "windows_hash": windows_hash,
        "rotation": _rotation_entry(model),
        "metrics": dict(metrics),  # the last step's, so a finished run re-deployed still reports them
    }
    if rotation_optimizer is not None:
        state["rotation_matrices"] = [p.detach().cpu().clone() for p in rotation_parameters(model)]
        state["rotation_optimizer"] = rotation_optimizer.state_dict()
    return state


#: Settings that do not change the offsets' trajectory, so a checkpoint resumes across them.
_RESUMABLE_ACROSS = ("checkpoint_every", "final_rounding", "backend")
#: Values of settings added later, as the runs before them had them (a checkpoint that lacks the
#: key was written with this value, not with today's default).
_BEFORE_ADDED = {"beta_init": 1.0, "clip_grad_norm": 0.0, "fractional_scale": "emax"}


def _check_settings(state: dict[str, Any], cfg: CalibrationConfig) -> None:
    """``CheckpointError`` when ``cfg`` would not continue the checkpoint's trajectory."""
    saved = dict(state["config"])
    current = dataclasses.asdict(cfg)
    defaults = {f.name: f.default for f in dataclasses.fields(CalibrationConfig)} | _BEFORE_ADDED
    # checkpoint_every and final_rounding may change between runs (a finished checkpoint can be
    # deployed with the other rounding); everything else defines the trajectory. A setting added
    # after the checkpoint was written counts as the value runs had before it existed.
    differing = sorted(k for k in current if k not in _RESUMABLE_ACROSS
                       and saved.get(k, defaults[k]) != current[k])
    if differing:
        detail = ", ".join(f"{k}: checkpoint {saved.get(k, defaults[k])!r} vs now {current[k]!r}" for k in differing)
        raise CheckpointError(f"cannot resume: settings differ from the checkpoint ({detail}); use the same settings or a new --checkpoint-dir")


def check_checkpoint(checkpoint_dir: str | None, cfg: CalibrationConfig, *, resume: bool,
                     announce: bool = True) -> dict[str, Any] | None:
    """What can be known about the checkpoint before any model is loaded; returns the state to resume.

    ``CheckpointError`` when ``resume`` finds no usable checkpoint (the latest and the previous
    one missing or corrupt) or one written with other settings, and when a run that does not
    resume would overwrite an earlier run's checkpoint. ``announce``: say on stderr when the
    previous checkpoint stands in for a corrupt latest one (off for an early check whose run
    loads it again).
    """
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    if checkpoint_dir is None:
        return None
    if not resume:
        if checkpoint_exists(checkpoint_dir):
            # never overwrite the work of an interrupted run by accident
            raise CheckpointError(
                f"{checkpoint_path(checkpoint_dir)} exists from an earlier run: pass --resume (resume=True) to "
                f"continue it, or delete it / choose another --checkpoint-dir to start over"
            )
        return None
    state = load_checkpoint(checkpoint_dir, announce=announce)
    _check_settings(state, cfg)
    return state


def _restore(state: dict[str, Any], layers, optimizer, cfg: CalibrationConfig, windows_hash: str,
             model: nn.Module, rotation_optimizer) -> int:
    from dmx.rotation import rotation_parameters

    if state["layers"] != _ordered(layers):
        raise CheckpointError("checkpoint was written for different layers (another model or --include-lm-head setting)")
    _check_settings(state, cfg)
    if state.get("windows_hash") != windows_hash:
        raise CheckpointError("cannot resume: calibration windows differ from the checkpoint (other data, seqlen, seed or model tokenizer)")
    if state.get("rotation") != _rotation_entry(model):
        raise CheckpointError(
            f"cannot resume: the checkpoint was written under rotation {state.get('rotation')}, the model now has "
            f"{_rotation_entry(model)}; pass the same --rotation flags or a new --checkpoint-dir"
        )
    with torch.no_grad():
        for key, p in _offsets(layers).items():
            p.copy_(state["beta_hat"][key].to(p.device))
        if rotation_optimizer is not None:
            for p, saved_matrix in zip(rotation_parameters(model), state["rotation_matrices"], strict=True):
                p.copy_(saved_matrix.to(p.device))
    optimizer.load_state_dict(state["optimizer"])
    if rotation_optimizer is not None:
        rotation_optimizer.load_state_dict(state["rotation_optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    return int(state["step"])


def calibrate(
    model: nn.Module,
    layers: Mapping[str, Any],
    windows: torch.Tensor,
    cfg: CalibrationConfig = CalibrationConfig(),
    *,
    checkpoint_dir: str | None = None,
    resume: bool = False,
    provenance: Mapping[str, Any] | None = None,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> Assignment:
    """Run dMX calibration on ``windows`` (``LongTensor[n, seqlen]``) and return the hard assignment.

    ``layers``: the ``DMXLinear`` map from :func:`dmx.quantized.quantize_model`. On return the
    layers are fixed to the assigned standard MX formats (ready for evaluation). ``on_step(step,
    metrics)`` is called after each completed step (1-based) and its checkpoint. ``provenance``
    (model name, data hash, ...) is merged with seed, versions and settings into the result.
    An existing checkpoint in ``checkpoint_dir`` is never overwritten unless ``resume=True``
    (``CheckpointError`` otherwise). A model rotated with ``dmx.rotation.apply_rotation(model,
    "learned")`` has its rotation learned too (Cayley SGD, ``cfg.rotation_lr``) and baked into the
    weights on return; the rotation's description goes into ``provenance["rotation"]``.
    """
    cfg.validate()
    if not layers:
        raise ValueError("no dMX layers to calibrate; call dmx.quantized.quantize_model first")
    if windows.ndim != 2 or windows.shape[0] < 1:
        raise ValueError(f"windows must be a LongTensor[n, seqlen] with n >= 1, got shape {tuple(windows.shape)}")
    state = check_checkpoint(checkpoint_dir, cfg, resume=resume)
    windows_hash = token_hash(windows)
    schedule = cfg.schedule()
    from dmx.distributed import all_reduce_gradients, all_reduce_sum, is_main, shard, world

    main, n_procs = is_main(), world()[1]
    params = list(_offsets(layers).values())
    # Nesterov with zero momentum is plain SGD; torch refuses the combination, so drop the flag
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    from dmx.cayley import CayleySGD
    from dmx.rotation import bake_rotation, rotation_parameters, shared_rotated_weights

    rotations = rotation_parameters(model)
    rotation_optimizer = CayleySGD(rotations, lr=cfg.rotation_lr) if rotations else None
    order = window_order(windows.shape[0], cfg.steps * cfg.grad_accum * cfg.batch_size, cfg.seed)
    torch.manual_seed(cfg.seed)
    start = 0
    metrics: dict[str, float] = {}
    for layer in layers.values():
        layer.fractional_scale = cfg.fractional_scale
        if cfg.backend is not None:
            layer.backend = cfg.backend
    if state is not None:
        start = _restore(state, layers, optimizer, cfg, windows_hash, model, rotation_optimizer)
        metrics = dict(state.get("metrics", {}))
        print(f"resuming from step {start} of {cfg.steps} (checkpoint in {checkpoint_dir})", file=sys.stderr)
    else:
        with torch.no_grad():
            for p in params:
                p.fill_(cfg.beta_init)
    from dmx.wrap import apply_schedule

    set_calibration_mode(model, layers, training=True)
    completed = start
    bar = tqdm(total=cfg.steps, initial=start, desc="dMX calibration", disable=not (progress and main))
    try:
        for step in range(start, cfg.steps):
            temperature = apply_schedule(model, schedule, step, cfg.steps)
            optimizer.zero_grad(set_to_none=True)
            if rotation_optimizer is not None:
                rotation_optimizer.zero_grad(set_to_none=True)
            loss_sum = ce_sum = 0.0
            # with several micro-batches, rotate the weights once per step (dmx.rotation.shared_rotated_weights)
            with shared_rotated_weights(model) if cfg.grad_accum > 1 else nullcontext():
                for micro in range(cfg.grad_accum):
                    first = (step * cfg.grad_accum + micro) * cfg.batch_size
                    # data parallel: this process's share of the global batch, its loss weighted by
                    # that share, so the summed gradient is the one of the whole batch (dmx.distributed)
                    batch, share = shard(windows[order[first : first + cfg.batch_size]])
                    loss, ce, bits = objective(model, layers, batch, target_bits=cfg.target_bits, lam=cfg.lam,
                                               weighting=cfg.weighting)
                    (loss / cfg.grad_accum if share == 1.0 else loss * share / cfg.grad_accum).backward()
                    loss_sum += float(loss.detach()) * share / cfg.grad_accum
                    ce_sum += float(ce.detach()) * share / cfg.grad_accum
            if n_procs > 1:
                all_reduce_gradients(params + rotations)  # before clipping: one norm of the global gradient
                sums = torch.tensor([loss_sum, ce_sum], dtype=torch.float64, device=params[0].device)  # nccl: on the GPU
                all_reduce_sum([sums])
                loss_sum, ce_sum = float(sums[0]), float(sums[1])
            if cfg.clip_grad_norm > 0:
                # one norm over everything trained, as the Hugging Face trainer clips
                torch.nn.utils.clip_grad_norm_(params + rotations, cfg.clip_grad_norm)
            optimizer.step()
            if rotation_optimizer is not None:
                rotation_optimizer.step()
            completed = step + 1
            metrics = {"loss": loss_sum, "ce": ce_sum, "bits": float(bits.detach()), "T": temperature}
            bar.set_postfix(loss=f"{loss_sum:.3f}", ce=f"{ce_sum:.3f}", bits=f"{float(bits.detach()):.2f}", T=f"{temperature:.2f}")
            bar.update(1)
            if main and checkpoint_dir is not None and (completed % cfg.checkpoint_every == 0 or completed == cfg.steps):
                save_checkpoint(checkpoint_dir, _state(completed, layers, optimizer, cfg, windows_hash, model, rotation_optimizer, metrics))
            if on_step is not None:
                on_step(completed, metrics)
    except KeyboardInterrupt:
        if main and checkpoint_dir is not None and completed > start:
            save_checkpoint(checkpoint_dir, _state(completed, layers, optimizer, cfg, windows_hash, model, rotation_optimizer, metrics))
            bar.write(f"interrupted after step {completed}; checkpoint saved in {checkpoint_dir}, continue with --resume",
                      file=sys.stderr)
        raise
    finally:
        bar.close()
    set_calibration_mode(model, layers, training=False)
    if rotation_optimizer is not None:
        bake_rotation(model)  # fold the learned matrices into the weights before the hard formats are fixed
    record = dict(provenance or {})
    record.update({
        "method": "dmx",
        "seed": cfg.seed,
        "settings": dataclasses.asdict(cfg),
        "calibration_windows": {"count": int(windows.shape[0]), "seqlen": int(windows.shape[1]), "sha256": windows_hash},
        "final_metrics": metrics,
        "rotation": _rotation_entry(model),
        "versions": software_versions(),
    })
    if n_procs > 1:
        record["data_parallel_processes"] = n_procs
    assignment = Assignment.from_layers(layers, weighting=cfg.weighting, provenance=record)
    if cfg.final_rounding == "budget":
        record["threshold_element_bits"] = assignment.element_bits
        apply_assignment(layers, budget_formats(layers, cfg.target_bits, weighting=cfg.weighting))
        assignment = Assignment.from_layers(layers, weighting=cfg.weighting, provenance=record)
    apply_assignment(layers, assignment)
    return assignment
