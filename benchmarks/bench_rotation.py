"""Effect of Hadamard rotations on uniform MX formats, and their cost in a calibration step.

Part 1 (quality): WikiText-2 test perplexity (GPTQ protocol, the first ``--windows`` windows of
``--seqlen`` tokens, identical windows for every row) of the embedded SmolLM2-135M with every
decoder linear fake-quantised (weights and input activations) in one uniform MX format, without
and with fixed Hadamard rotations (``dmx.llm.rotation.apply_rotation(kind="hadamard")`` with
``placement="online"`` and ``"folded"``),
plus the unquantised model with and without rotation (equal up to float round-off).

Part 2 (cost): one dMX calibration step (soft formats, dMX objective, backward, SGD on the
offsets; for ``learned`` also the Cayley SGD step on the rotations; ``--grad-accum`` micro-batches
per step as in ``dmx.calibrate``) without rotation, with
fixed Hadamard rotations (``hadamard``: block-diagonal 64x64 Hadamards before every linear, the
default; ``hadamard-32``: 32x32 blocks, one MX block each; ``hadamard-full``: one full-width Hadamard before every linear; ``hadamard-folded``:
QuaRot layout with online Hadamards before o_proj/down_proj) and with learned rotations,
alternated step by step so machine noise hits all alike; medians are reported.

Results are written (atomically, after every number) to ``--out`` so an interrupted run keeps
what it measured.

    python benchmarks/bench_rotation.py --windows 4 --seqlen 512 --out rotation.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import statistics
import time

import torch

from dmx.calibrate import CalibrationConfig, objective
from dmx.llm.data import calibration_windows, test_token_ids
from dmx.files import atomic_write_text
from dmx.llm.models import load_model
from dmx.llm.perplexity import perplexity
from dmx.llm.pipeline import quantize_model
from dmx.llm.rotation import (CayleySGD, RotationSpec, apply_rotation, rotation_parameters,
                          shared_rotated_weights)
from dmx.wrap import set_calibration_mode, set_fixed_format

DEFAULT_FORMATS = ("mxfp4_e2m1", "mxfp6_e3m2", "mxfp8_e4m3")


def _save(result: dict, path: str | None) -> None:
    if path:
        atomic_write_text(path, json.dumps(result, indent=2))


#: Benchmark rows: label -> the rotation (its seed is the --seed flag's).
ROTATIONS = {"none": RotationSpec("none"), "hadamard": RotationSpec("hadamard"),
             "hadamard-32": RotationSpec("hadamard", block=32),
             "hadamard-full": RotationSpec("hadamard", block=None),
             "hadamard-folded": RotationSpec("hadamard", placement="folded"),
             "learned": RotationSpec("learned"),
             # learned, but the rotated weights rebuilt for every micro-batch (before shared_rotated_weights)
             "learned-rebuilt": RotationSpec("learned")}


def _rotated_copy(base, label: str, seed: int):
    if label not in ROTATIONS:
        raise ValueError(f"unknown rotation {label!r}; choose from {list(ROTATIONS)}")
    model = copy.deepcopy(base)
    apply_rotation(model, dataclasses.replace(ROTATIONS[label], seed=seed))
    return model


def quality(base, test_ids, args, result: dict) -> None:
    table = result.setdefault("perplexity", {})
    for kind in args.rotations:
        model = _rotated_copy(base, kind, args.seed)
        row = table.setdefault(kind, {})
        row["fp32"] = perplexity(model, test_ids, seqlen=args.seqlen, max_windows=args.windows)
        _save(result, args.out)
        quantize_model(model)
        for fmt in args.formats:
            set_fixed_format(model, fmt)
            row[fmt] = perplexity(model, test_ids, seqlen=args.seqlen, max_windows=args.windows)
            print(f"  rotation={kind:9s} {fmt:12s} ppl {row[fmt]:.3f}", flush=True)
            _save(result, args.out)
        del model
    for kind in args.rotations:
        if kind != "none" and "none" in table:
            table.setdefault(f"ratio_none_over_{kind}", {}).update(
                {fmt: table["none"][fmt] / table[kind][fmt] for fmt in args.formats})
    _save(result, args.out)


def cost(base, tokenizer, args, result: dict) -> None:
    cfg = CalibrationConfig()
    batch = calibration_windows(tokenizer, args.batch_size, args.step_seqlen, 0, data_dir=args.data_dir)
    runs = {}
    for kind in args.step_kinds:
        model = _rotated_copy(base, kind, args.seed)
        layers = quantize_model(model)
        set_calibration_mode(model, layers, training=True)
        offsets = [p for layer in layers.values() for p in layer.parameters(recurse=False)]  # beta_hat(s)
        sgd = torch.optim.SGD(offsets, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
        rot = rotation_parameters(model)
        cayley = CayleySGD(rot, lr=1.5) if rot else None
        runs[kind] = (model, layers, sgd, cayley)

    def step(kind: str) -> float:
        model, layers, sgd, cayley = runs[kind]
        start = time.perf_counter()
        sgd.zero_grad(set_to_none=True)
        if cayley is not None:
            cayley.zero_grad(set_to_none=True)
        # as dmx.calibrate does: with micro-batches the rotated weights are built once per step
        share = args.grad_accum > 1 and kind != "learned-rebuilt"
        with shared_rotated_weights(model) if share else contextlib.nullcontext():
            for _ in range(args.grad_accum):
                loss, _, _ = objective(model, layers, batch, target_bits=cfg.target_bits, lam=cfg.lam)
                (loss / args.grad_accum).backward()
        sgd.step()
        if cayley is not None:
            cayley.step()
        return time.perf_counter() - start

    for kind in runs:  # warm-up
        step(kind)
    times: dict[str, list[float]] = {kind: [] for kind in runs}
    for _ in range(args.repeats):
        for kind in runs:
            times[kind].append(step(kind))
    medians = {kind: statistics.median(t) for kind, t in times.items()}
    result["calibration_step"] = {
        "batch": [args.batch_size, args.step_seqlen], "grad_accum": args.grad_accum, "repeats": args.repeats, "median_s": medians,
        "all_s": times, "overhead_vs_none": {k: medians[k] / medians["none"] - 1 for k in medians if "none" in medians},
    }
    for kind, t in medians.items():
        print(f"  calibration step rotation={kind:9s} {t:.3f} s", flush=True)
    _save(result, args.out)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--windows", type=int, default=4, help="test windows for perplexity")
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--formats", nargs="+", default=list(DEFAULT_FORMATS))
    parser.add_argument("--seed", type=int, default=0, help="rotation seed")
    parser.add_argument("--batch-size", type=int, default=1, help="calibration step batch")
    parser.add_argument("--step-seqlen", type=int, default=256)
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per calibration step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rotations", nargs="+", default=["none", "hadamard-32", "hadamard", "hadamard-full", "hadamard-folded"],
                        choices=list(ROTATIONS), help="rows of the perplexity table")
    parser.add_argument("--step-kinds", nargs="+", default=["none", "hadamard", "hadamard-folded", "learned"],
                        choices=list(ROTATIONS))
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="JSON results (rewritten after every number)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base, tokenizer = load_model(args.model)
    result: dict = {"model": args.model, "windows": args.windows, "seqlen": args.seqlen, "seed": args.seed,
                    "threads": torch.get_num_threads()}
    if not args.skip_quality:
        quality(base, test_token_ids(tokenizer, args.data_dir), args, result)
    if not args.skip_cost:
        cost(base, tokenizer, args, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
