"""What one sweep measures with: :class:`SweepConfig` (frozen, composed of the project's typed
specs: :class:`dmx.llm.pipeline.ModelSpec` with its :class:`dmx.llm.rotation.RotationSpec`,
:class:`dmx.calibrate.CalibrationConfig`, and :class:`CalibrationData`, :class:`EvaluationSpec`,
:class:`SweepPlan`), the methods, point labels, and the checks run before any model is loaded.
See :mod:`dmx.llm.sweep` for the sweep as a whole."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmx.calibrate import CalibrationConfig
from dmx.llm.data import CALIBRATION_SEQLEN, CALIBRATION_WINDOWS, check_calibration_source, check_data_source
from dmx.family import get_family
from dmx.llm.models import check_seqlens
from dmx.llm.pipeline import ModelSpec
from dmx.llm.rotation import CALIBRATION_ROTATION, check_learned_lm_head
from dmx.llm.tasks import check_zeroshot_data
from mx_spec import get_format
from mx_spec.formats import FLOAT_FORMATS

__all__ = ["UNIFORM_FORMATS", "METHODS", "DEFAULT_METHODS", "KL_METHODS", "SEEDED_METHODS", "OWN_ROTATION_METHODS",
           "RECORDED_DEFAULTS", "RECORDED_CALIBRATION",
           "SweepPlan", "CalibrationData", "EvaluationSpec", "SweepConfig", "point_label", "validate_config",
           "accuracy_settings", "dmx_trajectory"]

UNIFORM_FORMATS = FLOAT_FORMATS  # every MX float format, from the one format table
#: What a sweep runs unless told: every method but ``kl_learned_rotation``, which only a learned
#: rotation has (the KL heuristic on the rotation each dMX seed learned; ``kl`` scores on the
#: learned kind's fixed start, so ``kl`` against ``dmx`` there compares pipelines, not rankings).
DEFAULT_METHODS = ("fp", "uniform", "kl", "dmx", "random")
METHODS = DEFAULT_METHODS + ("kl_learned_rotation",)
#: Methods that score layers by the KL heuristic, so they read the KL calibration windows.
KL_METHODS = ("kl", "kl_learned_rotation")
#: Methods whose points depend on a seed (repeated ``SweepConfig.seeds`` times): the KL
#: heuristic's calibration draw, dMX's calibration windows and order, the random control's draw;
#: ``kl_learned_rotation``'s i-th point scores KL draw i on the rotation dMX seed i learned.
SEEDED_METHODS = ("kl", "dmx", "random", "kl_learned_rotation")
#: Under a learned rotation, the methods whose every point has its own rotation (the one its dMX seed
#: learned, saved beside its assignment); the other points share the learned kind's fixed start.
OWN_ROTATION_METHODS = ("dmx", "kl_learned_rotation")


def point_label(method: str, *, target: float | None = None, fmt: str | None = None, seed_index: int = 0) -> str:
    """Stable identifier of a sweep point: ``fp``, ``uniform:<format>``, ``kl@<target>``,
    ``dmx@<target>``, ``random@<target>``, ``kl_learned_rotation@<target>`` (target printed with
    ``%g``), with ``:s<i>`` for the i-th extra seed of a seeded method. Used as the skip-on-rerun key."""
    if method == "fp":
        return "fp"
    if method == "uniform":
        if not fmt:
            raise ValueError("a uniform point needs its MX format name")
        return f"uniform:{fmt}"
    if method in SEEDED_METHODS:
        if target is None:
            raise ValueError(f"a {method} point needs its target bits")
        return f"{method}@{target:g}" + (f":s{seed_index}" if seed_index else "")
    raise ValueError(f"unknown method {method!r}; valid choices: {', '.join(METHODS)}")


@dataclass(frozen=True)
class SweepPlan:
    """Which points a sweep measures: the ``methods`` in order, the ``uniform`` MX formats, the
    ``targets`` (average element bits) of the KL, dMX and random points, and their seeds:
    ``seeds`` of them per target, ``seed, seed+1, ...`` (:data:`SEEDED_METHODS`). Targets,
    methods and uniform formats may grow between runs of one sweep."""

    targets: tuple[float, ...] = (5.0, 6.0)
    methods: tuple[str, ...] = DEFAULT_METHODS
    uniform: tuple[str, ...] = UNIFORM_FORMATS
    seed: int = 0
    seeds: int = 1

    def __post_init__(self) -> None:
        for name in ("targets", "methods", "uniform"):  # a list given by a caller, frozen as a tuple
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def seed_values(self) -> list[int]:
        """The seeds of the seeded methods: ``seed, seed+1, ..., seed+seeds-1``."""
        return [self.seed + i for i in range(self.seeds)]


@dataclass(frozen=True)
class CalibrationData:
    """The calibration text of the KL heuristic and of dMX: ``text_file`` (UTF-8 text or
    FineWeb-style documents) else ``source`` (``wikitext2`` validation or ``fineweb``); dMX
    draws ``windows`` seeded windows of ``seqlen`` tokens, the KL heuristic ``kl_windows`` of
    ``kl_seqlen`` per draw."""

    text_file: str | None = None
    source: str = "wikitext2"
    windows: int = CALIBRATION_WINDOWS
    seqlen: int = CALIBRATION_SEQLEN
    kl_windows: int = 8
    kl_seqlen: int = 512


@dataclass(frozen=True)
class EvaluationSpec:
    """What every point is scored on: perplexity on the test split (or ``text_file``) in windows
    of ``seqlen`` tokens, ``first_window`` skipped (held-out windows: 32 for 32-63), at most
    ``max_windows`` scored; zero-shot accuracy on ``tasks`` (``limit`` documents per task)."""

    text_file: str | None = None
    seqlen: int = 2048
    max_windows: int | None = None
    first_window: int = 0
    tasks: tuple[str, ...] = ()
    limit: int | None = None
    zeroshot_batch_size: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))


def _sweep_model() -> ModelSpec:
    """A new sweep's model: the default model under the default rotation of a new calibration."""
    return ModelSpec(rotation=CALIBRATION_ROTATION)


@dataclass(frozen=True)
class SweepConfig:
    """Everything one sweep measures with, one typed spec per part.

    ``model``: the model, how it is loaded, rotated (``model.rotation``) and quantised (the
    default is the fixed Hadamard of a new calibration, :data:`dmx.llm.rotation.CALIBRATION_ROTATION`,
    as ``dmx sweep`` without flags; a ``ModelSpec`` passed in keeps its own rotation, none unless given);
    ``calibration``: the dMX recipe of every dMX point (its ``target_bits`` and ``seed`` are the
    point's, from ``plan``; its ``family`` must be the model's); ``calibration_data``: the
    calibration text of KL and dMX; ``evaluation``: what each point is scored on; ``plan``:
    which points. ``data_dir``/``online``: where every text is read from. ``out_dir``: the result
    folder, ``kl_cache_dir`` the KL score cache (default ``<out_dir>/kl_cache``).

    ``identity()`` (model, dtype, block size, lm_head flag, evaluation data and settings) must
    match to resume into an existing ``out_dir``. Each point also records the settings of its
    own method (``method_settings``): a finished point is skipped on rerun when they are
    unchanged and recomputed when they changed (e.g. more dMX ``steps`` reruns only the dMX
    points). Zero-shot accuracy is recorded per point with its ``accuracy_settings`` (tasks,
    limit): rerunning a finished sweep with ``tasks`` adds accuracy to its points without
    recomputing perplexity, KL scores or calibrations."""

    model: ModelSpec = field(default_factory=_sweep_model)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    calibration_data: CalibrationData = field(default_factory=CalibrationData)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    plan: SweepPlan = field(default_factory=SweepPlan)
    data_dir: str | None = None
    online: bool = False
    out_dir: str = "runs/sweep"
    kl_cache_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.calibration.family != self.model.family:
            raise ValueError(f"the calibration's family {self.calibration.family!r} differs from the model's "
                             f"{self.model.family!r}; pass the same family to both")

    def identity(self) -> dict[str, Any]:
        """Settings every point depends on (what a resumed sweep must share).

        The rotation settings are part of it when a rotation is used (an unrotated sweep keeps
        the identity it had before rotations existed, so its result directories still resume)."""
        model, evaluation = self.model, self.evaluation
        identity: dict[str, Any] = {
            "model": model.model, "dtype": model.dtype, "block_size": model.block_size,
            "include_lm_head": model.include_lm_head, "online": self.online, "text_file": evaluation.text_file,
            "seqlen": evaluation.seqlen, "max_windows": evaluation.max_windows}
        if evaluation.first_window:  # recorded only when set, so sweeps made before it keep resuming
            identity["first_window"] = evaluation.first_window
        if model.rotation.rotates:
            identity["rotation"] = model.rotation.settings()
        return identity

    def figure_title(self) -> str:
        """The title of the sweep's figures: ``<model>: <test text>, windows <first>-<last> of <seqlen>
        tokens``; it names the scored windows, so a figure of held-out windows (32-63) says so."""
        evaluation = self.evaluation
        first, count = evaluation.first_window, evaluation.max_windows
        if count is None:
            windows = f"windows {first} onward" if first else "all windows"
        else:
            windows = f"window {first}" if count == 1 else f"windows {first}-{first + count - 1}"
        data = Path(evaluation.text_file).name if evaluation.text_file else "WikiText-2 test"
        return f"{self.model.model}: {data}, {windows} of {evaluation.seqlen} tokens"

    def model_spec(self, *, learning: bool = False) -> ModelSpec:
        """The :class:`dmx.llm.pipeline.ModelSpec` the sweep loads.

        ``learning``: the spec of a dMX point of a learned-rotation sweep (``model`` itself: a
        trainable learned rotation); without it such a sweep uses the learned kind's fixed start,
        the folded randomized Hadamard of the same seed (fp, uniform and KL points)."""
        if learning:
            return self.model
        return dataclasses.replace(self.model, rotation=self.model.rotation.fixed_start())

    def calibration_config(self, target: float, seed: int | None = None) -> CalibrationConfig:
        """The :class:`dmx.calibrate.CalibrationConfig` of the dMX point at ``target`` with ``seed``
        (default ``plan.seed``): ``calibration`` with the point's target and seed."""
        return dataclasses.replace(self.calibration, target_bits=target, seed=self.plan.seed if seed is None else seed)

    def method_settings(self, method: str, seed: int | None = None) -> dict[str, Any]:
        """Settings a point of ``method`` (with ``seed``, default ``plan.seed``) depends on beyond ``identity()``."""
        seed = self.plan.seed if seed is None else seed
        family, data, weighting = self.model.family, self.calibration_data, self.calibration.weighting
        # recorded only when not WikiText-2, so points computed before the option stay finished
        source = {} if data.source == "wikitext2" else {"calib_source": data.source}
        if method == "kl":
            return {"family": family, "kl_windows": data.kl_windows, "kl_seqlen": data.kl_seqlen,
                    "seed": seed, "calib_text_file": data.text_file, "weighting": weighting, **source}
        if method == "kl_learned_rotation":
            # the rotation is the one dMX's point of the same seed learned: its calibration is part of it
            return {**self.method_settings("kl", seed), "rotation_from": dmx_trajectory(self.method_settings("dmx", seed))}
        if method == "dmx":
            return {"family": family, "calib_windows": data.windows, "calib_seqlen": data.seqlen,
                    "seed": seed, "calib_text_file": data.text_file, **source,
                    "calibration": self.recorded_calibration()}
        if method == "random":
            return {"family": family, "seed": seed, "weighting": weighting}
        return {}

    def recorded_calibration(self) -> dict[str, Any]:
        """The recipe a dMX point records (its ``settings["calibration"]``, sorted by name):
        :data:`RECORDED_CALIBRATION` always, any other setting that differs from CalibrationConfig's
        default (so a setting added later, left at its default, keeps old points finished), and
        ``rotation_lr`` when the rotation is learned. Never ``backend`` (it changes no bits: points
        and checkpoints are shared across backends), nor what the point's settings hold already
        (family, target, seed)."""
        defaults = CalibrationConfig()
        recorded = {}
        for f in dataclasses.fields(CalibrationConfig):
            if f.name in _NOT_RECORDED:
                continue
            value = getattr(self.calibration, f.name)
            if f.name == "rotation_lr":
                if self.model.rotation.learns:
                    recorded[f.name] = value
            elif f.name in RECORDED_CALIBRATION or value != getattr(defaults, f.name):
                recorded[f.name] = value
        return dict(sorted(recorded.items()))


#: Calibration settings a dMX point records even when left at their defaults, because those
#: defaults changed: the recipe fields when they moved to the authors' recipe (docs/FIDELITY.md),
#: steps/batch size/checkpoint interval when CalibrationConfig took the CLI's 40/2/5 (issue #14,
#: from 60/1/10). A point calibrated before (which lacks them) is recomputed, never mistaken for
#: the new defaults; the committed sweeps passed --steps/--batch-size/--checkpoint-every, so they resume.
RECORDED_DEFAULTS = ("beta_init", "clip_grad_norm", "fractional_scale", "steps", "batch_size", "checkpoint_every")
#: Every calibration setting a dMX point records whatever its value: :data:`RECORDED_DEFAULTS`, the
#: weighting (the dmx sweep command always passed it) and the final rounding (every committed sweep
#: with current dMX points passed --final-rounding; the two deployments of one calibration differ).
RECORDED_CALIBRATION = RECORDED_DEFAULTS + ("weighting", "final_rounding")
#: CalibrationConfig fields a dMX point never records in its ``calibration``.
_NOT_RECORDED = ("family", "target_bits", "seed", "backend")


def dmx_trajectory(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A dMX point's ``settings`` without its final rounding: what its calibration (offsets and a
    learned rotation) depends on. The two deployments of one calibration share it."""
    trajectory = dict(settings)
    trajectory["calibration"] = {k: v for k, v in trajectory["calibration"].items() if k != "final_rounding"}
    return trajectory


def accuracy_settings(cfg: SweepConfig) -> dict[str, Any]:
    """What a point's zero-shot accuracy was measured with (JSON-normalised, as stored)."""
    return {"tasks": list(cfg.evaluation.tasks), "limit": cfg.evaluation.limit, "online": cfg.online}


def validate_config(cfg: SweepConfig) -> None:
    """Every setting checked before the model is loaded (ValueError naming the valid choices)."""
    plan, model, calibration = cfg.plan, cfg.model, cfg.calibration
    check_learned_lm_head(learning=model.rotation.learns and "dmx" in plan.methods,
                          lm_head_quantised=model.include_lm_head)
    if not model.rotation.learns and calibration.rotation_lr != CalibrationConfig.rotation_lr:
        raise ValueError("calibration setting rotation_lr only applies to rotation='learned'")
    bad = [m for m in plan.methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; valid choices: {', '.join(METHODS)}")
    if "kl_learned_rotation" in plan.methods and not model.rotation.learns:
        raise ValueError("method kl_learned_rotation scores KL on the rotation each dMX seed learned, so it needs "
                         f"rotation='learned' (this sweep's is {model.rotation.kind!r}, which kl already shares "
                         "with dMX); drop kl_learned_rotation or set rotation='learned'")
    check_calibration_source(cfg.calibration_data.source, online=cfg.online, text_file=cfg.calibration_data.text_file)
    if not (isinstance(plan.seeds, int) and plan.seeds >= 1):
        raise ValueError(f"seeds must be a whole number >= 1 (KL draws, dMX seeds and random draws per target), "
                         f"got {plan.seeds!r}")
    first = cfg.evaluation.first_window
    if not (isinstance(first, int) and first >= 0):
        raise ValueError(f"first_window must be a whole number >= 0 (test windows skipped before scoring), "
                         f"got {first!r}")
    for f in plan.uniform:
        get_format(f)  # ValueError listing the valid MX format names
    fam = get_family(model.family)
    if set(SEEDED_METHODS) & set(plan.methods):
        if not plan.targets:
            raise ValueError("the kl, dmx and random methods need at least one target (targets=(5, 6))")
        for t in plan.targets:
            fam.validate_target(t)
    if "dmx" in plan.methods:
        for t in plan.targets:
            cfg.calibration_config(t).validate()
    _check_inputs(cfg)


def _check_inputs(cfg: SweepConfig) -> None:
    """The data and window lengths the points will need, checked before the model is loaded."""
    methods, data, evaluation = cfg.plan.methods, cfg.calibration_data, cfg.evaluation
    check_data_source(cfg.data_dir, split="test", online=cfg.online, text_file=evaluation.text_file)
    kl_methods = set(KL_METHODS) & set(methods)
    if kl_methods or "dmx" in methods:
        check_data_source(cfg.data_dir, split="calibration", online=cfg.online, text_file=data.text_file)
    check_seqlens(cfg.model.model, {"seqlen": evaluation.seqlen,
                                    "kl_seqlen": data.kl_seqlen if kl_methods else None,
                                    "calib_seqlen": data.seqlen if "dmx" in methods else None})
    if evaluation.tasks:
        check_zeroshot_data(list(evaluation.tasks), cfg.data_dir, online=cfg.online)
