"""Cost of one dMX calibration step versus an unquantised fp32 forward+backward, side by side.

Both are measured in the same process on the same batch of WikiText-2 validation windows,
alternating (baseline, dMX, baseline, dMX, ...) so that machine noise hits both alike; the
reported ratio is median(dMX step) / median(baseline). Baseline = the unquantised model's
forward + backward of the next-token cross-entropy with gradients for all weights (an ordinary
training step without the optimiser update). dMX step = forward of the fake-quantised model
(soft formats, weight + input MX quantisation of every decoder linear), the dMX objective,
backward to the offsets only, and the SGD update. Peak resident memory of the process is
reported too (it includes both models).

    python benchmarks/bench_calibration_step.py --batch-size 4 --seqlen 256 --repeats 5
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import time

import torch
import torch.nn.functional as F


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from dmx.calibrate import CalibrationConfig, objective
    from dmx.data import calibration_windows
    from dmx.models import load_model
    from dmx.quantized import quantize_model, set_calibration_mode

    base, tokenizer = load_model(args.model, device=args.device)
    batch = calibration_windows(tokenizer, args.batch_size, args.seqlen, 0, data_dir=args.data_dir).to(args.device)
    quant = copy.deepcopy(base)
    layers = quantize_model(quant)
    set_calibration_mode(quant, layers, training=True)
    cfg = CalibrationConfig()
    params = [p for layer in layers.values() for p in layer.parameters(recurse=False)]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    base.requires_grad_(True)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def baseline_step() -> float:
        start = time.perf_counter()
        logits = base(input_ids=batch, use_cache=False).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        loss.backward()
        base.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - start

    def dmx_step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss, _, _ = objective(quant, layers, batch, target_bits=cfg.target_bits, lam=cfg.lam)
        loss.backward()
        optimizer.step()
        sync()
        return time.perf_counter() - start

    baseline_step(), dmx_step()  # warm-up
    base_times, dmx_times = [], []
    for _ in range(args.repeats):
        base_times.append(baseline_step())
        dmx_times.append(dmx_step())
    result = {
        "model": args.model, "device": args.device, "batch_size": args.batch_size, "seqlen": args.seqlen,
        "threads": torch.get_num_threads(), "repeats": args.repeats,
        "baseline_fwd_bwd_s": statistics.median(base_times), "dmx_step_s": statistics.median(dmx_times),
        "baseline_all_s": base_times, "dmx_all_s": dmx_times, "peak_rss_gib": _peak_rss_gib(),
    }
    result["ratio"] = result["dmx_step_s"] / result["baseline_fwd_bwd_s"]
    print(f"{args.model} batch {args.batch_size}x{args.seqlen} on {args.device} ({result['threads']} threads)")
    print(f"  unquantised fp32 fwd+bwd : {result['baseline_fwd_bwd_s']:.3f} s (median of {args.repeats})")
    print(f"  dMX calibration step     : {result['dmx_step_s']:.3f} s")
    print(f"  ratio                    : {result['ratio']:.2f}x (target <= 3x)")
    print(f"  peak RSS (both models)   : {result['peak_rss_gib']:.2f} GiB")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
