"""One runner per method of a sweep: full precision, uniform MX, the KL heuristic, dMX, the random
control, and under a learned rotation the KL heuristic on each dMX seed's learned rotation.

Every runner is a module-level function of a :class:`LoadedSweep` (the model, its quantised
layers, the result store and what the points share), measures the points of its method that are
still to do, and adds each to the store as soon as it is finished (so an interrupted sweep keeps
it). :func:`dmx.llm.sweep.run.run_sweep` loads the model, calls them in the order of
``SweepConfig.plan.methods`` and draws the figures; a test can call one runner alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from dmx.assignment import Assignment, apply_assignment
from dmx.calibrate import calibrate
from dmx.checkpoint import checkpoint_exists
from dmx.files import settings_digest
from dmx.llm.data import calibration_windows
from dmx.family import FormatFamily
from dmx.llm.kl_baseline import kl_assignments, reference_if_needed
from dmx.llm.models import decoder_linear_names
from dmx.llm.perplexity import perplexity_of, window_nlls
from dmx.llm.pipeline import ModelSpec, load_rotated_model, quantize
from dmx.llm.random_baseline import random_formats
from dmx.llm.rotation import RotationSpec, recorded_rotation, rotated_model_id, save_rotation_beside
from dmx.llm.rotation.training import rotation_setup, rotation_trainables
from dmx.llm.sweep.config import (OWN_ROTATION_METHODS, SEEDED_METHODS, SweepConfig, accuracy_settings,
                                  dmx_trajectory, point_label)
from dmx.llm.sweep.results import ResultStore, assignment_file, file_stem
from dmx.wrap import set_fixed_format
from dmx.llm.zeroshot import checkpoint_file, evaluate_zeroshot

__all__ = ["LoadedSweep", "KLDraw", "measure_fp", "prepare_kl_draws", "run_uniform", "run_kl", "run_dmx",
           "run_random", "run_kl_learned_rotation", "add_accuracy", "checkpoint_dir", "zeroshot_checkpoint",
           "assignment_rotation",
           "recorded_rotation_spec", "RUNNERS"]


@dataclass
class KLDraw:
    """One calibration draw of the KL heuristic: its seed, its targets still to do, its windows
    and the full-precision reference its unscored layers need (None once used or when cached)."""

    seed: int
    targets: list[float]
    windows: Any
    reference: Any


@dataclass
class LoadedSweep:
    """What the runners of one sweep share: the settings, the loaded (rotated) model, its
    quantised layers once wrapped, the result store and the keys still to do."""

    cfg: SweepConfig
    store: ResultStore
    todo: list[str]
    spec: ModelSpec
    model: nn.Module
    tokenizer: Any
    family: FormatFamily
    provenance: dict[str, Any]  # recorded by every assignment
    shared_rotation: dict[str, Any]  # the sweep's own rotation, recorded once in the results
    kl_model_id: str
    test_ids: Any = None
    layers: dict[str, nn.Module] = field(default_factory=dict)
    kl_draws: dict[int, KLDraw] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return Path(self.cfg.out_dir)

    @property
    def kl_cache(self) -> Path:
        return Path(self.cfg.kl_cache_dir) if self.cfg.kl_cache_dir else self.out / "kl_cache"

    @property
    def weighting(self) -> str:
        return self.cfg.calibration.weighting

    @property
    def sizes(self) -> dict[str, int]:
        return {n: int(layer.linear.weight.numel()) for n, layer in self.layers.items()}

    def seeds_to_do(self, method: str) -> Iterator[tuple[int, int, list[float]]]:
        """``(index, seed, targets still to do)`` for every seed of ``method`` with a point left."""
        plan = self.cfg.plan
        for i, seed in enumerate(plan.seed_values() if method in plan.methods else []):
            targets = [t for t in plan.targets if point_label(method, target=t, seed_index=i) in self.todo]
            if targets:
                yield i, seed, targets

    def windows(self, count: int, seqlen: int, seed: int):
        """``count`` seeded calibration windows of ``seqlen`` tokens from the sweep's calibration text."""
        cfg, data = self.cfg, self.cfg.calibration_data
        return calibration_windows(self.tokenizer, count, seqlen, seed, data_dir=cfg.data_dir, online=cfg.online,
                                   text_file=data.text_file, source=data.source)

    def evaluate(self, model: nn.Module | None = None) -> dict[str, Any]:
        """The perplexity of ``model`` (default: the sweep's) as it stands, with its per-window NLLs."""
        return _perplexity_metrics(self.model if model is None else model, self.test_ids, self.cfg)

    def add(self, key: str, method: str, *, assignment, settings: Mapping[str, Any], seconds: float,
            metrics: Mapping[str, Any], target: float | None = None, fmt: str | None = None,
            model: nn.Module | None = None) -> None:
        """Store the point ``key``; when the sweep has zero-shot tasks, ``model`` (default: the
        sweep's), still deployed as the point, then answers them into the stored point."""
        self.store.add(_point(key, method, assignment=assignment, settings=settings, target=target, fmt=fmt,
                              seconds=seconds, metrics=metrics))
        if self.cfg.evaluation.tasks:
            # a second step, so an interrupted zero-shot run keeps the perplexity (and its finished tasks)
            _answer(self, key, self.model if model is None else model)


def measure_fp(run: LoadedSweep) -> None:
    """Full precision (before the model is wrapped)."""
    if "fp" in run.todo:
        metrics, secs = _timed(run.evaluate)
        run.add("fp", "fp", assignment=None, settings={}, seconds=secs, metrics=metrics)


def prepare_kl_draws(run: LoadedSweep) -> None:
    """Per KL draw with targets still to do: its calibration windows and, before the model is
    wrapped, the full-precision reference of the layers its score cache lacks."""
    data = run.cfg.calibration_data
    for i, seed, targets in run.seeds_to_do("kl"):
        windows = run.windows(data.kl_windows, data.kl_seqlen, seed)
        run.kl_draws[i] = KLDraw(seed, targets, windows, _kl_reference(run, run.model, windows, run.kl_model_id))


def run_uniform(run: LoadedSweep) -> None:
    """Every quantised layer at one standard MX format, per format of ``cfg.plan.uniform``."""
    cfg = run.cfg
    for fmt in cfg.plan.uniform:
        key = point_label("uniform", fmt=fmt)
        if key not in run.todo:
            continue
        set_fixed_format(run.model, fmt)
        a = Assignment.from_formats({n: fmt for n in run.layers}, block_size=run.spec.block_size, weighting=run.weighting,
                                    layer_sizes=run.sizes, provenance={**run.provenance, "method": "uniform"})
        metrics, secs = _timed(run.evaluate)
        run.add(key, "uniform", assignment=a, settings=cfg.method_settings("uniform"), fmt=fmt, seconds=secs,
                metrics=metrics)


def run_kl(run: LoadedSweep) -> None:
    """The KL heuristic at every target, per calibration draw (scored once per draw, cached)."""
    for i, draw in run.kl_draws.items():
        found, scoring = _timed(lambda: _kl_scored(run, run.model, run.layers, draw.windows, draw.targets,
                                                   draw.reference, run.kl_model_id))
        draw.reference = None  # free the reference logits
        for t, a in found.items():
            key = point_label("kl", target=t, seed_index=i)
            a.provenance.update({**run.provenance, "seed": draw.seed})
            apply_assignment(run.layers, a)
            a.to_json(assignment_file(run.out, key))
            metrics, secs = _timed(run.evaluate)
            run.add(key, "kl", assignment=a, settings=run.cfg.method_settings("kl", draw.seed), target=t,
                    seconds=secs + scoring, metrics=metrics)
            scoring = 0.0  # a draw's one-off scoring time is charged to its first point only


def run_dmx(run: LoadedSweep) -> None:
    """dMX at every target, per calibration seed (the windows drawn once per seed)."""
    data = run.cfg.calibration_data
    for i, seed, targets in run.seeds_to_do("dmx"):
        windows = run.windows(data.windows, data.seqlen, seed)
        for t in targets:
            run_dmx_point(run, t, i, seed, windows)


def run_dmx_point(run: LoadedSweep, target: float, index: int, seed: int, windows) -> None:
    """One dMX calibration (resumed from its checkpoint when there is one), deployed and evaluated."""
    cfg = run.cfg
    key = point_label("dmx", target=target, seed_index=index)
    settings = cfg.method_settings("dmx", seed)
    ccfg = cfg.calibration_config(target, seed)
    if cfg.model.rotation.learns:
        # each point learns its own rotation, from the same start, on a fresh copy of the model
        learning = cfg.model_spec(learning=True)
        model, _ = load_rotated_model(learning, trainable=True)
        layers = quantize(model, learning)
    else:
        model, layers = run.model, run.layers
        set_fixed_format(model, None)  # calibrate() sets every offset to the config's beta_init
    ckpt = checkpoint_dir(run.out, key, settings)
    record = {k: v for k, v in run.provenance.items() if k not in run.shared_rotation}
    a, calib_secs = _timed(lambda: calibrate(
        model, layers, windows, ccfg, trainables=rotation_trainables(model, ccfg), model_setup=rotation_setup(model),
        checkpoint_dir=str(ckpt), resume=checkpoint_exists(ckpt), provenance=record, progress=cfg.progress,
    ))
    path = assignment_file(run.out, key)
    # the sweep's fixed rotation is recorded in results; only a point's learned one needs a file
    a.provenance.update(save_rotation_beside(model, path, learned_only=True)[0])
    a.to_json(path)
    metrics, secs = _timed(lambda: run.evaluate(model))
    run.add(key, "dmx", assignment=a, settings=settings, target=target, seconds=secs + calib_secs, metrics=metrics,
            model=model)


def run_kl_learned_rotation(run: LoadedSweep) -> None:
    """The KL heuristic on the rotation each dMX seed learned: draw i (KL draw i's windows) scored
    on the rotation dMX seed i learned at the same target, so that dMX and KL are ranked on one
    rotation (``kl`` scores on the learned kind's fixed start: a comparison of pipelines).
    Each learned rotation has its own score cache (its model id), shared by targets with the
    same rotation. The dMX points must be finished (``run_sweep`` checks before loading)."""
    data = run.cfg.calibration_data
    record = {k: v for k, v in run.provenance.items() if k not in run.shared_rotation}
    for i, seed, targets in run.seeds_to_do("kl_learned_rotation"):
        windows = run.windows(data.kl_windows, data.kl_seqlen, seed)
        for t in targets:
            key = point_label("kl_learned_rotation", target=t, seed_index=i)
            spec = recorded_rotation_spec(run, assignment_file(run.out, point_label("dmx", target=t, seed_index=i)))
            model, _ = load_rotated_model(spec)
            model_id = rotated_model_id(spec.model, model)
            reference = _kl_reference(run, model, windows, model_id)
            layers = quantize(model, spec)
            found, scoring = _timed(lambda: _kl_scored(run, model, layers, windows, [t], reference, model_id))
            a = found[t]
            path = assignment_file(run.out, key)
            a.provenance.update({**record, "seed": seed, **save_rotation_beside(model, path)[0]})
            apply_assignment(layers, a)
            a.to_json(path)
            metrics, secs = _timed(lambda: run.evaluate(model))
            run.add(key, "kl_learned_rotation", assignment=a, target=t, seconds=secs + scoring, metrics=metrics,
                    settings=run.cfg.method_settings("kl_learned_rotation", seed), model=model)


def run_random(run: LoadedSweep) -> None:
    """The control: seeded random assignments filling each target with the same greedy as KL."""
    cfg = run.cfg
    for i, seed, targets in run.seeds_to_do("random"):
        for t in targets:
            key = point_label("random", target=t, seed_index=i)
            formats = random_formats(list(run.layers), seed=seed, low_format=run.family.low_format,
                                     high_format=run.family.high_format, target_bits=t, sizes=run.sizes,
                                     weighting=run.weighting)
            a = Assignment.from_formats(formats, block_size=run.spec.block_size, weighting=run.weighting,
                                        layer_sizes=run.sizes, provenance={**run.provenance, "method": "random",
                                                                           "seed": seed})
            apply_assignment(run.layers, a)
            a.to_json(assignment_file(run.out, key))
            metrics, secs = _timed(run.evaluate)
            run.add(key, "random", assignment=a, settings=cfg.method_settings("random", seed), target=t,
                    seconds=secs, metrics=metrics)


#: The runners of the wrapped model, by method (full precision runs before the model is wrapped).
RUNNERS: dict[str, Callable[[LoadedSweep], None]] = {"uniform": run_uniform, "kl": run_kl, "dmx": run_dmx,
                                                       "random": run_random,
                                                       "kl_learned_rotation": run_kl_learned_rotation}


def add_accuracy(run: LoadedSweep, keys: Sequence[str]) -> None:
    """Zero-shot accuracy joins the finished points ``keys`` (their model rebuilt from the stored
    format or assignment); full precision only before the model is wrapped."""
    cfg = run.cfg
    for key in keys:
        point = run.store.get(key)
        wrapped = bool(run.layers)
        if (point["method"] == "fp") == wrapped:
            continue  # full precision before the model is wrapped, the others after
        model = run.model
        if point["method"] == "uniform":
            set_fixed_format(model, point["format"])
        elif cfg.model.rotation.learns and point["method"] in OWN_ROTATION_METHODS:
            # not the sweep's shared rotation: the point's own, rebuilt from the file beside its assignment
            path = assignment_file(run.out, key)
            spec = recorded_rotation_spec(run, path)
            model, _ = load_rotated_model(spec)
            apply_assignment(quantize(model, spec), Assignment.from_json(path))
        elif point["method"] != "fp":
            apply_assignment(run.layers, Assignment.from_json(assignment_file(run.out, key)))
        _answer(run, key, model)


def _answer(run: LoadedSweep, key: str, model: nn.Module) -> None:
    """``model``, deployed as the stored point ``key``, answers the sweep's zero-shot tasks; its
    accuracy joins the point. Each finished task is checkpointed (:func:`zeroshot_checkpoint`), so
    an interrupted run resumes at the task it was answering; the file goes once the point is stored."""
    point = run.store.get(key)
    checkpoint = zeroshot_checkpoint(run.out, point, run.cfg)
    run.store.add({**point, **_zeroshot_metrics(model, run.tokenizer, run.cfg, checkpoint)})
    checkpoint.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        checkpoint.parent.rmdir()  # only when no other point's zero-shot is under way


def zeroshot_checkpoint(out: Path, point: Mapping[str, Any], cfg: SweepConfig) -> Path:
    """The per-task zero-shot checkpoint of the stored ``point`` in the sweep folder ``out``: one
    file per deployment (the point's method settings and formats) and zero-shot settings."""
    # the formats tell apart deployments with one key and settings (the budget and threshold
    # folders' dMX points share a calibration); a rerun with another deployment starts afresh
    identity = {"settings": point.get("settings"), "format": point.get("format"), "formats": point.get("formats"),
                "accuracy_settings": accuracy_settings(cfg)}
    return checkpoint_file(out / "zeroshot_checkpoints", file_stem(point["key"]), identity)


def assignment_rotation(assignment_path: Path) -> RotationSpec:
    """The rotation the assignment at ``assignment_path`` records (a dMX point's learned rotation, from
    the file beside it; ValueError naming the fix when that file is missing or differs)."""
    return recorded_rotation(Assignment.from_json(assignment_path).provenance, assignment_path)


def recorded_rotation_spec(run: LoadedSweep, assignment_path: Path) -> ModelSpec:
    """The sweep's model spec on the rotation recorded beside the assignment at ``assignment_path``."""
    return dataclasses.replace(run.spec, rotation=assignment_rotation(assignment_path))


def checkpoint_dir(out: Path, key: str, settings: Mapping[str, Any]) -> Path:
    """The calibration checkpoint folder of the dMX point ``key`` with method ``settings``."""
    # One checkpoint directory per (target, seed, settings): changed settings start afresh.
    # final_rounding is left out: a rerun with the other rounding re-deploys the finished offsets
    return out / "checkpoints" / f"{file_stem(key)}-{settings_digest(dmx_trajectory(settings))}"


def _kl_reference(run: LoadedSweep, model: nn.Module, windows, model_id: str):
    """The full-precision reference of ``model`` on ``windows`` for the layers the score cache of
    ``model_id`` lacks (None when it has them all); before ``model`` is wrapped."""
    return reference_if_needed(
        model, windows, model_id=model_id, low_format=run.family.low_format, high_format=run.family.high_format,
        layer_names=decoder_linear_names(model, include_lm_head=run.spec.include_lm_head),
        block_size=run.spec.block_size, cache_dir=run.kl_cache,
    )


def _kl_scored(run: LoadedSweep, model: nn.Module, layers, windows, targets, reference, model_id: str):
    """The KL heuristic's assignment of ``model`` at each of ``targets`` (scores cached under ``model_id``)."""
    return kl_assignments(model, layers, windows, targets=targets, low_format=run.family.low_format,
                          high_format=run.family.high_format, reference=reference, model_id=model_id,
                          cache_dir=run.kl_cache, weighting=run.weighting, progress=run.cfg.progress)


def _zeroshot_metrics(model, tokenizer, cfg: SweepConfig, checkpoint: Path) -> dict[str, Any]:
    """Per-task zero-shot accuracy, their average, the settings and the seconds spent answering (the
    tasks resumed from ``checkpoint`` included), of the model as it stands."""
    evaluation = cfg.evaluation
    res = evaluate_zeroshot(
        model, tokenizer, tasks=list(evaluation.tasks), limit=evaluation.limit,
        batch_size=evaluation.zeroshot_batch_size, data_dir=cfg.data_dir, online=cfg.online,
        checkpoint=checkpoint, restart_unusable_checkpoint=True, return_documents=True,
    )
    return {"accuracy": {name: row["acc"] for name, row in res["tasks"].items()},
            "avg_accuracy": res["average"]["acc"], "accuracy_settings": accuracy_settings(cfg),
            "accuracy_seconds": round(sum(row["seconds"] for row in res["tasks"].values()), 1),
            # per document (0/1, in document order), so two methods can be compared document by
            # document on the same questions (a paired interval, as window_nlls for perplexity)
            "accuracy_documents": {name: _document_scores(row["documents"]) for name, row in res["tasks"].items()}}


def _document_scores(documents: Sequence[Mapping[str, Any]]) -> list[int]:
    """The 0/1 ``acc`` of each document, in document order (lm-eval's ``doc_id`` 0, 1, ...)."""
    ids = [d["doc_id"] for d in documents]
    if ids != list(range(len(ids))):
        raise ValueError(f"zero-shot documents are not the first {len(ids)} of their task in order "
                         f"(doc_id {ids[:5]}...): a paired comparison needs the same documents in the same order")
    return [int(d["acc"]) for d in documents]


def _perplexity_metrics(model, test_ids, cfg: SweepConfig) -> dict[str, Any]:
    """Perplexity with its per-window NLLs of the model as it stands (no zero-shot accuracy yet:
    :meth:`LoadedSweep.add` adds it once the point is stored)."""
    evaluation = cfg.evaluation
    nlls = window_nlls(model, test_ids, seqlen=evaluation.seqlen, max_windows=evaluation.max_windows,
                       first_window=evaluation.first_window, progress=cfg.progress)
    out: dict[str, Any] = {
        "perplexity": perplexity_of(nlls, evaluation.seqlen),
        # per window, so two methods can be compared window by window (a paired interval)
        "window_nlls": [float(v) for v in nlls],
        "first_window": evaluation.first_window,
        "accuracy": {},
        "avg_accuracy": None,
    }
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


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    res = fn()
    return res, time.perf_counter() - t0
