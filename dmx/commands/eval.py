"""``dmx eval``: WikiText-2 perplexity (and optional zero-shot accuracy) of fake-quantised models.

Evaluates, in order: full precision (``--format fp`` or when nothing else is asked), each
uniform standard MX format given with ``--format``, and each assignment JSON given with
``--assignment``. The model is loaded once; quantised configurations reuse one set of DMX layers.

Rotation: the rotation flags if given, else the rotation the assignments record (a learned one
from its ``.rotation.safetensors`` file), else none; every row (full precision included) is
measured on the same rotated model. Flags that contradict an assignment, or assignments made
under different rotations, are refused (``ValueError`` saying what to pass).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from dmx.assignment import Assignment, apply_assignment, format_element_bits
from dmx.commands import HelpFormatter, add_data_args, add_model_args, add_quant_args, model_spec_from_args, print_table
from dmx.llm.data import check_data_source, test_token_ids
from dmx.files import atomic_write_text
from dmx.llm.models import check_seqlens
from dmx.llm.perplexity import perplexity_of, window_count, window_nlls
from dmx.llm.pipeline import ModelSpec, load_rotated_model, quantize
from dmx.llm.rotation import recorded_rotation, resolve_rotation
from dmx.llm.tasks import check_zeroshot_data
from dmx.llm.zeroshot import checkpoint_file, evaluate_zeroshot

__all__ = ["register", "run", "FULL_PRECISION"]

FULL_PRECISION = "fp"


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``eval`` subparser."""
    parser = subparsers.add_parser(
        "eval",
        help="WikiText-2 perplexity of full precision, uniform MX formats and assignment JSONs",
        description="GPTQ-protocol WikiText-2 test perplexity (rows joined with blank lines, tokenised once, "
                    "non-overlapping --seqlen windows, exp of mean token NLL) of fake-quantised models; "
                    "optionally zero-shot accuracy through lm-eval (--tasks). The model is rotated as the "
                    "rotation flags say, else as the --assignment files record (calibrated under a rotation), "
                    "else not at all.",
        formatter_class=HelpFormatter,
    )
    add_model_args(parser, recorded_rotation=True)
    add_quant_args(parser)
    add_data_args(parser)
    group = parser.add_argument_group("what to evaluate")
    group.add_argument("--format", nargs="+", default=[], metavar="FMT",
                       help="'fp' (full precision) and/or uniform MX formats: mxfp8_e4m3 mxfp8_e5m2 "
                            "mxfp6_e3m2 mxfp6_e2m3 mxfp4_e2m1 mxint8")
    group.add_argument("--assignment", nargs="+", default=[], metavar="JSON",
                       help="assignment files written by `dmx calibrate` / `dmx kl`")
    group.add_argument("--max-windows", type=int, default=None,
                       help="score only N windows (quick runs; not comparable with papers)")
    group.add_argument("--first-window", type=int, default=0,
                       help="skip the first N test windows (held-out windows; the per-window NLLs are written to --out)")
    group.add_argument("--text-file", default=None, help="evaluate perplexity on this UTF-8 text file instead")
    group.add_argument("--no-ppl", action="store_true", help="skip perplexity (e.g. only --tasks)")
    group.add_argument("--tasks", nargs="+", default=None,
                       help="zero-shot tasks through dmx.zeroshot/lm-eval (e.g. arc_easy piqa; 'default' for the paper's set)")
    group.add_argument("--limit", type=int, default=None, help="documents per zero-shot task (quick runs)")
    group.add_argument("--zeroshot-batch-size", type=int, default=8, help="lm-eval batch size")
    group.add_argument("--zeroshot-checkpoint-dir", default=None, metavar="DIR",
                       help="keep each configuration's finished zero-shot tasks in DIR, so rerunning the same "
                            "command after an interruption answers only the tasks still missing (on a full split a "
                            "task is 10-20 min of one core)")
    group.add_argument("--out", default=None, help="also write the results as JSON here")
    group.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=run)
    return parser


def _zeroshot(args, model, tokenizer, checkpoint: Path | None):
    try:
        return evaluate_zeroshot(model, tokenizer, tasks=args.tasks, limit=args.limit,
                                 batch_size=args.zeroshot_batch_size, data_dir=args.data_dir, online=args.online,
                                 checkpoint=checkpoint, restart_unusable_checkpoint=True)
    except ModuleNotFoundError as err:  # lm-eval, an optional extra, is imported on first use
        if not (err.name or "").startswith("lm_eval"):
            raise
        raise ValueError(f"--tasks needs lm-eval (pip install 'dmx-reference[eval]'): {err}") from err


def _zeroshot_checkpoint(args, spec: ModelSpec, label: str, what) -> Path | None:
    """The ``--zeroshot-checkpoint-dir`` file of one configuration: the model as loaded and rotated
    and the configuration's formats tell it apart (not the thread count, which the CLI picks per run)."""
    if not args.zeroshot_checkpoint_dir:
        return None
    model = {k: v for k, v in dataclasses.asdict(spec).items() if k != "threads"}
    formats = {"formats": dict(what.formats), "block_size": what.block_size} if isinstance(what, Assignment) else what
    return checkpoint_file(args.zeroshot_checkpoint_dir, Path(label).stem, {"model": model, "formats": formats})


def _configurations(args) -> list[tuple[str, object]]:
    configs: list[tuple[str, object]] = []
    for fmt in args.format:
        if fmt != FULL_PRECISION:
            format_element_bits(fmt)  # unknown format -> ValueError listing the valid ones, before loading
        configs.append((fmt, fmt))
    for path in args.assignment:
        configs.append((path, Assignment.from_json(path)))
    if not configs:
        configs.append((FULL_PRECISION, FULL_PRECISION))
    # full precision must run before the model is wrapped
    return sorted(configs, key=lambda c: c[1] != FULL_PRECISION)


def run(args: argparse.Namespace) -> int:
    """Evaluate every requested configuration and print one table row each."""
    configs = _configurations(args)
    if args.first_window < 0:
        raise ValueError(f"--first-window must be 0 or more (test windows skipped), got {args.first_window}")
    if not args.no_ppl:  # before the (long) model load
        check_data_source(args.data_dir, split="test", online=args.online, text_file=args.text_file)
        check_seqlens(args.model, {"seqlen": args.seqlen}, trust_remote_code=args.trust_remote_code)
    if args.tasks:
        check_zeroshot_data(args.tasks, args.data_dir, online=args.online)
    rotation = resolve_rotation(args, [recorded_rotation(what.provenance, label) for label, what in configs
                                       if isinstance(what, Assignment)])
    spec = model_spec_from_args(args, rotation)
    model, tokenizer = load_rotated_model(spec)
    ids = None if args.no_ppl else test_token_ids(tokenizer, args.data_dir, online=args.online, text_file=args.text_file)
    layers = None
    results = []
    for label, what in configs:
        if what != FULL_PRECISION:
            if layers is None:
                layers = quantize(model, spec)
                for layer in layers.values():
                    layer.eval()
            assignment = what if isinstance(what, Assignment) else Assignment.from_formats(
                {name: what for name in layers}, block_size=args.block_size)
            apply_assignment(layers, assignment)
            bits, storage = assignment.element_bits, assignment.storage_bits
        else:
            bits = storage = None
        row = {"config": label, "element_bits": bits, "storage_bits": storage}
        if isinstance(what, Assignment):  # which method made it (dmx, kl, random, uniform)
            row["method"] = what.provenance.get("method")
        if ids is not None:
            nlls = window_nlls(model, ids, seqlen=args.seqlen, max_windows=args.max_windows,
                               first_window=args.first_window, progress=not args.no_progress)
            row["ppl"] = perplexity_of(nlls, args.seqlen)
            row["window_nlls"] = [float(v) for v in nlls]
        if args.tasks:
            row["zeroshot"] = _zeroshot(args, model, tokenizer, _zeroshot_checkpoint(args, spec, label, what))
            row["zeroshot_avg_acc"] = row["zeroshot"]["average"]["acc"]
        results.append(row)
    columns = ["config", "element_bits", "storage_bits"] + (["ppl"] if ids is not None else []) + \
              (["zeroshot_avg_acc"] if args.tasks else [])
    print_table([[r.get(c) for c in columns] for r in results], columns)
    if ids is not None:
        n = window_count(ids.shape[1], args.seqlen, args.max_windows, args.first_window)
        print(f"perplexity: {n} window(s) of {args.seqlen} tokens from window {args.first_window}, GPTQ protocol")
    print(f"rotation: {rotation.flags()} ({rotation.source})")
    if args.out:
        # the thread count is recorded: float round-off, hence run-to-run spread, depends on it
        atomic_write_text(args.out, json.dumps({"model": args.model, "seqlen": args.seqlen,
                                                "max_windows": args.max_windows, "first_window": args.first_window,
                                                "rotation": rotation.flags(),
                                                "threads": torch.get_num_threads(), "results": results},
                                               indent=2) + "\n")
    return 0
