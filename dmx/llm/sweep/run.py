"""Running a sweep: every point of a :class:`dmx.llm.sweep.config.SweepConfig` not yet in its result
store, on one model loaded through :mod:`dmx.llm.pipeline`, by the method runners of
:mod:`dmx.llm.sweep.methods`. See :mod:`dmx.llm.sweep` for the outputs."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dmx.calibrate import check_checkpoint
from dmx.checkpoint import checkpoint_exists
from dmx.llm.data import test_token_ids
from dmx.family import get_family
from dmx.llm.pipeline import load_rotated_model, quantize
from dmx.provenance import model_provenance
from dmx.llm.rotation import rotated_model_id, rotation_provenance, rotation_state
from dmx.llm.sweep.config import (OWN_ROTATION_METHODS, SEEDED_METHODS, SweepConfig, accuracy_settings, point_label,
                                  validate_config)
from dmx.llm.sweep.figures import draw_figures
from dmx.llm.sweep.methods import (RUNNERS, LoadedSweep, add_accuracy, assignment_rotation, checkpoint_dir, measure_fp,
                                   prepare_kl_draws)
from dmx.llm.sweep.results import ResultStore, assignment_file

__all__ = ["run_sweep", "planned_keys", "is_done"]


def run_sweep(cfg: SweepConfig) -> list[dict[str, Any]]:
    """Run every point of ``cfg`` not already in ``cfg.out_dir`` and draw the figures.

    Methods run in the order of ``cfg.plan.methods`` (full precision is always measured before the
    model is wrapped). The model is loaded once; dMX offsets are reset to their initial value
    before each target, so a point does not depend on which points ran before it. Returns all
    points (old and new). See the module docstring for the outputs."""
    validate_config(cfg)
    out = Path(cfg.out_dir)
    store = ResultStore.open(out, cfg.identity())
    planned = planned_keys(cfg)
    todo = [k for k in planned if not is_done(store.get(k), cfg)]
    accuracy_todo = [k for k in planned if k not in todo and _needs_accuracy(store.get(k), cfg)]
    if todo or accuracy_todo:
        _check_checkpoints(out, cfg, todo)
        _check_learned_rotations(out, cfg, store, todo, accuracy_todo)
        if len(planned) > len(todo):
            print(f"resuming the sweep in {out}: {len(planned) - len(todo)} of {len(planned)} points already "
                  f"measured, {len(todo)} to go", file=sys.stderr)
        run = _load(cfg, store, todo)
        measure_fp(run)
        add_accuracy(run, accuracy_todo)  # full precision's, before the model is wrapped
        prepare_kl_draws(run)  # the references need the unwrapped model too
        run.layers = quantize(run.model, run.spec)
        add_accuracy(run, accuracy_todo)  # the other finished points'
        for method in cfg.plan.methods:
            if method in RUNNERS:
                RUNNERS[method](run)
    draw_figures(store.points, out, title=cfg.figure_title())
    return store.points


def _load(cfg: SweepConfig, store: ResultStore, todo: list[str]) -> LoadedSweep:
    """The sweep's model, rotated, and what its runners share (before the model is wrapped)."""
    spec = cfg.model_spec()
    provenance = model_provenance(spec)
    model, tokenizer = load_rotated_model(spec)
    shared_rotation = rotation_provenance(rotation_state(model), None, Path(cfg.out_dir))
    provenance.update(shared_rotation)
    # a rerun that only adds zero-shot accuracy scores no perplexity: no need to tokenise the test split
    test_ids = (test_token_ids(tokenizer, cfg.data_dir, online=cfg.online, text_file=cfg.evaluation.text_file)
                if todo else None)
    return LoadedSweep(cfg=cfg, store=store, todo=todo, spec=spec, model=model, tokenizer=tokenizer,
                       family=get_family(spec.family), provenance=provenance, shared_rotation=shared_rotation,
                       kl_model_id=rotated_model_id(spec.model, model),  # the KL scores depend on the rotation
                       test_ids=test_ids)


def _needs_accuracy(point: Mapping[str, Any] | None, cfg: SweepConfig) -> bool:
    """True when ``cfg`` asks for zero-shot tasks that ``point`` was not measured on."""
    return bool(cfg.evaluation.tasks) and point is not None and point.get("accuracy_settings") != accuracy_settings(cfg)


def _check_checkpoints(out: Path, cfg: SweepConfig, todo: Sequence[str]) -> None:
    """The checkpoints the dMX points to do will resume from are usable (before the model loads)."""
    if "dmx" not in cfg.plan.methods:
        return
    for i, seed in enumerate(cfg.plan.seed_values()):
        for t in cfg.plan.targets:
            key = point_label("dmx", target=t, seed_index=i)
            ckpt = checkpoint_dir(out, key, cfg.method_settings("dmx", seed))
            if key in todo and checkpoint_exists(ckpt):
                check_checkpoint(str(ckpt), cfg.calibration_config(t, seed), resume=True, announce=False)


def _check_learned_rotations(out: Path, cfg: SweepConfig, store: ResultStore, todo: Sequence[str],
                             accuracy_todo: Sequence[str] = ()) -> None:
    """Each ``kl_learned_rotation`` point to do finds the rotation its dMX point learned: that
    point is finished (or runs first in this sweep) and its rotation file is in place; so does each
    finished point with its own rotation that zero-shot accuracy is added to (before the model loads)."""
    if cfg.model.rotation.learns:
        for key in accuracy_todo:
            if store.get(key)["method"] in OWN_ROTATION_METHODS:
                assignment_rotation(assignment_file(out, key))  # ValueError naming the fix
    methods = cfg.plan.methods
    if "kl_learned_rotation" not in methods:
        return
    dmx_first = "dmx" in methods and methods.index("dmx") < methods.index("kl_learned_rotation")
    for i, seed in enumerate(cfg.plan.seed_values()):
        for t in cfg.plan.targets:
            if point_label("kl_learned_rotation", target=t, seed_index=i) not in todo:
                continue
            dmx_key = point_label("dmx", target=t, seed_index=i)
            if is_done(store.get(dmx_key), cfg):
                assignment_rotation(assignment_file(out, dmx_key))  # ValueError naming the fix
            elif not dmx_first:
                raise ValueError(f"kl_learned_rotation at {t:g} bits (seed {seed}) scores KL on the rotation dMX "
                                 f"point {dmx_key} learned, which {out} does not have yet; run dmx first "
                                 "(list dmx before kl_learned_rotation in the methods)")


def is_done(point: Mapping[str, Any] | None, cfg: SweepConfig) -> bool:
    """A stored point counts as finished when its method settings equal the current ones."""
    if point is None:
        return False
    seed = point.get("settings", {}).get("seed") if point["method"] in SEEDED_METHODS else None
    if seed is not None and seed not in cfg.plan.seed_values():
        return False
    return point.get("settings", {}) == json.loads(json.dumps(cfg.method_settings(point["method"], seed)))


def planned_keys(cfg: SweepConfig) -> list[str]:
    """Every point ``cfg`` asks for, in the order they are listed (fp, uniform, then per seeded method)."""
    plan = cfg.plan
    keys: list[str] = []
    if "fp" in plan.methods:
        keys.append("fp")
    if "uniform" in plan.methods:
        keys += [point_label("uniform", fmt=f) for f in plan.uniform]
    for m in SEEDED_METHODS:
        if m in plan.methods:
            keys += [point_label(m, target=t, seed_index=i) for i in range(plan.seeds) for t in plan.targets]
    return keys
