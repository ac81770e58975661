"""KL scoring with and without replaying the blocks before each layer (dmx.llm.prefix_replay), side by side.

Scores the same layers of the embedded SmolLM2-135M (rotated as a calibration is, one layer in
every ``--every``), once with full forwards and once with the prefix replay, in one process, and
reports both times, their ratio and the largest score difference (0: the replay is exact).

    python benchmarks/bench_kl_replay.py --threads 1 --out results/bench_kl_replay/results.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

from dmx.files import atomic_write_text
from dmx.llm.data import calibration_windows
from dmx.llm.kl_baseline import reference_logits, score_layers
from dmx.llm.pipeline import ModelSpec, load_rotated_model, quantize
from dmx.llm.prefix_replay import find_blocks
from dmx.llm.rotation import CALIBRATION_ROTATION
from dmx.provenance import run_provenance


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--windows", type=int, default=2, help="calibration windows")
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--every", type=int, default=15, help="score one layer in this many")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None, help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    provenance = run_provenance("benchmarks/bench_kl_replay.py", sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    spec = ModelSpec(model=args.model, threads=args.threads, rotation=CALIBRATION_ROTATION)
    base, tokenizer = load_rotated_model(spec)
    windows = calibration_windows(tokenizer, args.windows, args.seqlen, 0, data_dir=args.data_dir)
    ref = reference_logits(base, windows)
    model = copy.deepcopy(base)
    layers = quantize(model, spec)
    chosen = {n: layer for i, (n, layer) in enumerate(layers.items()) if i % args.every == 0}
    low, high = "mxfp4_e2m1", "mxfp8_e4m3"
    times, scores = {}, {}
    for replay in (False, True):
        start = time.perf_counter()
        scores[replay] = score_layers(model, chosen, windows, low_format=low, high_format=high, reference=ref,
                                      progress=False, replay=replay)
        times[replay] = time.perf_counter() - start
    _, block_of = find_blocks(model, chosen)
    result = {
        "layers": len(chosen), "blocks": sorted(set(block_of.values())),
        "windows": args.windows, "seqlen": args.seqlen,
        "seconds_full_forwards": round(times[False], 2), "seconds_replay": round(times[True], 2),
        "speedup": round(times[False] / times[True], 3),
        "max_abs_score_difference": max(abs(scores[True][n] - scores[False][n]) for n in chosen),
        "provenance": provenance,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "provenance"}, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
