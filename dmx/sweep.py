"""One sweep over methods and bit budgets: full precision, uniform MX, KL heuristic and dMX.

``run_sweep(SweepConfig(...))`` evaluates, on one model:

- ``fp``: the unquantised model;
- ``uniform``: every quantised layer at one standard MX format (``SweepConfig.uniform``);
- ``kl``: the KL layer-selection heuristic (``dmx.kl_baseline``) at every target;
- ``dmx``: the differentiable assignment (``dmx.calibrate``) at every target;
- ``random``: the control, seeded random assignments filling each target exactly
  (``dmx.random_baseline``);

``seeds`` > 1 repeats the seeded methods (``dmx``: calibration windows and their order;
``random``: the draw) for seeds ``seed, seed+1, ...``; the first seed keeps the plain label
(``dmx@5``), the i-th extra one gets ``:s<i>`` (``dmx@5:s1`` is seed ``seed+1``). ``summarize_points`` reduces the seeds of
one (method, target) to mean, standard deviation, min and max (``summary.csv``; the Pareto plot
draws the mean with the min-max range).

and measures WikiText-2 perplexity (``dmx.perplexity``, GPTQ protocol; ``max_windows`` limits it
to the first windows) and, when ``tasks`` is given, zero-shot accuracy (``dmx.zeroshot``).

Outputs in ``out_dir`` (all written atomically after every finished point, so an interrupted
sweep, Ctrl-C or SIGTERM, keeps what it has and a rerun skips finished points; ``results.json``
keeps its version before the last point as ``results.json.prev``, used when it is corrupt):

- ``results.json``: ``{"schema": "dmx.sweep/1", "config": {...}, "points": [point, ...]}``;
  a point is ``{"key", "method", "label", "target", "format", "avg_bits", "storage_bits",
  "perplexity", "accuracy": {task: acc}, "avg_accuracy", "seconds", "formats": {layer: fmt}}``;
- ``results.csv``: the same points, one row each, without the per-layer formats;
- ``summary.csv``: one row per (method, target or format) over its seeds (``summarize_points``);
- ``assignments/<label>.json``: the ``dmx.assignment.Assignment`` of every KL / dMX point;
- ``pareto.png`` and ``assignment_heatmap.png`` (``dmx.plots``);
- ``kl_cache/``: the KL per-layer score cache; ``checkpoints/<label>-<settings hash>/``: dMX calibration
  checkpoints (a rerun resumes an interrupted calibration).

Rotations (``SweepConfig.rotation``, :mod:`dmx.rotation`): the model is rotated right after
loading, so full precision, uniform, KL and dMX are all measured on the same rotated model and
compare fairly. ``hadamard`` uses ``rotation_seed`` / ``rotation_placement`` / ``rotation_block``.
``learned``: the fp, uniform and KL points use the fixed starting point of the learned kind (the
folded randomized Hadamard, QuaRot layout, same seed), and each dMX point learns its own rotation
jointly with its offsets on a freshly loaded copy of the model (Cayley SGD, lr
``calibration["rotation_lr"]``, default 1.5), baked before evaluation and saved as
``assignments/<label>.rotation.safetensors``. Every assignment records its rotation.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import sys
import time

import numpy as np
import torch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dmx.files import atomic_write_text, exists_or_previous, read_json_or_previous
from dmx.data import check_data_source
from dmx.models import check_seqlens
from dmx.rotation import DEFAULT_ONLINE_BLOCK, check_learned_lm_head

RESULTS_SCHEMA = "dmx.sweep/1"
UNIFORM_FORMATS = ("mxfp4_e2m1", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp8_e4m3", "mxfp8_e5m2")
METHODS = ("fp", "uniform", "kl", "dmx", "random")
#: Methods whose points depend on a seed (repeated ``SweepConfig.seeds`` times).
SEEDED_METHODS = ("dmx", "random")
CSV_COLUMNS = (
    "method",
    "label",
    "target",
    "seed",
    "format",
    "avg_bits",
    "storage_bits",
    "perplexity",
    "avg_accuracy",
    "seconds",
)


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


# ----------------------------------------------------------------------------- result store


def points_to_csv(points: Sequence[Mapping[str, Any]]) -> str:
    """CSV text of sweep points: ``CSV_COLUMNS`` then ``acc_<task>`` columns (sorted)."""
    tasks = sorted({t for p in points for t in (p.get("accuracy") or {})})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*CSV_COLUMNS, *(f"acc_{t}" for t in tasks)])
    for p in points:
        acc = p.get("accuracy") or {}
        w.writerow(
            [_csv_cell(p.get(c)) for c in CSV_COLUMNS] + [_csv_cell(acc.get(t)) for t in tasks]
        )
    return buf.getvalue()


SUMMARY_COLUMNS = ("method", "target", "format", "n", "seeds", "avg_bits", "perplexity_mean", "perplexity_std",
                   "perplexity_min", "perplexity_max")


def summarize_points(points: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, target, format): the points' seeds reduced to mean/std/min/max of perplexity.

    ``std`` is the sample standard deviation (``n - 1``; 0 for one point); ``avg_bits`` is the
    mean of the points' bits. Rows keep the order in which their first point appears.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for p in points:
        if p.get("perplexity") is None:
            continue
        groups.setdefault((p["method"], p.get("target"), p.get("format")), []).append(p)
    rows = []
    for (method, target, fmt), pts in groups.items():
        ppl = np.array([float(p["perplexity"]) for p in pts])
        bits = [p["avg_bits"] for p in pts if p.get("avg_bits") is not None]
        rows.append({
            "method": method, "target": target, "format": fmt, "n": len(pts),
            "seeds": [p.get("seed") for p in pts],
            "avg_bits": float(np.mean(bits)) if bits else None,
            "perplexity_mean": float(ppl.mean()),
            "perplexity_std": float(ppl.std(ddof=1)) if len(pts) > 1 else 0.0,
            "perplexity_min": float(ppl.min()), "perplexity_max": float(ppl.max()),
        })
    return rows


def summary_to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV text of :func:`summarize_points` rows (seeds joined by spaces)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SUMMARY_COLUMNS)
    for r in rows:
        w.writerow([" ".join(str(s) for s in r["seeds"]) if c == "seeds" else _csv_cell(r[c]) for c in SUMMARY_COLUMNS])
    return buf.getvalue()


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


@dataclass
class ResultStore:
    """The sweep's ``results.json`` / ``results.csv`` pair in ``out_dir``.

    ``config`` identifies what the points were measured on (model, data, evaluation settings);
    reopening a directory whose stored config differs raises ValueError, so points measured
    under other settings are never mixed into one table."""

    out_dir: Path
    config: dict[str, Any]
    points: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def open(cls, out_dir: str | os.PathLike, config: Mapping[str, Any]) -> "ResultStore":
        out = Path(out_dir)
        config = json.loads(json.dumps(dict(config), sort_keys=True))
        path = out / "results.json"
        if not exists_or_previous(path):
            return cls(out_dir=out, config=config)
        # a corrupt results.json falls back to the version before the last point (results.json.prev)
        doc = read_json_or_previous(path, what="sweep result file", fix="move it away to start the sweep afresh")
        if doc.get("schema") != RESULTS_SCHEMA:
            raise ValueError(f"{path} is not a dmx sweep result (schema {doc.get('schema')!r})")
        # Before accuracy became per point, the zero-shot tasks/limit were part of the identity.
        stored = {k: v for k, v in doc.get("config", {}).items() if k not in ("tasks", "limit")}
        if stored != config:
            diff = sorted(k for k in set(config) | set(stored) if config.get(k) != stored.get(k))
            raise ValueError(
                f"{path} was measured with other settings (differs in: {', '.join(diff)}); "
                "use another --out directory or the same settings to resume"
            )
        return cls(out_dir=out, config=config, points=list(doc.get("points", [])))

    def get(self, key: str) -> dict[str, Any] | None:
        return next((p for p in self.points if p["key"] == key), None)

    def add(self, point: Mapping[str, Any]) -> None:
        """Add the point (a point with the same ``point["key"]`` is replaced in place, so the
        table keeps its order) and rewrite both files atomically."""
        keys = [p["key"] for p in self.points]
        if point["key"] in keys:
            self.points[keys.index(point["key"])] = dict(point)
        else:
            self.points.append(dict(point))
        self.save()

    def save(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        doc = {"schema": RESULTS_SCHEMA, "config": self.config, "points": self.points}
        atomic_write_text(self.out_dir / "results.json", json.dumps(doc, indent=1, allow_nan=True), keep_previous=True)
        atomic_write_text(self.out_dir / "results.csv", points_to_csv(self.points))
        atomic_write_text(self.out_dir / "summary.csv", summary_to_csv(summarize_points(self.points)))


# ----------------------------------------------------------------------------- the sweep


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
    family: str = "fp8_fp4"
    block_size: int = 32
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
    calib_windows: int = 32
    calib_seqlen: int = 512
    seed: int = 0
    seeds: int = 1
    kl_windows: int = 4
    kl_seqlen: int = 512
    kl_cache_dir: str | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    tasks: tuple[str, ...] = ()
    limit: int | None = None
    zeroshot_batch_size: int = 8
    progress: bool = True
    rotation: str = "none"
    rotation_seed: int = 0
    rotation_placement: str = "online"
    rotation_block: int | None = DEFAULT_ONLINE_BLOCK

    def identity(self) -> dict[str, Any]:
        """Settings every point depends on (what a resumed sweep must share).

        The rotation settings are part of it when a rotation is used (an unrotated sweep keeps
        the identity it had before rotations existed, so its result directories still resume)."""
        keys = ("model", "dtype", "block_size", "include_lm_head", "online", "text_file", "seqlen", "max_windows")
        d = asdict(self)
        identity = {k: d[k] for k in keys}
        if self.rotation != "none":
            identity["rotation"] = self.rotation_description()
        return identity

    def rotation_description(self) -> dict[str, Any]:
        """The rotation as the settings that build it (``kind``, ``seed``, and for ``hadamard`` placement/block)."""
        if self.rotation == "none":
            return {"kind": "none"}
        if self.rotation == "learned":
            return {"kind": "learned", "seed": self.rotation_seed}
        online = self.rotation_placement == "online"
        return {"kind": "hadamard", "seed": self.rotation_seed, "placement": self.rotation_placement,
                "block": self.rotation_block if online else None}

    def calibration_config(self, target: float, seed: int | None = None):
        """The :class:`dmx.calibrate.CalibrationConfig` of the dMX point at ``target`` with ``seed``
        (default ``self.seed``): CalibrationConfig's defaults, overridden by ``calibration``."""
        from dmx.calibrate import CalibrationConfig

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
                    "seed": self.seed, "calib_text_file": self.calib_text_file, "weighting": weighting, **source}
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
    from dmx.calibrate import CalibrationConfig

    d = CalibrationConfig()
    return {name: getattr(d, name) for name in RECORDED_DEFAULTS}


def _rotate(model, cfg: SweepConfig, *, learn: bool = False):
    """Rotate a freshly loaded model as ``cfg`` says; ``learn``: trainable (a dMX point of a learned sweep)."""
    from dmx.rotation import apply_rotation

    if cfg.rotation == "learned":
        if learn:
            return apply_rotation(model, "learned", seed=cfg.rotation_seed)
        # the learned kind's starting point, fixed: the same R1/R2/online Hadamards, folded
        return apply_rotation(model, "hadamard", seed=cfg.rotation_seed, placement="folded")
    return apply_rotation(model, cfg.rotation, seed=cfg.rotation_seed, placement=cfg.rotation_placement,
                          block=cfg.rotation_block)


def _accuracy_settings(cfg: SweepConfig) -> dict[str, Any]:
    """What a point's zero-shot accuracy was measured with (JSON-normalised, as stored)."""
    return {"tasks": list(cfg.tasks), "limit": cfg.limit, "online": cfg.online}


def _needs_accuracy(point: Mapping[str, Any] | None, cfg: SweepConfig) -> bool:
    """True when ``cfg`` asks for zero-shot tasks that ``point`` was not measured on."""
    return bool(cfg.tasks) and point is not None and point.get("accuracy_settings") != _accuracy_settings(cfg)


def _zeroshot_metrics(model, tokenizer, cfg: SweepConfig) -> dict[str, Any]:
    """Per-task zero-shot accuracy, their average and the settings, of the model as it stands."""
    from dmx.zeroshot import evaluate_zeroshot  # lazy: lm-eval is an optional extra

    res = evaluate_zeroshot(
        model, tokenizer, tasks=list(cfg.tasks), limit=cfg.limit, batch_size=cfg.zeroshot_batch_size,
        data_dir=cfg.data_dir, online=cfg.online,
    )
    return {"accuracy": {name: row["acc"] for name, row in res["tasks"].items()},
            "avg_accuracy": res["average"]["acc"], "accuracy_settings": _accuracy_settings(cfg)}


def _evaluate(model, tokenizer, test_ids, cfg: SweepConfig) -> dict[str, Any]:
    """Perplexity (and zero-shot accuracy when ``cfg.tasks``) of the model as it stands."""
    from dmx.perplexity import perplexity

    out: dict[str, Any] = {
        "perplexity": perplexity(model, test_ids, seqlen=cfg.seqlen, max_windows=cfg.max_windows, progress=cfg.progress),
        "accuracy": {},
        "avg_accuracy": None,
    }
    if cfg.tasks:
        out.update(_zeroshot_metrics(model, tokenizer, cfg))
    return out


def _point(key: str, method: str, *, assignment, settings: Mapping[str, Any], target: float | None = None,
           fmt: str | None = None, seconds: float, metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "key": key,
        "method": method,
        "label": key,
        "target": target,
        "seed": settings.get("seed") if method in SEEDED_METHODS else None,
        "format": fmt,
        "avg_bits": None if assignment is None else assignment.element_bits,
        "storage_bits": None if assignment is None else assignment.storage_bits,
        **metrics,
        "seconds": round(seconds, 1),
        "formats": {} if assignment is None or method == "uniform" else dict(assignment.formats),
        "settings": json.loads(json.dumps(dict(settings))),
    }


def _validate(cfg: SweepConfig) -> None:
    """Every setting checked before the model is loaded (ValueError naming the valid choices)."""
    import dataclasses

    from dmx.calibrate import CalibrationConfig
    from dmx.family import get_family
    from dmx.rotation import PLACEMENTS, ROTATION_KINDS
    from mx_spec import get_format

    if cfg.rotation not in ROTATION_KINDS:
        raise ValueError(f"unknown rotation {cfg.rotation!r}; valid choices: {', '.join(ROTATION_KINDS)}")
    if cfg.rotation_placement not in PLACEMENTS:
        raise ValueError(f"unknown rotation placement {cfg.rotation_placement!r}; valid choices: {', '.join(PLACEMENTS)}")
    check_learned_lm_head(learning=cfg.rotation == "learned" and "dmx" in cfg.methods,
                          lm_head_quantised=cfg.include_lm_head)
    if "rotation_lr" in cfg.calibration and cfg.rotation != "learned":
        raise ValueError("calibration setting rotation_lr only applies to rotation='learned'")
    bad = [m for m in cfg.methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; valid choices: {', '.join(METHODS)}")
    from dmx.data import check_calibration_source

    check_calibration_source(cfg.calib_source, online=cfg.online, text_file=cfg.calib_text_file)
    if not (isinstance(cfg.seeds, int) and cfg.seeds >= 1):
        raise ValueError(f"seeds must be a whole number >= 1 (calibration/random seeds per target), got {cfg.seeds!r}")
    for f in cfg.uniform:
        get_format(f)  # ValueError listing the valid MX format names
    fam = get_family(cfg.family)
    if {"kl", "dmx", "random"} & set(cfg.methods):
        if not cfg.targets:
            raise ValueError("the kl, dmx and random methods need at least one target (--targets 5 6)")
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
    check_seqlens(cfg.model, {"--seqlen": cfg.seqlen, "--kl-seqlen": cfg.kl_seqlen if "kl" in cfg.methods else None,
                              "--calib-seqlen": cfg.calib_seqlen if "dmx" in cfg.methods else None})
    if cfg.tasks:
        from dmx.zeroshot import check_zeroshot_data  # lm-eval's side of the project is optional

        check_zeroshot_data(list(cfg.tasks), cfg.data_dir, online=cfg.online)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    res = fn()
    return res, time.perf_counter() - t0


def assignment_file(out: Path, label: str) -> Path:
    """Where the sweep in ``out`` writes the assignment of its point ``label``."""
    return out / "assignments" / f"{label.replace('@', '_at_').replace(':', '_')}.json"


def run_sweep(cfg: SweepConfig) -> list[dict[str, Any]]:
    """Run every point of ``cfg`` not already in ``cfg.out_dir`` and draw the figures.

    Methods run in the order of ``cfg.methods`` (full precision is always measured before the
    model is wrapped). The model is loaded once; dMX offsets are reset to their initial value
    before each target, so a point does not depend on which points ran before it. Returns all
    points (old and new). See the module docstring for the outputs."""
    from dmx.assignment import Assignment, apply_assignment
    from dmx.calibrate import CalibrationConfig, calibrate
    from dmx.checkpoint import checkpoint_exists
    from dmx.data import calibration_windows, test_token_ids
    from dmx.family import get_family
    from dmx.kl_baseline import kl_assignments, reference_if_needed
    from dmx.models import decoder_linear_names, load_model
    from dmx.quantized import quantize_model, set_uniform_format
    from dmx.random_baseline import random_formats
    from dmx.rotation import rotated_model_id, rotation_provenance, rotation_state, save_rotation_beside

    _validate(cfg)
    out = Path(cfg.out_dir)
    kl_cache = Path(cfg.kl_cache_dir) if cfg.kl_cache_dir else out / "kl_cache"
    store = ResultStore.open(out, cfg.identity())
    planned = _planned_keys(cfg)
    todo = [k for k in planned if not _is_done(store.get(k), cfg)]
    accuracy_todo = [k for k in planned if k not in todo and _needs_accuracy(store.get(k), cfg)]
    if not todo and not accuracy_todo:
        draw_figures(store.points, out, title=_title(cfg))
        return store.points
    _check_checkpoints(out, cfg, todo)
    finished = len(planned) - len(todo)
    if finished:
        print(f"resuming the sweep in {out}: {finished} of {len(planned)} points already measured, "
              f"{len(todo)} to go", file=sys.stderr)
    fam = get_family(cfg.family)
    weighting = cfg.calibration.get("weighting", "mean")
    provenance = {"model": cfg.model, "dtype": cfg.dtype, "include_lm_head": cfg.include_lm_head}
    model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, device_map=cfg.device_map)
    _rotate(model, cfg)
    kl_model_id = rotated_model_id(cfg.model, model)  # the KL scores depend on the rotation
    shared_rotation = rotation_provenance(rotation_state(model), None, out)
    provenance.update(shared_rotation)
    # a rerun that only adds zero-shot accuracy scores no perplexity: no need to tokenise the test split
    test_ids = test_token_ids(tokenizer, cfg.data_dir, online=cfg.online, text_file=cfg.text_file) if todo else None

    def evaluate(on=None) -> dict[str, Any]:
        return _evaluate(model if on is None else on, tokenizer, test_ids, cfg)

    def add_accuracy(key: str) -> None:
        """Zero-shot accuracy of the model as it stands joins the finished point ``key``."""
        metrics, secs = _timed(lambda: _zeroshot_metrics(model, tokenizer, cfg))
        store.add({**store.get(key), **metrics, "accuracy_seconds": round(secs, 1)})

    if "fp" in todo:
        metrics, secs = _timed(evaluate)
        store.add(_point("fp", "fp", assignment=None, settings={}, seconds=secs, metrics=metrics))
    elif "fp" in accuracy_todo:
        add_accuracy("fp")

    kl_targets = [t for t in cfg.targets if point_label("kl", target=t) in todo] if "kl" in cfg.methods else []
    kl_windows = reference = None
    if kl_targets:
        kl_windows = calibration_windows(tokenizer, cfg.kl_windows, cfg.kl_seqlen, cfg.seed,
                                         data_dir=cfg.data_dir, online=cfg.online, text_file=cfg.calib_text_file,
                                         source=cfg.calib_source)
        reference = reference_if_needed(
            model, kl_windows, model_id=kl_model_id, low_format=fam.low_format, high_format=fam.high_format,
            layer_names=decoder_linear_names(model, include_lm_head=cfg.include_lm_head),
            block_size=cfg.block_size, cache_dir=kl_cache,
        )

    layers = quantize_model(model, family=cfg.family, include_lm_head=cfg.include_lm_head, block_size=cfg.block_size)
    sizes = {n: int(layer.linear.weight.numel()) for n, layer in layers.items()}

    def accuracy_of_finished_points() -> None:
        for key in accuracy_todo:
            point = store.get(key)
            if point["method"] == "fp":
                continue  # measured before the model was wrapped
            if point["method"] == "uniform":
                set_uniform_format(layers, point["format"])
            elif cfg.rotation == "learned" and point["method"] == "dmx":
                print(f"sweep: no accuracy added to {key}: it has its own learned rotation; use "
                      f"`dmx eval --assignment {assignment_file(out, key)} --tasks ...`")
                continue
            else:
                apply_assignment(layers, Assignment.from_json(assignment_file(out, key)))
            add_accuracy(key)

    def run_uniform() -> None:
        for fmt in cfg.uniform:
            key = point_label("uniform", fmt=fmt)
            if key not in todo:
                continue
            set_uniform_format(layers, fmt)
            a = Assignment.from_formats({n: fmt for n in layers}, block_size=cfg.block_size, weighting=weighting,
                                        layer_sizes=sizes, provenance={**provenance, "method": "uniform"})
            metrics, secs = _timed(evaluate)
            store.add(_point(key, "uniform", assignment=a, settings=cfg.method_settings("uniform"), fmt=fmt, seconds=secs, metrics=metrics))

    def run_kl() -> None:
        nonlocal reference
        if not kl_targets:
            return
        found, scoring = _timed(lambda: kl_assignments(
            model, layers, kl_windows, targets=kl_targets, low_format=fam.low_format, high_format=fam.high_format,
            reference=reference, model_id=kl_model_id, cache_dir=kl_cache, weighting=weighting,
            progress=cfg.progress,
        ))
        reference = None  # free the reference logits
        for t, a in found.items():
            key = point_label("kl", target=t)
            a.provenance.update(provenance)
            apply_assignment(layers, a)
            a.to_json(assignment_file(out, key))
            metrics, secs = _timed(evaluate)
            store.add(_point(key, "kl", assignment=a, settings=cfg.method_settings("kl"), target=t, seconds=secs + scoring, metrics=metrics))
            scoring = 0.0  # the one-off scoring time is charged to the first KL point only

    def run_dmx() -> None:
        if "dmx" not in cfg.methods:
            return
        for i, seed in enumerate(cfg.seed_values()):
            targets = [t for t in cfg.targets if point_label("dmx", target=t, seed_index=i) in todo]
            if not targets:
                continue
            windows = calibration_windows(tokenizer, cfg.calib_windows, cfg.calib_seqlen, seed,
                                          data_dir=cfg.data_dir, online=cfg.online, text_file=cfg.calib_text_file,
                                         source=cfg.calib_source)
            for t in targets:
                run_dmx_point(t, i, seed, windows)

    def run_dmx_point(t: float, i: int, seed: int, windows) -> None:
        key = point_label("dmx", target=t, seed_index=i)
        settings = cfg.method_settings("dmx", seed)
        ccfg = cfg.calibration_config(t, seed)
        if cfg.rotation == "learned":
            # each point learns its own rotation, from the same start, on a fresh copy of the model
            dmx_model, _ = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, device_map=cfg.device_map)
            _rotate(dmx_model, cfg, learn=True)
            dmx_layers = quantize_model(dmx_model, family=cfg.family, include_lm_head=cfg.include_lm_head,
                                        block_size=cfg.block_size)
        else:
            dmx_model, dmx_layers = model, layers
            set_uniform_format(layers, None)  # calibrate() sets every offset to the config's beta_init
        ckpt = _checkpoint_dir(out, key, settings)
        record = {k: v for k, v in provenance.items() if k not in shared_rotation}
        a, calib_secs = _timed(lambda: calibrate(
            dmx_model, dmx_layers, windows, ccfg, checkpoint_dir=str(ckpt),
            resume=checkpoint_exists(ckpt), provenance=record, progress=cfg.progress,
        ))
        path = assignment_file(out, key)
        # the sweep's fixed rotation is recorded in results; only a point's learned one needs a file
        a.provenance.update(save_rotation_beside(dmx_model, path, learned_only=True)[0])
        a.to_json(path)
        metrics, secs = _timed(lambda: evaluate(dmx_model))
        if dmx_model is not model:
            del dmx_model, dmx_layers
        store.add(_point(key, "dmx", assignment=a, settings=settings, target=t, seconds=secs + calib_secs,
                         metrics=metrics))

    def run_random() -> None:
        if "random" not in cfg.methods:
            return
        order = list(layers)
        for i, seed in enumerate(cfg.seed_values()):
            for t in cfg.targets:
                key = point_label("random", target=t, seed_index=i)
                if key not in todo:
                    continue
                formats = random_formats(order, seed=seed, low_format=fam.low_format, high_format=fam.high_format,
                                         target_bits=t, sizes=sizes, weighting=weighting)
                a = Assignment.from_formats(formats, block_size=cfg.block_size, weighting=weighting, layer_sizes=sizes,
                                            provenance={**provenance, "method": "random", "seed": seed})
                apply_assignment(layers, a)
                a.to_json(assignment_file(out, key))
                metrics, secs = _timed(evaluate)
                store.add(_point(key, "random", assignment=a, settings=cfg.method_settings("random", seed), target=t,
                                 seconds=secs, metrics=metrics))

    accuracy_of_finished_points()
    runners = {"uniform": run_uniform, "kl": run_kl, "dmx": run_dmx, "random": run_random}
    for method in cfg.methods:
        if method in runners:
            runners[method]()
    draw_figures(store.points, out, title=_title(cfg))
    return store.points


def _checkpoint_dir(out: Path, key: str, settings: Mapping[str, Any]) -> Path:
    """The calibration checkpoint folder of the dMX point ``key`` with method ``settings``."""
    # One checkpoint directory per (target, seed, settings): changed settings start afresh.
    # final_rounding is left out: a rerun with the other rounding re-deploys the finished offsets
    trajectory = dict(settings)
    trajectory["calibration"] = {k: v for k, v in trajectory["calibration"].items() if k != "final_rounding"}
    digest = hashlib.sha256(json.dumps(trajectory, sort_keys=True).encode()).hexdigest()[:8]
    return out / "checkpoints" / f"{key.replace('@', '_at_').replace(':', '_')}-{digest}"


def _check_checkpoints(out: Path, cfg: SweepConfig, todo: Sequence[str]) -> None:
    """The checkpoints the dMX points to do will resume from are usable (before the model loads)."""
    from dmx.calibrate import CalibrationConfig, check_checkpoint
    from dmx.checkpoint import checkpoint_exists

    if "dmx" not in cfg.methods:
        return
    for i, seed in enumerate(cfg.seed_values()):
        for t in cfg.targets:
            key = point_label("dmx", target=t, seed_index=i)
            ckpt = _checkpoint_dir(out, key, cfg.method_settings("dmx", seed))
            if key in todo and checkpoint_exists(ckpt):
                ccfg = cfg.calibration_config(t, seed)
                check_checkpoint(str(ckpt), ccfg, resume=True, announce=False)


def _title(cfg: SweepConfig) -> str:
    windows = "all" if cfg.max_windows is None else str(cfg.max_windows)
    data = Path(cfg.text_file).name if cfg.text_file else "WikiText-2 test"
    return f"{cfg.model}: {data}, {windows} window(s) of {cfg.seqlen} tokens"


def _is_done(point: Mapping[str, Any] | None, cfg: SweepConfig) -> bool:
    """A stored point counts as finished when its method settings equal the current ones."""
    if point is None:
        return False
    seed = point.get("settings", {}).get("seed") if point["method"] in SEEDED_METHODS else None
    if seed is not None and seed not in cfg.seed_values():
        return False
    return point.get("settings", {}) == json.loads(json.dumps(cfg.method_settings(point["method"], seed)))


def _planned_keys(cfg: SweepConfig) -> list[str]:
    keys: list[str] = []
    if "fp" in cfg.methods:
        keys.append("fp")
    if "uniform" in cfg.methods:
        keys += [point_label("uniform", fmt=f) for f in cfg.uniform]
    if "kl" in cfg.methods:
        keys += [point_label("kl", target=t) for t in cfg.targets]
    for m in SEEDED_METHODS:
        if m in cfg.methods:
            keys += [point_label(m, target=t, seed_index=i) for i in range(cfg.seeds) for t in cfg.targets]
    return keys


def draw_figures(points: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, *, title: str | None = None) -> dict[str, Path]:
    """``pareto.png`` and (when KL/dMX points exist) ``assignment_heatmap.png`` in ``out_dir``."""
    from dmx.plots import assignment_heatmap, pareto_figure

    out = Path(out_dir)
    paths: dict[str, Path] = {}
    if any(p.get("perplexity") is not None for p in points):
        paths["pareto"] = pareto_figure(points, out / "pareto.png", title=title)
    mixed = {p["label"]: p["formats"] for p in sorted(points, key=lambda p: (p["method"], p.get("target") or 0))
             if p.get("formats")}
    if mixed:
        paths["heatmap"] = assignment_heatmap(mixed, out / "assignment_heatmap.png", title=title)
    return paths
