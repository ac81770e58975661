"""The dMX calibration loop: learn one MX format per layer under an average-bit budget.

Objective per step (dMX): ``CE(next-token) + bit_budget_penalty(average_bits(layers), target, lam)``
— the target-aware hinge of dmx core — minimised over the per-layer offsets ``beta_hat`` only
(model weights frozen) with SGD (lr 1, momentum 0.99, Nesterov), while the temperature follows
dmx core's annealing schedule (``HoldThenExponential`` by default). Gradients of
``grad_accum`` micro-batches of ``batch_size`` windows are summed (each scaled by
``1/grad_accum``), their joint norm (over everything trained) is clipped to ``clip_grad_norm``
(1.0, the Hugging Face trainer's default the authors train with; 0 turns it off), then one
optimiser step is taken. A fresh run starts every offset at ``beta_init`` (0, the authors' start:
every layer near the low format). ``docs/FIDELITY.md`` compares each setting with the authors' code.

:func:`calibrate` reads as a plain training loop: the trainables (:class:`dmx.trainable.Trainable`: the offsets,
plus whatever the caller passes), their optimisers, the schedule, one step per iteration, a
checkpoint every ``checkpoint_every`` steps, then each trainable's ``finish`` and the deployment
(:func:`dmx.assignment.deploy_formats`, ``final_rounding`` ``"threshold"`` or ``"budget"``).
A learned rotation (SpinQuant-style) is one more trainable: the caller builds it
(:func:`dmx.llm.rotation.training.rotation_trainables`: Cayley SGD at ``rotation_lr``, weights rotated
once per step under gradient accumulation, folded into the weights by ``finish``) and passes the
rotation's description as ``model_setup``; this module knows nothing about rotations.

Checkpoints (atomic, see :mod:`dmx.checkpoint`) are one dict built by
:meth:`dmx.trainable.CalibrationRun.state` and restored by :meth:`~dmx.trainable.CalibrationRun.restore`
(layout in :mod:`dmx.trainable`; checkpoints written before still resume). They are written every ``checkpoint_every`` steps, at the end, and when the run is interrupted with Ctrl-C
(or SIGTERM, which the ``dmx`` CLI turns into the same interrupt). The checkpoint before the latest
is kept, and a corrupt latest one resumes from it. ``resume=True`` continues from the checkpoint
("resuming from step N" on stderr) and reproduces the uninterrupted run exactly (the window order
is a pure function of the seed and the step). A crash loses at most ``checkpoint_every`` steps.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dmx.anneal import get_schedule
from dmx.assignment import WEIGHTINGS, Assignment, check_final_rounding, deploy_formats
from dmx.autograd import check_backend
from dmx.checkpoint import CheckpointError, checkpoint_exists, checkpoint_path, load_checkpoint, save_checkpoint
from dmx.distributed import all_reduce_gradients, all_reduce_sum, is_main, shard, world
from dmx.family import DEFAULT_FAMILY, get_family
from dmx.provenance import software_versions, token_hash
from dmx.regularizer import average_bits, dmx_objective
from dmx.trainable import CalibrationRun, Trainable
from dmx.wrap import apply_schedule, input_device, set_calibration_mode
from mx_spec.minifloat import FRACTIONAL_SCALES

__all__ = ["CalibrationConfig", "window_order", "objective", "offset_trainable", "step_batches", "train_step",
           "calibrate", "check_checkpoint"]


@dataclass(frozen=True)
class CalibrationConfig:
    """Settings of one calibration run (the CLI flags of ``dmx calibrate`` mirror these).

    ``schedule_name`` is a key of ``dmx.anneal.SCHEDULES`` (default ``exponential`` =
    ``HoldThenExponential``); ``t_start``/``t_end``/``hold_fraction`` left as ``None`` take the
    schedule's defaults. ``weighting``: how the average bits of the budget are
    taken over layers, ``mean`` (each layer counts once) or ``elements`` (by weight count).
    ``rotation_lr``: Cayley SGD learning rate of learned rotation matrices (SpinQuant's 1.5), read
    by the rotation's trainable; unused when the model has none. ``final_rounding``: one of
    ``dmx.assignment.FINAL_ROUNDINGS``: the method's threshold, or the budget filled exactly in
    the order of ``|β̂|``.
    ``beta_init``: the offset every layer starts from (0: the authors'; 1.0: this project's first
    default). ``clip_grad_norm``: max joint gradient norm per step (0: no clipping).
    ``fractional_scale``: the block-scale rule at fractional widths (``mx_spec.minifloat``).
    ``backend``: the MX forward of every layer (``dmx.autograd.BACKENDS``, ``None``: keep the layers'
    own, ``torch`` by default); the bits are the same, so a checkpoint resumes across backends.
    ``steps``/``batch_size``/``checkpoint_every`` default to the demo's 40 steps of 2 windows,
    checkpointed every 5 (``dmx calibrate`` and ``dmx sweep`` take their defaults from here;
    before issue #14 they were 60, 1, 10 here and 40, 2, 5 in the CLI).
    """

    family: str = DEFAULT_FAMILY
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
        check_final_rounding(self.final_rounding)
        if not self.rotation_lr > 0:
            raise ValueError(f"rotation_lr must be > 0, got {self.rotation_lr}")
        if not (math.isfinite(self.beta_init) and math.isfinite(self.clip_grad_norm) and self.clip_grad_norm >= 0):
            raise ValueError(f"need a finite beta_init and clip_grad_norm >= 0 (0: no clipping), got "
                             f"beta_init={self.beta_init}, clip_grad_norm={self.clip_grad_norm}")
        if self.backend is not None:
            check_backend(self.backend)
        if self.fractional_scale not in FRACTIONAL_SCALES:
            raise ValueError(f"unknown fractional_scale {self.fractional_scale!r}; choose one of {list(FRACTIONAL_SCALES)}")
        get_family(self.family).validate_target(self.target_bits)
        self.schedule()  # unknown schedule name / bad temperatures raise here, before any work

    def schedule(self):
        """The temperature schedule ``(step, total_steps) -> T`` (``dmx.anneal.get_schedule``)."""
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
    batch = batch.to(input_device(model))
    logits = model(input_ids=batch, use_cache=False).logits
    ce = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1).to(logits.device)
    )
    bits = average_bits(layers, weighting=weighting)
    loss = dmx_objective(ce, bits.reshape(1).to(ce.device), target_bits, lam)
    return loss, ce, bits


def offset_trainable(layers: Mapping[str, Any], cfg: CalibrationConfig) -> Trainable:
    """The offsets ``beta_hat`` (and ``beta_hat_input`` of untied layers) of ``layers``, name-sorted, under SGD."""
    offsets = {f"{name}.{pname}": p for name in sorted(layers)
               for pname, p in layers[name].named_parameters(recurse=False)}

    def make_optimizer(params: list[nn.Parameter]) -> torch.optim.Optimizer:
        # Nesterov with zero momentum is plain SGD; torch refuses the combination, so drop the flag
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)

    return Trainable(parameters=tuple(offsets.values()), make_optimizer=make_optimizer,
                     checkpoint_keys=("beta_hat", "optimizer"), names=tuple(offsets))


# ------------------------------------------------------------------------------------------------
# resuming: the settings a checkpoint must match (the rest: dmx.trainable.CalibrationRun.restore)
# ------------------------------------------------------------------------------------------------
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
        raise CheckpointError(f"cannot resume: settings differ from the checkpoint ({detail}); use the same settings or a new checkpoint_dir")


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
                f"{checkpoint_path(checkpoint_dir)} exists from an earlier run: pass resume=True to "
                f"continue it, or delete it / choose another checkpoint_dir to start over"
            )
        return None
    state = load_checkpoint(checkpoint_dir, announce=announce)
    _check_settings(state, cfg)
    return state


# ------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------
def _check_inputs(layers: Mapping[str, Any], windows: torch.Tensor) -> None:
    if not layers:
        raise ValueError("no dMX layers to calibrate; call dmx.llm.pipeline.quantize_model first")
    if windows.ndim != 2 or windows.shape[0] < 1:
        raise ValueError(f"windows must be a LongTensor[n, seqlen] with n >= 1, got shape {tuple(windows.shape)}")


def _configure_layers(layers: Mapping[str, Any], cfg: CalibrationConfig) -> None:
    """The layer settings a run's config decides: the fractional block-scale rule and the MX forward."""
    changes = {"fractional_scale": cfg.fractional_scale}
    if cfg.backend is not None:
        changes["backend"] = cfg.backend
    for layer in layers.values():
        layer.reconfigure(**changes)


@torch.no_grad()
def _start_offsets(offsets: Trainable, beta_init: float) -> None:
    for p in offsets.parameters:
        p.fill_(beta_init)


def step_batches(windows: torch.Tensor, order: torch.Tensor, step: int, cfg: CalibrationConfig) -> list[torch.Tensor]:
    """The ``grad_accum`` micro-batches of ``batch_size`` windows of optimiser step ``step`` (``order``: :func:`window_order`)."""
    first = step * cfg.grad_accum * cfg.batch_size
    return [windows[order[first + i * cfg.batch_size: first + (i + 1) * cfg.batch_size]] for i in range(cfg.grad_accum)]


def train_step(model: nn.Module, layers: Mapping[str, Any], batches: Sequence[torch.Tensor], cfg: CalibrationConfig,
               run: CalibrationRun) -> tuple[float, float, torch.Tensor]:
    """One optimiser step on the micro-batches ``batches``; returns ``(loss, ce, average bits)``.

    ``loss``/``ce`` are the means over the global batch (summed over processes under data
    parallelism, :mod:`dmx.distributed`); the bits are those of the last forward pass.
    """
    for optimizer in run.optimizers:
        optimizer.zero_grad(set_to_none=True)
    params = run.parameters
    loss_sum = ce_sum = 0.0
    with ExitStack() as stack:
        for trainable in run.trainables:
            stack.enter_context(trainable.step_context())
        for micro in batches:
            # data parallel: this process's share of the global batch, its loss weighted by
            # that share, so the summed gradient is the one of the whole batch (dmx.distributed)
            batch, share = shard(micro)
            loss, ce, bits = objective(model, layers, batch, target_bits=cfg.target_bits, lam=cfg.lam,
                                       weighting=cfg.weighting)
            (loss / cfg.grad_accum if share == 1.0 else loss * share / cfg.grad_accum).backward()
            loss_sum += float(loss.detach()) * share / cfg.grad_accum
            ce_sum += float(ce.detach()) * share / cfg.grad_accum
    if world()[1] > 1:
        all_reduce_gradients(params)  # before clipping: one norm of the global gradient
        sums = torch.tensor([loss_sum, ce_sum], dtype=torch.float64, device=params[0].device)  # nccl: on the GPU
        all_reduce_sum([sums])
        loss_sum, ce_sum = float(sums[0]), float(sums[1])
    if cfg.clip_grad_norm > 0:
        # one norm over everything trained, as the Hugging Face trainer clips
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
    for optimizer in run.optimizers:
        optimizer.step()
    return loss_sum, ce_sum, bits


def calibrate(
    model: nn.Module,
    layers: Mapping[str, Any],
    windows: torch.Tensor,
    cfg: CalibrationConfig = CalibrationConfig(),
    *,
    trainables: Sequence[Trainable] = (),
    model_setup: Mapping[str, Any] | None = None,
    checkpoint_dir: str | None = None,
    resume: bool = False,
    provenance: Mapping[str, Any] | None = None,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> Assignment:
    """Run dMX calibration on ``windows`` (``LongTensor[n, seqlen]``) and return the hard assignment.

    ``layers``: the ``DMXLinear`` map from :func:`dmx.llm.pipeline.quantize_model`. On return the
    layers are fixed to the assigned standard MX formats (ready for evaluation). ``trainables``:
    trained jointly with the offsets (a learned rotation:
    :func:`dmx.llm.rotation.training.rotation_trainables`). ``model_setup``: what was done to the model
    before it was wrapped that the trajectory depends on (``{"rotation": ...}``:
    :func:`dmx.llm.rotation.training.rotation_setup`), recorded in the checkpoint and the provenance; a
    resume under another one is refused. ``on_step(step, metrics)`` is called after each completed
    step (1-based) and its checkpoint. ``provenance`` (model name, data hash, ...) is merged with
    seed, versions and settings into the result. An existing checkpoint in ``checkpoint_dir`` is
    never overwritten unless ``resume=True`` (``CheckpointError`` otherwise).
    """
    cfg.validate()
    _check_inputs(layers, windows)
    saved = check_checkpoint(checkpoint_dir, cfg, resume=resume)
    main, n_procs = is_main(), world()[1]
    # what is trained: the offsets, then whatever the caller plugs in, each with its optimiser
    offsets = offset_trainable(layers, cfg)
    trainables = (offsets, *trainables)
    optimizers = tuple(t.make_optimizer(list(t.parameters)) for t in trainables)
    run = CalibrationRun(trainables, optimizers, settings=dataclasses.asdict(cfg), layer_names=sorted(layers),
                         windows_hash=token_hash(windows), model_setup=dict(model_setup or {}))
    schedule = cfg.schedule()
    order = window_order(windows.shape[0], cfg.steps * cfg.grad_accum * cfg.batch_size, cfg.seed)
    torch.manual_seed(cfg.seed)
    _configure_layers(layers, cfg)
    if saved is None:
        start, metrics = 0, {}
        _start_offsets(offsets, cfg.beta_init)
    else:
        start, metrics = run.restore(saved)
        print(f"resuming from step {start} of {cfg.steps} (checkpoint in {checkpoint_dir})", file=sys.stderr)
    set_calibration_mode(model, layers, training=True)
    completed = start
    bar = tqdm(total=cfg.steps, initial=start, desc="dMX calibration", disable=not (progress and main))
    try:
        for step in range(start, cfg.steps):
            temperature = apply_schedule(model, schedule, step, cfg.steps)
            loss, ce, bits = train_step(model, layers, step_batches(windows, order, step, cfg), cfg, run)
            completed = step + 1
            metrics = {"loss": loss, "ce": ce, "bits": float(bits.detach()), "T": temperature}
            bar.set_postfix(loss=f"{loss:.3f}", ce=f"{ce:.3f}", bits=f"{metrics['bits']:.2f}", T=f"{temperature:.2f}")
            bar.update(1)
            if main and checkpoint_dir is not None and (completed % cfg.checkpoint_every == 0 or completed == cfg.steps):
                save_checkpoint(checkpoint_dir, run.state(completed, metrics))
            if on_step is not None:
                on_step(completed, metrics)
    except KeyboardInterrupt:
        if main and checkpoint_dir is not None and completed > start:
            save_checkpoint(checkpoint_dir, run.state(completed, metrics))
            bar.write(f"interrupted after step {completed}; checkpoint saved in {checkpoint_dir} (resume=True continues it)",
                      file=sys.stderr)
        raise
    finally:
        bar.close()
    set_calibration_mode(model, layers, training=False)
    for trainable in trainables:
        trainable.finish()  # e.g. fold a learned rotation into the weights before the formats are fixed
    record = dict(provenance or {})
    record.update({
        "method": "dmx",
        "seed": cfg.seed,
        "settings": dataclasses.asdict(cfg),
        "calibration_windows": {"count": int(windows.shape[0]), "seqlen": int(windows.shape[1]),
                                "sha256": run.windows_hash},
        "final_metrics": metrics,
        **run.model_setup,
        "versions": software_versions(),
    })
    if n_procs > 1:
        record["data_parallel_processes"] = n_procs
    return deploy_formats(layers, cfg.final_rounding, cfg.target_bits, weighting=cfg.weighting, provenance=record)
