"""What one sweep measures with: :class:`SweepConfig`, the methods, point labels, and the checks
run before any model is loaded. See :mod:`dmx.sweep` for the sweep as a whole."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from dmx.calibrate import CalibrationConfig
from dmx.data import CALIBRATION_SEQLEN, CALIBRATION_WINDOWS, check_calibration_source, check_data_source
from dmx.family import DEFAULT_FAMILY, get_family
from dmx.models import check_seqlens
from dmx.pipeline import ModelSpec
from dmx.rotation import CALIBRATION_ROTATION, DEFAULT_ONLINE_SIZE, RotationSpec, check_learned_lm_head
from dmx.tasks import check_zeroshot_data
from mx_spec import get_format
from mx_spec.formats import DEFAULT_BLOCK_SIZE, FLOAT_FORMATS

__all__ = ["UNIFORM_FORMATS", "METHODS", "SEEDED_METHODS", "RECORDED_DEFAULTS", "SweepConfig", "point_label",
           "validate_config"]

UNIFORM_FORMATS = FLOAT_FORMATS  # every MX float format, from the one format table
METHODS = ("fp", "uniform", "kl", "dmx", "random")
#: Methods whose points depend on a seed (repeated ``SweepConfig.seeds`` times): the KL
#: heuristic's calibration draw, dMX's calibration windows and order, the random control's draw.
SEEDED_METHODS = ("kl", "dmx", "random")


def point_label(method: str, *, target: float | None = None, fmt: str | None = None, seed_index: int = 0) -> str:
    """Stable identifier of a sweep point: ``fp``, ``uniform:<format>``, ``kl@<target>``,
    ``dmx@<target>``, ``random@<target>`` (target printed with ``%g``), with ``:s<i>`` for the
    i-th extra seed of a seeded method. Used as the skip-on-rerun key."""
    if method == "fp":
        return "fp"
    if method == "uniform":
        if not fmt:
            raise ValueError("a uniform point needs its MX format name")
        return f"uniform:{fmt}"
    if method in ("kl", "dmx", "random"):
        if target is None:
            raise ValueError(f"a {method} point needs its target bits")
        return f"{method}@{target:g}" + (f":s{seed_index}" if seed_index else "")
    raise ValueError(f"unknown method {method!r}; valid choices: {', '.join(METHODS)}")


@dataclass
class SweepConfig:
    """Everything one sweep measures with.

    ``identity()`` (model, dtype, block size, lm_head flag, evaluation data and settings) must
    match to resume into an existing ``out_dir``. Each point also records the settings of its
    own method (``method_settings``): a finished point is skipped on rerun when they are
    unchanged and recomputed when they changed (e.g. more dMX ``steps`` reruns only the dMX
    points). Targets, methods and uniform formats may grow between runs. Zero-shot accuracy is
    recorded per point with its ``accuracy_settings`` (tasks, limit): rerunning a finished sweep
    with ``tasks`` adds accuracy to its points without recomputing perplexity, KL scores or
    calibrations."""

    model: str = "smollm2-135m"
    out_dir: str = "runs/sweep"
    targets: tuple[float, ...] = (5.0, 6.0)
    methods: tuple[str, ...] = METHODS
    uniform: tuple[str, ...] = UNIFORM_FORMATS
    family: str = DEFAULT_FAMILY
    block_size: int = DEFAULT_BLOCK_SIZE
    include_lm_head: bool = False
    dtype: str = "float32"
    device: str = "cpu"
    device_map: str | None = None
    data_dir: str | None = None
    online: bool = False
    text_file: str | None = None
    calib_text_file: str | None = None
    calib_source: str = "wikitext2"
    seqlen: int = 2048
    max_windows: int | None = None
    first_window: int = 0  # test windows skipped before scoring (held-out windows: 32 for 32-63)
    calib_windows: int = CALIBRATION_WINDOWS
    calib_seqlen: int = CALIBRATION_SEQLEN
    seed: int = 0
    seeds: int = 1
    kl_windows: int = 8
    kl_seqlen: int = 512
    kl_cache_dir: str | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    tasks: tuple[str, ...] = ()
    limit: int | None = None
    zeroshot_batch_size: int = 8
    progress: bool = True
    rotation: str = CALIBRATION_ROTATION.kind  # the fixed Hadamard, as dmx calibrate; "none" for plain MX
    rotation_seed: int = 0
    rotation_placement: str = "online"
    rotation_block: int | None = DEFAULT_ONLINE_SIZE  # the online Hadamard size (flag --rotation-block)

    def identity(self) -> dict[str, Any]:
        """Settings every point depends on (what a resumed sweep must share).

        The rotation settings are part of it when a rotation is used (an unrotated sweep keeps
        the identity it had before rotations existed, so its result directories still resume)."""
        keys = ("model", "dtype", "block_size", "include_lm_head", "online", "text_file", "seqlen", "max_windows")
        d = asdict(self)
        identity = {k: d[k] for k in keys}
        if self.first_window:  # recorded only when set, so sweeps made before it keep resuming
            identity["first_window"] = self.first_window
        if self.rotation != "none":
            identity["rotation"] = self.rotation_spec.settings()
        return identity

    @property
    def rotation_spec(self) -> RotationSpec:
        """The rotation the ``rotation*`` settings ask for (``ValueError`` naming the valid choices)."""
        return RotationSpec(self.rotation, self.rotation_seed, placement=self.rotation_placement,
                            online_size=self.rotation_block, source="the sweep's rotation settings")

    def model_spec(self, *, learning: bool = False) -> ModelSpec:
        """The :class:`dmx.pipeline.ModelSpec` the sweep loads (threads: set by the caller).

        ``learning``: the spec of a dMX point of a ``learned`` sweep (a trainable learned
        rotation); without it a ``learned`` sweep uses the learned kind's fixed start, the
        folded randomized Hadamard of the same seed (fp, uniform and KL points)."""
        rotation = self.rotation_spec if learning else self.rotation_spec.fixed_start()
        return ModelSpec(model=self.model, dtype=self.dtype, device=self.device, device_map=self.device_map,
                         family=self.family, block_size=self.block_size, include_lm_head=self.include_lm_head,
                         rotation=rotation)

    def calibration_config(self, target: float, seed: int | None = None) -> CalibrationConfig:
        """The :class:`dmx.calibrate.CalibrationConfig` of the dMX point at ``target`` with ``seed``
        (default ``self.seed``): CalibrationConfig's defaults, overridden by ``calibration``."""
        return CalibrationConfig(**{"family": self.family, **self.calibration,
                                    "seed": self.seed if seed is None else seed, "target_bits": target})

    def seed_values(self) -> list[int]:
        """The seeds of the seeded methods: ``seed, seed+1, ..., seed+seeds-1``."""
        return [self.seed + i for i in range(self.seeds)]

    def method_settings(self, method: str, seed: int | None = None) -> dict[str, Any]:
        """Settings a point of ``method`` (with ``seed``, default ``self.seed``) depends on beyond ``identity()``."""
        seed = self.seed if seed is None else seed
        weighting = self.calibration.get("weighting", "mean")
        # recorded only when not WikiText-2, so points computed before the option stay finished
        source = {} if self.calib_source == "wikitext2" else {"calib_source": self.calib_source}
        if method == "kl":
            return {"family": self.family, "kl_windows": self.kl_windows, "kl_seqlen": self.kl_seqlen,
                    "seed": seed, "calib_text_file": self.calib_text_file, "weighting": weighting, **source}
        if method == "dmx":
            return {"family": self.family, "calib_windows": self.calib_windows, "calib_seqlen": self.calib_seqlen,
                    "seed": seed, "calib_text_file": self.calib_text_file, **source,
                    # the MX backend changes no bits: points and checkpoints are shared across backends
                    "calibration": dict(sorted((k, v) for k, v in {**_recorded_defaults(), **self.calibration}.items()
                                               if k != "backend"))}
        if method == "random":
            return {"family": self.family, "seed": seed, "weighting": weighting}
        return {}


#: Calibration settings a dMX point records even when left at their defaults, because those
#: defaults changed: the recipe fields when they moved to the authors' recipe (docs/FIDELITY.md),
#: steps/batch size/checkpoint interval when CalibrationConfig took the CLI's 40/2/5 (issue #14,
#: from 60/1/10). A point calibrated before (which lacks them) is recomputed, never mistaken for
#: the new defaults; the committed sweeps passed --steps/--batch-size/--checkpoint-every, so they resume.
RECORDED_DEFAULTS = ("beta_init", "clip_grad_norm", "fractional_scale", "steps", "batch_size", "checkpoint_every")


def _recorded_defaults() -> dict[str, Any]:
    """:data:`RECORDED_DEFAULTS` with CalibrationConfig's values."""
    d = CalibrationConfig()
    return {name: getattr(d, name) for name in RECORDED_DEFAULTS}


def accuracy_settings(cfg: SweepConfig) -> dict[str, Any]:
    """What a point's zero-shot accuracy was measured with (JSON-normalised, as stored)."""
    return {"tasks": list(cfg.tasks), "limit": cfg.limit, "online": cfg.online}


def validate_config(cfg: SweepConfig) -> None:
    """Every setting checked before the model is loaded (ValueError naming the valid choices)."""
    rotation = cfg.rotation_spec  # ValueError naming the valid kinds and placements
    check_learned_lm_head(learning=rotation.kind == "learned" and "dmx" in cfg.methods,
                          lm_head_quantised=cfg.include_lm_head)
    if "rotation_lr" in cfg.calibration and cfg.rotation != "learned":
        raise ValueError("calibration setting rotation_lr only applies to rotation='learned'")
    bad = [m for m in cfg.methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; valid choices: {', '.join(METHODS)}")
    check_calibration_source(cfg.calib_source, online=cfg.online, text_file=cfg.calib_text_file)
    if not (isinstance(cfg.seeds, int) and cfg.seeds >= 1):
        raise ValueError(f"seeds must be a whole number >= 1 (KL draws, dMX seeds and random draws per target), "
                         f"got {cfg.seeds!r}")
    if not (isinstance(cfg.first_window, int) and cfg.first_window >= 0):
        raise ValueError(f"first_window must be a whole number >= 0 (test windows skipped before scoring), "
                         f"got {cfg.first_window!r}")
    for f in cfg.uniform:
        get_format(f)  # ValueError listing the valid MX format names
    fam = get_family(cfg.family)
    if {"kl", "dmx", "random"} & set(cfg.methods):
        if not cfg.targets:
            raise ValueError("the kl, dmx and random methods need at least one target (targets=(5, 6))")
        for t in cfg.targets:
            fam.validate_target(t)
    if "dmx" in cfg.methods:
        fields = {f.name for f in dataclasses.fields(CalibrationConfig)}
        unknown = sorted(set(cfg.calibration) - fields)
        if unknown:
            raise ValueError(f"unknown calibration setting(s) {unknown}; valid: {sorted(fields)}")
        for t in cfg.targets:
            cfg.calibration_config(t).validate()
    _check_inputs(cfg)


def _check_inputs(cfg: SweepConfig) -> None:
    """The data and window lengths the points will need, checked before the model is loaded."""
    check_data_source(cfg.data_dir, split="test", online=cfg.online, text_file=cfg.text_file)
    if {"kl", "dmx"} & set(cfg.methods):
        check_data_source(cfg.data_dir, split="calibration", online=cfg.online, text_file=cfg.calib_text_file)
    check_seqlens(cfg.model, {"seqlen": cfg.seqlen, "kl_seqlen": cfg.kl_seqlen if "kl" in cfg.methods else None,
                              "calib_seqlen": cfg.calib_seqlen if "dmx" in cfg.methods else None})
    if cfg.tasks:
        check_zeroshot_data(list(cfg.tasks), cfg.data_dir, online=cfg.online)
