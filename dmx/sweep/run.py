"""Running a sweep: every point of a :class:`dmx.sweep.config.SweepConfig` not yet in its result
store, on one model loaded through :mod:`dmx.pipeline`. See :mod:`dmx.sweep` for the outputs."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dmx.assignment import Assignment, apply_assignment
from dmx.calibrate import calibrate, check_checkpoint
from dmx.checkpoint import checkpoint_exists
from dmx.data import calibration_windows, test_token_ids
from dmx.family import get_family
from dmx.kl_baseline import kl_assignments, reference_if_needed
from dmx.models import decoder_linear_names
from dmx.perplexity import perplexity_of, window_nlls
from dmx.pipeline import load_rotated_model, quantize
from dmx.provenance import model_provenance
from dmx.random_baseline import random_formats
from dmx.rotation import rotated_model_id, rotation_provenance, rotation_state, save_rotation_beside
from dmx.rotation.training import rotation_setup, rotation_trainables
from dmx.sweep.config import SEEDED_METHODS, SweepConfig, accuracy_settings, point_label, validate_config
from dmx.sweep.figures import draw_figures, figure_title
from dmx.sweep.results import ResultStore, assignment_file
from dmx.wrap import set_fixed_format
from dmx.zeroshot import evaluate_zeroshot

__all__ = ["run_sweep"]


def run_sweep(cfg: SweepConfig) -> list[dict[str, Any]]:
    """Run every point of ``cfg`` not already in ``cfg.out_dir`` and draw the figures.

    Methods run in the order of ``cfg.methods`` (full precision is always measured before the
    model is wrapped). The model is loaded once; dMX offsets are reset to their initial value
    before each target, so a point does not depend on which points ran before it. Returns all
    points (old and new). See the module docstring for the outputs."""
    validate_config(cfg)
    out = Path(cfg.out_dir)
    kl_cache = Path(cfg.kl_cache_dir) if cfg.kl_cache_dir else out / "kl_cache"
    store = ResultStore.open(out, cfg.identity())
    planned = _planned_keys(cfg)
    todo = [k for k in planned if not _is_done(store.get(k), cfg)]
    accuracy_todo = [k for k in planned if k not in todo and _needs_accuracy(store.get(k), cfg)]
    if not todo and not accuracy_todo:
        draw_figures(store.points, out, title=figure_title(cfg))
        return store.points
    _check_checkpoints(out, cfg, todo)
    finished = len(planned) - len(todo)
    if finished:
        print(f"resuming the sweep in {out}: {finished} of {len(planned)} points already measured, "
              f"{len(todo)} to go", file=sys.stderr)
    fam = get_family(cfg.family)
    weighting = cfg.calibration.get("weighting", "mean")
    spec = cfg.model_spec()
    provenance = model_provenance(spec)
    model, tokenizer = load_rotated_model(spec)
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

    # per KL draw i: its targets still to do, its calibration windows, and (before the model is
    # wrapped) the full-precision reference its unscored layers need
    kl_draws: dict[int, dict[str, Any]] = {}
    for i, seed in enumerate(cfg.seed_values() if "kl" in cfg.methods else []):
        targets = [t for t in cfg.targets if point_label("kl", target=t, seed_index=i) in todo]
        if not targets:
            continue
        windows = calibration_windows(tokenizer, cfg.kl_windows, cfg.kl_seqlen, seed,
                                      data_dir=cfg.data_dir, online=cfg.online, text_file=cfg.calib_text_file,
                                      source=cfg.calib_source)
        reference = reference_if_needed(
            model, windows, model_id=kl_model_id, low_format=fam.low_format, high_format=fam.high_format,
            layer_names=decoder_linear_names(model, include_lm_head=cfg.include_lm_head),
            block_size=cfg.block_size, cache_dir=kl_cache,
        )
        kl_draws[i] = {"seed": seed, "targets": targets, "windows": windows, "reference": reference}

    layers = quantize(model, spec)
    sizes = {n: int(layer.linear.weight.numel()) for n, layer in layers.items()}

    def accuracy_of_finished_points() -> None:
        for key in accuracy_todo:
            point = store.get(key)
            if point["method"] == "fp":
                continue  # measured before the model was wrapped
            if point["method"] == "uniform":
                set_fixed_format(model, point["format"])
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
            set_fixed_format(model, fmt)
            a = Assignment.from_formats({n: fmt for n in layers}, block_size=cfg.block_size, weighting=weighting,
                                        layer_sizes=sizes, provenance={**provenance, "method": "uniform"})
            metrics, secs = _timed(evaluate)
            store.add(_point(key, "uniform", assignment=a, settings=cfg.method_settings("uniform"), fmt=fmt, seconds=secs, metrics=metrics))

    def run_kl() -> None:
        for i, draw in kl_draws.items():
            found, scoring = _timed(lambda: kl_assignments(
                model, layers, draw["windows"], targets=draw["targets"], low_format=fam.low_format,
                high_format=fam.high_format, reference=draw["reference"], model_id=kl_model_id, cache_dir=kl_cache,
                weighting=weighting, progress=cfg.progress,
            ))
            draw["reference"] = None  # free the reference logits
            for t, a in found.items():
                key = point_label("kl", target=t, seed_index=i)
                a.provenance.update({**provenance, "seed": draw["seed"]})
                apply_assignment(layers, a)
                a.to_json(assignment_file(out, key))
                metrics, secs = _timed(evaluate)
                store.add(_point(key, "kl", assignment=a, settings=cfg.method_settings("kl", draw["seed"]), target=t,
                                 seconds=secs + scoring, metrics=metrics))
                scoring = 0.0  # a draw's one-off scoring time is charged to its first point only

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
            learning = cfg.model_spec(learning=True)
            dmx_model, _ = load_rotated_model(learning, trainable=True)
            dmx_layers = quantize(dmx_model, learning)
        else:
            dmx_model, dmx_layers = model, layers
            set_fixed_format(model, None)  # calibrate() sets every offset to the config's beta_init
        ckpt = _checkpoint_dir(out, key, settings)
        record = {k: v for k, v in provenance.items() if k not in shared_rotation}
        a, calib_secs = _timed(lambda: calibrate(
            dmx_model, dmx_layers, windows, ccfg, trainables=rotation_trainables(dmx_model, ccfg),
            model_setup=rotation_setup(dmx_model), checkpoint_dir=str(ckpt),
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
    draw_figures(store.points, out, title=figure_title(cfg))
    return store.points


def _needs_accuracy(point: Mapping[str, Any] | None, cfg: SweepConfig) -> bool:
    """True when ``cfg`` asks for zero-shot tasks that ``point`` was not measured on."""
    return bool(cfg.tasks) and point is not None and point.get("accuracy_settings") != accuracy_settings(cfg)


def _zeroshot_metrics(model, tokenizer, cfg: SweepConfig) -> dict[str, Any]:
    """Per-task zero-shot accuracy, their average and the settings, of the model as it stands."""
    res = evaluate_zeroshot(
        model, tokenizer, tasks=list(cfg.tasks), limit=cfg.limit, batch_size=cfg.zeroshot_batch_size,
        data_dir=cfg.data_dir, online=cfg.online,
    )
    return {"accuracy": {name: row["acc"] for name, row in res["tasks"].items()},
            "avg_accuracy": res["average"]["acc"], "accuracy_settings": accuracy_settings(cfg)}


def _evaluate(model, tokenizer, test_ids, cfg: SweepConfig) -> dict[str, Any]:
    """Perplexity (and zero-shot accuracy when ``cfg.tasks``) of the model as it stands."""
    nlls = window_nlls(model, test_ids, seqlen=cfg.seqlen, max_windows=cfg.max_windows,
                       first_window=cfg.first_window, progress=cfg.progress)
    out: dict[str, Any] = {
        "perplexity": perplexity_of(nlls, cfg.seqlen),
        # per window, so two methods can be compared window by window (a paired interval)
        "window_nlls": [float(v) for v in nlls],
        "first_window": cfg.first_window,
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


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    res = fn()
    return res, time.perf_counter() - t0


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
    if "dmx" not in cfg.methods:
        return
    for i, seed in enumerate(cfg.seed_values()):
        for t in cfg.targets:
            key = point_label("dmx", target=t, seed_index=i)
            ckpt = _checkpoint_dir(out, key, cfg.method_settings("dmx", seed))
            if key in todo and checkpoint_exists(ckpt):
                ccfg = cfg.calibration_config(t, seed)
                check_checkpoint(str(ckpt), ccfg, resume=True, announce=False)


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
    for m in SEEDED_METHODS:
        if m in cfg.methods:
            keys += [point_label(m, target=t, seed_index=i) for i in range(cfg.seeds) for t in cfg.targets]
    return keys
