"""``dmx sweep``: full precision, uniform MX, KL heuristic and dMX at a list of bit targets.

Writes ``results.json`` / ``results.csv`` after every point (a rerun skips finished points),
the assignments, ``pareto.png`` and ``assignment_heatmap.png`` into ``--out`` (see
:mod:`dmx.llm.sweep`), then prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from dmx.commands import (HelpFormatter, add_data_args, add_model_args, add_quant_args, model_spec_from_args,
                          print_table)
from dmx.commands.calibrate import RECIPE, add_recipe_args
from dmx.llm.data import CALIBRATION_SEQLEN, CALIBRATION_WINDOWS
from dmx.llm.rotation import CALIBRATION_ROTATION, resolve_rotation
from dmx.llm.sweep.config import (DEFAULT_METHODS, METHODS, UNIFORM_FORMATS, CalibrationData, EvaluationSpec,
                                  SweepConfig, SweepPlan, validate_config)
from dmx.llm.sweep.results import copy_points
from dmx.llm.sweep.run import planned_keys, run_sweep
from dmx.llm.tasks import resolve_task_names

__all__ = ["register", "run", "config_from_args"]


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``sweep`` subparser."""
    parser = subparsers.add_parser(
        "sweep",
        help="perplexity vs average bits: full precision, uniform MX, KL heuristic and dMX at several targets",
        description="Run every method at every --targets budget on one model, write results.json/results.csv "
                    "incrementally (an interrupted sweep resumes where it stopped when rerun with the same "
                    "flags), and draw pareto.png and assignment_heatmap.png in --out. The model is rotated "
                    "right after loading (by default the fixed Hadamard, as for dmx calibrate; --rotation none for "
                    "plain MX), so every method is measured on the same rotated model; "
                    "with --rotation learned, fp/uniform/KL use the learned kind's fixed start (folded "
                    "Hadamard) and each dMX point learns its own rotation.",
        formatter_class=HelpFormatter,
    )
    add_model_args(parser, default_rotation=CALIBRATION_ROTATION)
    add_quant_args(parser)
    add_data_args(parser)
    g = parser.add_argument_group("sweep")
    g.add_argument("--out", default="runs/sweep", help="output directory (results, figures, caches, checkpoints)")
    g.add_argument("--targets", type=float, nargs="+", default=[5.0, 6.0],
                   help="average element-bit budgets for the KL and dMX points")
    g.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=list(METHODS),
                   help="which methods to run, in this order (default: all but kl_learned_rotation, which "
                        "needs --rotation learned: KL scored on the rotation each dMX seed learned, after it)")
    g.add_argument("--uniform-formats", nargs="+", default=list(UNIFORM_FORMATS),
                   help="standard MX formats of the uniform baselines")
    g.add_argument("--max-windows", type=int, default=None,
                   help="score only N perplexity windows (quick runs; not comparable with papers)")
    g.add_argument("--first-window", type=int, default=0,
                   help="skip the first N test windows before scoring (held-out windows: the Pareto study "
                        "(docs/RESULTS.md) scores windows 32-63 with --first-window 32 --max-windows 32, none of "
                        "which chose anything); every point stores its per-window NLLs")
    g.add_argument("--text-file", default=None, help="evaluate perplexity on this UTF-8 text file instead of WikiText-2 test")
    g.add_argument("--seed", type=int, default=RECIPE.seed, help="seed of calibration-window sampling (KL and dMX) and of the random control")
    g.add_argument("--seeds", type=int, default=1,
                   help="seeds per target for KL (calibration draws), dMX and random (seed, seed+1, ...): "
                        "summary.csv and the Pareto plot show their mean and range")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    g.add_argument("--points-from", default=None, metavar="DIR",
                   help="start --out from the points that the sweep in DIR (same settings) has finished, with "
                        "their assignments and rotations but not their zero-shot accuracy, so this run only "
                        "answers --tasks on other questions (e.g. every question where DIR used --limit)")
    k = parser.add_argument_group("KL heuristic")
    k.add_argument("--kl-windows", type=int, default=CalibrationData.kl_windows,
                   help="calibration windows the per-layer KL is measured on (8 x 512 tokens by default)")
    k.add_argument("--kl-seqlen", type=int, default=CalibrationData.kl_seqlen, help="tokens per KL window")
    k.add_argument("--kl-cache-dir", default=None, help="KL score cache (default: <out>/kl_cache)")
    c = parser.add_argument_group("dMX calibration (see `dmx calibrate --help`)")
    c.add_argument("--calib-windows", type=int, default=CALIBRATION_WINDOWS, help="seeded calibration windows")
    c.add_argument("--calib-seqlen", type=int, default=CALIBRATION_SEQLEN, help="tokens per calibration window")
    c.add_argument("--calib-text-file", default=None,
                   help="calibrate on this file instead: UTF-8 text or FineWeb-style .jsonl/.jsonl.gz/.parquet")
    c.add_argument("--calib-source", default="wikitext2", choices=["wikitext2", "fineweb"],
                   help="calibration text without --calib-text-file (fineweb: streamed with --online)")
    c.add_argument("--weighting", default=RECIPE.weighting, choices=["mean", "elements"],
                   help="average bits over layers: each layer once (mean) or by weight count (elements); "
                        "used by dMX's budget and the KL selection alike")
    add_recipe_args(c, defaults=None)
    z = parser.add_argument_group("zero-shot accuracy (optional, needs lm-eval)")
    z.add_argument("--tasks", nargs="+", default=None,
                   help="zero-shot tasks through dmx.llm.zeroshot (e.g. arc_easy piqa, or 'default' for the "
                        "four-task average); adds an accuracy panel. On a finished sweep (same --out and "
                        "settings) it only adds accuracy to the existing points")
    z.add_argument("--limit", type=int, default=None, help="documents per zero-shot task (quick runs)")
    z.add_argument("--zeroshot-batch-size", type=int, default=8, help="lm-eval batch size")
    parser.set_defaults(func=run)
    return parser


#: The recipe flags (``add_recipe_args``) a sweep reads; unset (None) keeps :data:`RECIPE`'s value.
_CALIBRATION_FLAGS = ("steps", "batch_size", "grad_accum", "lam", "lr", "momentum", "t_start", "t_end",
                      "hold_fraction", "checkpoint_every", "final_rounding", "beta_init", "clip_grad_norm",
                      "fractional_scale")


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    """:class:`dmx.llm.sweep.config.SweepConfig` from parsed flags: the model through the shared
    :func:`dmx.commands.model_spec_from_args` and :func:`dmx.llm.rotation.resolve_rotation`, the dMX
    recipe as a :class:`dmx.calibrate.CalibrationConfig` (unset flags keep :data:`RECIPE`'s values)."""
    if getattr(args, "rotation_file", None):
        raise ValueError("dmx sweep learns or builds its rotations itself and takes no --rotation-file; use "
                         "--rotation hadamard|learned (with --rotation-seed), or evaluate a saved rotation with dmx eval")
    model = model_spec_from_args(args, resolve_rotation(args, default=CALIBRATION_ROTATION))
    given = {k: getattr(args, k) for k in _CALIBRATION_FLAGS if getattr(args, k) is not None}
    calibration = dataclasses.replace(
        RECIPE, **given, family=args.family, seed=args.seed, weighting=args.weighting, backend=args.backend,
        # --rotation-lr trains a learned rotation; any other rotation has none
        rotation_lr=args.rotation_lr if model.rotation.learns else RECIPE.rotation_lr)
    tasks = ()
    if args.tasks:  # validated, with 'default' spelled out so the stored settings name the tasks
        tasks = tuple(resolve_task_names(args.tasks, online=args.online))
    return SweepConfig(
        model=model,
        calibration=calibration,
        calibration_data=CalibrationData(text_file=args.calib_text_file, source=args.calib_source,
                                         windows=args.calib_windows, seqlen=args.calib_seqlen,
                                         kl_windows=args.kl_windows, kl_seqlen=args.kl_seqlen),
        evaluation=EvaluationSpec(text_file=args.text_file, seqlen=args.seqlen, max_windows=args.max_windows,
                                  first_window=args.first_window, tasks=tasks, limit=args.limit,
                                  zeroshot_batch_size=args.zeroshot_batch_size),
        plan=SweepPlan(targets=tuple(args.targets), methods=tuple(args.methods), uniform=tuple(args.uniform_formats),
                       seed=args.seed, seeds=args.seeds),
        data_dir=args.data_dir, online=args.online, out_dir=args.out, kl_cache_dir=args.kl_cache_dir,
        progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    """Run the sweep and print one row per point."""
    cfg = config_from_args(args)
    if args.points_from:
        validate_config(cfg)  # bad flags stop before anything is copied
        copied = copy_points(args.points_from, cfg.out_dir, planned_keys(cfg), cfg.identity())
        print(f"copied {len(copied)} finished points from {args.points_from} to {cfg.out_dir}", file=sys.stderr)
    points = run_sweep(cfg)
    accuracy = ["avg_accuracy"] if cfg.evaluation.tasks else []
    columns = ["label", "avg_bits", "storage_bits", "perplexity", *accuracy, "seconds"]
    print_table([[p.get(c) for c in columns] for p in points], columns)
    print(f"results, assignments and figures in {cfg.out_dir}/ (results.csv, pareto.png, assignment_heatmap.png)")
    return 0
