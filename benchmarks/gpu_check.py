"""GPU checks of the torch MX backend, in one script (not run yet: no GPU was available; docs/BACKENDS.md).

1. golden vectors: ``mx_spec.conformance.verify.verify_quantizer`` on the CUDA torch backend (all formats,
   scale modes, roundings; codes and decoded values);
2. CUDA vs CPU bit equality: ``dmx.mx_torch`` on the GPU against numpy ``mx_spec`` on random and
   heavy-tailed float32/bfloat16 tensors, standard formats and the minifloat at integer and
   fractional widths under both fractional scale rules, and the bridge's gradients (torch backend
   on CUDA vs numpy backend);
3. bridge throughput on CPU and CUDA (``benchmarks/bench_bridge.py``);
4. a calibration step of the embedded model on the GPU beside an unquantised bf16 step
   (``benchmarks/bench_calibration_step.py``);
5. with ``--model DIR`` (a local 1-2B causal LM): the paper budget, 20 timed dMX steps at
   ``--batch-size`` x ``--seqlen`` (default 8 x 2048; ``--grad-accum`` splits it, e.g.
   ``--batch-size 2 --grad-accum 4``; ``--checkpointing`` turns on activation checkpointing)
   beside an unquantised bf16 forward+backward on the same batch, extrapolated to 400 steps,
   with the peak GPU memory. Token ids are random (timing only).

    python benchmarks/gpu_check.py --out gpu_check.json [--model /path/to/Llama-3.2-1B]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch


def check_bits(device: str) -> dict:
    from dmx import mx_torch
    from dmx.autograd import mx_qdq_minifloat
    from mx_spec.minifloat import FRACTIONAL_SCALES, quantize_dequantize_minifloat
    from mx_spec.quantize import quantize
    from mx_spec.scale import SCALE_MODES

    g = np.random.default_rng(0)
    tensors = [g.standard_normal((64, 4096)), g.standard_t(1.5, (64, 4096)) * np.exp2(g.integers(-20, 20, (64, 1)))]
    mismatches = 0
    cases = 0
    for a in tensors:
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.from_numpy(a.astype(np.float32)).to(dtype)
            xn = x.float().numpy()
            xd = x.to(device)
            for fmt in ("mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1", "mxint8"):
                for mode in SCALE_MODES:
                    s, e = mx_torch.quantize(xd, fmt, scale_mode=mode)
                    want = quantize(xn, fmt, scale_mode=mode)
                    cases += 1
                    mismatches += int(not (np.array_equal(s.cpu().numpy(), want.scales)
                                           and np.array_equal(e.cpu().numpy(), want.elements)))
            for rule in FRACTIONAL_SCALES:
                for eb, mb in ((2.0, 1.0), (4.0, 3.0), (2.7, 1.7), (3.4, 2.9)):
                    want = quantize_dequantize_minifloat(xn, eb, mb, fractional_scale=rule).view(np.uint32)
                    for compiled in (False, True):  # eager torch, and the compiled backend's fused kernels
                        got = mx_torch.quantize_dequantize_minifloat(xd, eb, mb, fractional_scale=rule,
                                                                     compiled=compiled).cpu().numpy()
                        cases += 1
                        mismatches += int(not np.array_equal(got.view(np.uint32), want))
    grads = {}
    for backend in ("numpy", "torch", "compiled"):
        x = torch.from_numpy(tensors[1][:8].astype(np.float32)).to(device).requires_grad_(True)
        eb = torch.tensor(2.7, device=device, requires_grad=True)
        mb = torch.tensor(1.7, device=device, requires_grad=True)
        mx_qdq_minifloat(x, eb, mb, backend=backend).sum().backward()
        grads[backend] = (x.grad.cpu(), eb.grad.cpu(), mb.grad.cpu())
    grad_equal = all(torch.equal(a, b) for a, b in zip(grads["numpy"], grads["torch"]))
    # compiled: the same gradient to x; its fused width sums add in another order
    compiled_close = torch.equal(grads["numpy"][0], grads["compiled"][0]) and all(
        torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(grads["numpy"][1:], grads["compiled"][1:]))
    return {"cases": cases, "mismatching_cases": mismatches, "gradients_equal": grad_equal,
            "compiled_gradients_close": compiled_close}


def paper_budget(args) -> dict:
    import torch.nn.functional as F

    from dmx.calibrate import CalibrationConfig, objective
    from dmx.llm.pipeline import ModelSpec, load_rotated_model, quantize
    from dmx.wrap import set_calibration_mode

    spec = ModelSpec(model=args.model, dtype="bfloat16", device="cuda", family="fp8_fp4", backend=args.backend)
    model, _ = load_rotated_model(spec)
    if args.checkpointing:
        # non-reentrant: the weights are frozen, so the checkpointed blocks' inputs carry no grad flag
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()  # Hugging Face checkpoints only in training mode (the models have no dropout)
    vocab = model.config.vocab_size
    micro = [torch.randint(0, vocab, (args.batch_size, args.seqlen), device="cuda") for _ in range(args.grad_accum)]

    def timed(fn, n):
        out = []
        for _ in range(n):
            torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            out.append(time.perf_counter() - start)
        return out

    model.requires_grad_(True)

    def base_step():
        for b in micro:
            logits = model(input_ids=b, use_cache=False).logits
            F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), b[:, 1:].reshape(-1)).backward()
        model.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    base = timed(base_step, 3)
    base_mem = torch.cuda.max_memory_allocated() / 2**30
    layers = quantize(model, spec)  # freezes the weights
    set_calibration_mode(model, layers, training=True)
    if args.checkpointing:
        model.train()  # set_calibration_mode keeps the base model in eval mode, where HF skips checkpointing
    params = [p for layer in layers.values() for p in layer.parameters(recurse=False)]
    cfg = CalibrationConfig()
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)

    def dmx_step():
        opt.zero_grad(set_to_none=True)
        for b in micro:
            loss, _, _ = objective(model, layers, b, target_bits=cfg.target_bits, lam=cfg.lam)
            (loss / len(micro)).backward()
        opt.step()

    torch.cuda.reset_peak_memory_stats()
    steps = timed(dmx_step, args.timed_steps)
    return {"model": args.model, "tokens_per_step": args.batch_size * args.grad_accum * args.seqlen,
            "batch_size": args.batch_size, "grad_accum": args.grad_accum, "seqlen": args.seqlen,
            "activation_checkpointing": args.checkpointing,
            "bf16_fwd_bwd_s": statistics.median(base), "dmx_step_s": statistics.median(steps[1:]),
            "ratio": statistics.median(steps[1:]) / statistics.median(base),
            "extrapolated_400_steps_min": 400 * statistics.median(steps[1:]) / 60,
            "peak_gib_baseline": base_mem, "peak_gib_dmx": torch.cuda.max_memory_allocated() / 2**30}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="local directory of a 1-2B causal LM for the paper-budget timing")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--timed-steps", type=int, default=20)
    parser.add_argument("--backend", default="torch", choices=("torch", "compiled"),
                        help="MX backend of the timed calibration steps")
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing in the paper-budget run")
    parser.add_argument("--skip-golden", action="store_true")
    parser.add_argument("--out", default="gpu_check.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check (the CPU checks are the test suite)")
        return 1
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    if not args.skip_golden:
        from dmx.mx_torch import golden_quantizer
        from mx_spec.conformance.verify import verify_quantizer

        golden = verify_quantizer(golden_quantizer("cuda"))
        print(golden.summary(per_format=True))
        report["golden"] = {"passed": golden.n_passed, "failed": golden.n_failed, "skipped": golden.n_skipped}
    report["bits"] = check_bits("cuda")
    print("CUDA vs numpy bit equality:", report["bits"])
    sys.path.insert(0, "benchmarks")
    import bench_bridge
    import bench_calibration_step

    report["bridge"] = bench_bridge.main(["--devices", "cpu", "cuda", "--repeats", "5"])
    report["step_embedded"] = bench_calibration_step.main(["--device", "cuda", "--dtype", "bfloat16", "--batch-size", "8",
                                                           "--seqlen", "512", "--repeats", "5"])
    if args.model:
        report["paper_budget"] = paper_budget(args)
        print(json.dumps(report["paper_budget"], indent=2))
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, default=str)
    ok = report["bits"]["mismatching_cases"] == 0 and report["bits"]["gradients_equal"]
    ok = ok and report.get("golden", {}).get("failed", 0) == 0
    print("GPU CHECK", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
