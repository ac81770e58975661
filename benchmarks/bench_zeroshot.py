"""Wall time and accuracy of a 0-shot lm-eval run (default: the four offline tasks, --limit 100).

Evaluates the embedded SmolLM2-135M (or --model) in full precision and, optionally, as
fake-quantised models: uniform MX formats (--format mxfp8_e4m3 mxfp4_e2m1 ...) and per-layer
assignments saved by `dmx calibrate` / `dmx kl` (--assignment NAME=path.json ...). Each
configuration is timed on its own; the script prints one markdown accuracy table per
configuration (which tasks made up each average included) and a summary, and writes all results
to --out as JSON (atomically). Per-task checkpoints under --checkpoint-dir make an interrupted
run resumable.

    python benchmarks/bench_zeroshot.py --limit 100                      # the 20-minute target
    python benchmarks/bench_zeroshot.py --limit 100 --format mxfp8_e4m3 mxfp4_e2m1
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from dmx.assignment import Assignment, apply_assignment
from dmx.files import atomic_write_text
from dmx.llm.pipeline import ModelSpec, load_rotated_model, quantize
from dmx.llm.tasks import resolve_task_names
from dmx.wrap import set_fixed_format
from dmx.llm.zeroshot import evaluate_zeroshot, results_table

FULL_PRECISION = "full-precision"


def _configurations(args) -> list[tuple[str, str, str | None]]:
    """(label, kind, argument) per model variant: full precision, uniform formats, assignments."""
    configs = [(FULL_PRECISION, "fp", None)]
    configs += [(fmt, "uniform", fmt) for fmt in args.format]
    for spec in args.assignment:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"--assignment takes NAME=path.json (e.g. dmx-4.5=runs/a.json); got {spec!r}")
        configs.append((label, "assignment", path))
    return configs


def _variant(model, kind: str, argument: str | None, spec: ModelSpec):
    """The model to evaluate: the original, or a fake-quantised deep copy."""
    if kind == "fp":
        return model
    quantised = copy.deepcopy(model)
    layers = quantize(quantised, spec)
    if kind == "uniform":
        set_fixed_format(quantised, argument)
    else:
        apply_assignment(layers, Assignment.from_json(argument))
    quantised.eval()
    return quantised


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tasks", nargs="+", default=["default"])
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--data-dir", default=None, help="offline data directory (else $DMX_DATA_DIR)")
    parser.add_argument("--online", action="store_true", help="stock lm-eval tasks from the HF hub")
    parser.add_argument("--format", nargs="*", default=[], help="uniform MX formats to evaluate too")
    parser.add_argument("--assignment", nargs="*", default=[], help="NAME=assignment.json to evaluate too")
    parser.add_argument("--family", default="fp8_fp4", help="format family used to wrap the linears")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--checkpoint-dir", default=None, help="per-configuration resumable results")
    parser.add_argument("--out", default="bench_zeroshot.json")
    args = parser.parse_args(argv)

    tasks = None if args.tasks == ["default"] else args.tasks
    resolve_task_names(tasks, online=args.online)  # bad names fail before the model loads
    configs = _configurations(args)
    spec = ModelSpec(model=args.model, family=args.family, threads=args.threads or None)
    start = time.perf_counter()
    model, tokenizer = load_rotated_model(spec)
    load_s = time.perf_counter() - start

    report = {"model": args.model, "load_s": load_s, "threads": torch.get_num_threads(),
              "configurations": {}}
    for label, kind, argument in configs:
        variant = _variant(model, kind, argument, spec)
        checkpoint = (Path(args.checkpoint_dir) / f"{label}.json") if args.checkpoint_dir else None
        start = time.perf_counter()
        result = evaluate_zeroshot(variant, tokenizer, tasks=tasks, limit=args.limit,
                                   batch_size=args.batch_size, data_dir=args.data_dir,
                                   online=args.online, checkpoint=checkpoint)
        result["wall_s"] = time.perf_counter() - start
        report["configurations"][label] = result
        print(f"\n### {args.model}, {label} ({result['wall_s'] / 60:.1f} min)\n")
        print(results_table(result))
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")

    print(f"\nmodel load {load_s:.0f} s, torch threads {report['threads']}")
    print("| configuration | avg acc (%) | avg acc_norm (%) | tasks | wall (min) |")
    print("|---|---:|---:|---|---:|")
    for label, result in report["configurations"].items():
        avg = result["average"]
        print(f"| {label} | {100 * avg['acc']:.1f} | {100 * avg['acc_norm']:.1f} | "
              f"{', '.join(avg['tasks'])} | {result['wall_s'] / 60:.1f} |")
    print(f"\nresults written to {args.out}")
    return report


if __name__ == "__main__":
    main()
