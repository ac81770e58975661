"""``dmx calibrate``: learn a per-layer MX assignment for a causal LM and write it as JSON."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

from dmx.calibrate import CalibrationConfig, calibrate, check_checkpoint
from dmx.checkpoint import checkpoint_exists, remove_checkpoint
from dmx.commands import HelpFormatter, add_data_args, add_model_args, add_quant_args, model_spec_from_args, print_table
from dmx.llm.data import (CALIBRATION_SEQLEN, CALIBRATION_SOURCES, CALIBRATION_WINDOWS, calibration_token_ids, check_calibration_source, check_data_source,
                      sample_windows, test_token_ids)
from dmx.distributed import init_from_env
from dmx.llm.models import check_seqlens, context_length
from dmx.llm.perplexity import perplexity
from dmx.llm.pipeline import load_rotated_model, quantize
from dmx.provenance import model_provenance, token_hash
from dmx.llm.rotation import CALIBRATION_ROTATION, resolve_rotation, save_rotation_beside
from dmx.llm.rotation.training import rotation_setup, rotation_trainables
from mx_spec.minifloat import FRACTIONAL_SCALES

__all__ = ["RECIPE", "register", "run", "config_from_args", "add_recipe_args", "data_description"]

#: The calibration recipe both ``dmx calibrate`` and ``dmx sweep`` default to (one source of defaults).
RECIPE = CalibrationConfig()


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``calibrate`` subparser."""
    parser = subparsers.add_parser(
        "calibrate",
        help="learn one MX format per decoder linear under an average-bit budget (dMX)",
        description="Calibrate dMX offsets on WikiText-2 validation windows (or a text file) and write "
                    "the assignment {layer: MX format} with achieved bits and provenance as JSON. The model "
                    "is rotated first, as the authors always do: by default a fixed block-diagonal Hadamard "
                    "(64) on every linear input, --rotation learned for theirs, --rotation none for plain MX (learned: trained "
                    "jointly with the offsets by Cayley SGD); the rotation is saved next to the assignment "
                    "as <out stem>.rotation.safetensors; `dmx eval/export` then re-apply it automatically.",
        formatter_class=HelpFormatter,
    )
    add_model_args(parser, default_rotation=CALIBRATION_ROTATION)
    add_quant_args(parser)
    add_data_args(parser)
    parser.set_defaults(seqlen=CALIBRATION_SEQLEN, func=run)
    group = parser.add_argument_group("calibration")
    group.add_argument("--text-file", default=None,
                       help="calibrate on this file instead: UTF-8 text, or FineWeb-style documents "
                            "(.jsonl, .jsonl.gz, .parquet with a 'text' field)")
    group.add_argument("--calib-source", default="wikitext2", choices=list(CALIBRATION_SOURCES),
                       help="calibration text without --text-file: WikiText-2 validation (local or --online), or "
                            "fineweb (the authors' data; streamed with --online)")
    group.add_argument("--n-windows", type=int, default=CALIBRATION_WINDOWS, help="number of seeded random calibration windows")
    group.add_argument("--target-bits", type=float, default=RECIPE.target_bits,
                       help="average element-bit budget (within the family's range)")
    group.add_argument("--schedule", default=RECIPE.schedule_name,
                       help="temperature schedule (dmx.anneal.SCHEDULES: exponential, linear, cosine, constant, round_ste)")
    group.add_argument("--weighting", default=RECIPE.weighting, choices=["mean", "elements"],
                       help="average bits over layers: plain mean or weighted by weight elements")
    add_recipe_args(group, defaults=RECIPE)
    group.add_argument("--seed", type=int, default=RECIPE.seed, help="seed of window sampling and order")
    group.add_argument("--checkpoint-dir", default=None,
                       help="directory for atomic checkpoints, kept after success (then `--resume --final-rounding budget` "
                            "re-deploys the finished offsets); default: <out>.ckpt next to --out, removed after success")
    group.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir")
    group.add_argument("--out", default="assignment.json", help="where to write the assignment JSON")
    group.add_argument("--eval-windows", type=int, default=0,
                       help="after calibrating, WikiText-2 test perplexity on this many --eval-seqlen windows (0: skip)")
    group.add_argument("--eval-seqlen", type=int, default=2048, help="window length of the optional perplexity check")
    group.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def add_recipe_args(group, *, defaults: CalibrationConfig | None) -> None:
    """The calibration flags ``dmx calibrate`` and ``dmx sweep`` share, defaulting to :data:`RECIPE`.

    ``defaults``: the config whose values the flags default to (``RECIPE``); ``None`` (``dmx
    sweep``): unset flags stay ``None`` and keep ``RECIPE``'s values, which the help states (a
    sweep point records the settings that differ from them, :meth:`dmx.llm.sweep.config.SweepConfig.recorded_calibration`).
    Either way both commands calibrate identically without flags.
    """

    def default(name: str):
        return None if defaults is None else getattr(defaults, name)

    def shown(text: str, name: str) -> str:
        value = getattr(RECIPE, name)
        silent = defaults is not None or value is None or "default" in text  # as HelpFormatter does
        return text if silent else f"{text} (default: {value})"

    group.add_argument("--steps", type=int, default=default("steps"), help=shown("optimiser steps", "steps"))
    group.add_argument("--batch-size", type=int, default=default("batch_size"),
                       help=shown("windows per micro-batch", "batch_size"))
    group.add_argument("--grad-accum", type=int, default=default("grad_accum"),
                       help=shown("micro-batches accumulated per optimiser step", "grad_accum"))
    group.add_argument("--lam", type=float, default=default("lam"),
                       help=shown("weight of the bit-budget hinge penalty", "lam"))
    group.add_argument("--lr", type=float, default=default("lr"), help=shown("SGD learning rate on the offsets", "lr"))
    group.add_argument("--momentum", type=float, default=default("momentum"),
                       help=shown("SGD (Nesterov) momentum", "momentum"))
    group.add_argument("--t-start", type=float, default=default("t_start"),
                       help="start temperature (default: schedule's, 0.4)")
    group.add_argument("--t-end", type=float, default=default("t_end"), help="final temperature (default: schedule's, 20)")
    group.add_argument("--hold-fraction", type=float, default=default("hold_fraction"),
                       help="fraction of steps at --t-start (default: schedule's, 0.6)")
    group.add_argument("--checkpoint-every", type=int, default=default("checkpoint_every"),
                       help=shown("steps between checkpoints", "checkpoint_every"))
    group.add_argument("--final-rounding", default=default("final_rounding"), choices=["threshold", "budget"],
                       help=shown("deployed formats: threshold = the method's rule (|beta_hat| > 1 -> high; may end "
                                  "above the budget), budget = fill the budget exactly, highest |beta_hat| first "
                                  "(never above it)", "final_rounding"))
    group.add_argument("--beta-init", type=float, default=default("beta_init"),
                       help=shown("offset every layer starts from; 0 = the authors' (all layers near the low format), "
                                  "1 = this project's first default (docs/FIDELITY.md)", "beta_init"))
    group.add_argument("--clip-grad-norm", type=float, default=default("clip_grad_norm"),
                       help=shown("clip the joint gradient norm of offsets (and rotations) per step; 1.0 = the "
                                  "Hugging Face trainer default the authors train with, 0 = no clipping",
                                  "clip_grad_norm"))
    group.add_argument("--fractional-scale", choices=list(FRACTIONAL_SCALES), default=default("fractional_scale"),
                       help=shown("block scale at fractional widths while learning: maxfloat = the authors' "
                                  "floor(log2 amax) - floor(log2 max_normal), emax = floor(log2 amax - emax); "
                                  "identical at every deployable format", "fractional_scale"))


def config_from_args(args: argparse.Namespace):
    """:class:`dmx.calibrate.CalibrationConfig` from parsed flags."""
    return CalibrationConfig(
        family=args.family, target_bits=args.target_bits, lam=args.lam, steps=args.steps,
        batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr, momentum=args.momentum,
        t_start=args.t_start, t_end=args.t_end, hold_fraction=args.hold_fraction,
        schedule_name=args.schedule, weighting=args.weighting, checkpoint_every=args.checkpoint_every,
        seed=args.seed, rotation_lr=args.rotation_lr, final_rounding=args.final_rounding,
        beta_init=args.beta_init, clip_grad_norm=args.clip_grad_norm, fractional_scale=args.fractional_scale,
        backend=args.backend,
    )


def data_description(args: argparse.Namespace) -> str:
    """What the calibration text was, as recorded in the assignment's provenance (``data``)."""
    if args.text_file:
        return args.text_file
    if args.calib_source == "fineweb":
        return "HuggingFaceFW/fineweb sample-10BT (hub, streamed)"
    return "wikitext-2-v1/validation (hub)" if args.online else "wikitext-2-tokenized/valid.txt"


def run(args: argparse.Namespace) -> int:
    """Load, quantise, calibrate, write the JSON, print a summary table."""
    cfg = config_from_args(args)
    cfg.validate()  # fail on a bad budget before loading anything
    # under `accelerate launch` / torchrun: one process per device, the global batch split across them
    rank, n_procs = init_from_env(args.device)
    if n_procs > 1 and args.device.startswith("cuda") and args.device_map is None:
        args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    check_calibration_source(args.calib_source, online=args.online, text_file=args.text_file)
    out = Path(args.out)
    checkpoint_dir = Path(args.checkpoint_dir) if args.checkpoint_dir else out.with_suffix(".ckpt")
    started = time.perf_counter()
    # everything that can be checked without the model, before the (long) load
    check_data_source(args.data_dir, split="calibration", online=args.online, text_file=args.text_file)
    if args.eval_windows > 0:
        check_data_source(args.data_dir, split="test", online=args.online)
    check_seqlens(args.model, {"seqlen": args.seqlen, "eval_seqlen": args.eval_seqlen if args.eval_windows > 0 else None},
                  trust_remote_code=args.trust_remote_code)
    check_checkpoint(str(checkpoint_dir), cfg, resume=args.resume, announce=False)  # calibrate() announces
    spec = model_spec_from_args(args, resolve_rotation(args, default=CALIBRATION_ROTATION))
    model, tokenizer = load_rotated_model(spec, trainable=True)
    limit = context_length(model)
    if limit is not None and args.seqlen > limit:
        raise ValueError(f"--seqlen {args.seqlen} exceeds the model's context length {limit}; use --seqlen {limit} or less")
    ids = calibration_token_ids(tokenizer, args.data_dir, online=args.online, text_file=args.text_file,
                                source=args.calib_source)
    windows = sample_windows(ids, args.n_windows, args.seqlen, args.seed)
    layers = quantize(model, spec)
    provenance = {**model_provenance(spec), "data": data_description(args), "data_sha256": token_hash(ids)}
    try:
        assignment = calibrate(model, layers, windows, cfg, trainables=rotation_trainables(model, cfg),
                               model_setup=rotation_setup(model), checkpoint_dir=str(checkpoint_dir),
                               resume=args.resume, provenance=provenance, progress=not args.no_progress)
    except KeyboardInterrupt:
        if rank == 0 and checkpoint_exists(checkpoint_dir):
            print("dmx calibrate: the same command with --resume continues it", file=sys.stderr)
        raise
    if rank != 0:
        return 0  # rank 0 evaluates and writes the results
    rows = []
    if args.eval_windows > 0:
        test_ids = test_token_ids(tokenizer, args.data_dir, online=args.online)
        ppl = perplexity(model, test_ids, seqlen=args.eval_seqlen, max_windows=args.eval_windows,
                         progress=not args.no_progress)
        assignment.provenance["quick_eval"] = {"wikitext2_test_ppl": ppl, "windows": args.eval_windows,
                                               "seqlen": args.eval_seqlen}
    assignment.provenance["wall_seconds"] = round(time.perf_counter() - started, 1)
    recorded, saved_rotation = save_rotation_beside(model, out)
    assignment.provenance.update(recorded)
    assignment.to_json(out)
    if args.checkpoint_dir is None:
        # the assignment now holds the result; drop our default <out>.ckpt/ so a rerun starts fresh.
        # A --checkpoint-dir the user named stays: `--resume --final-rounding ...` re-deploys it.
        remove_checkpoint(checkpoint_dir)
    for fmt, count in sorted(Counter(assignment.formats.values()).items()):
        rows.append(["layers at " + fmt, count])
    rows += [["average element bits", assignment.element_bits],
             ["average element bits (by params)", assignment.element_bits_by_params],
             ["storage bits (incl. E8M0 scales)", assignment.storage_bits],
             ["target element bits", cfg.target_bits],
             ["final CE (calibration batch)", assignment.provenance["final_metrics"].get("ce")]]
    if "quick_eval" in assignment.provenance:
        rows.append([f"WikiText-2 test ppl ({args.eval_windows} x {args.eval_seqlen})",
                     assignment.provenance["quick_eval"]["wikitext2_test_ppl"]])
    if saved_rotation is not None:
        rows.append([f"{recorded['rotation']['kind']} rotation written to", str(saved_rotation)])
    rows += [["wall time (s)", assignment.provenance["wall_seconds"]], ["assignment written to", str(out)]]
    print_table(rows, ["quantity", "value"])
    return 0
