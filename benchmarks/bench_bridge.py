"""Throughput of the MX bridge (quantize-dequantize, forward and forward+backward) per backend.

One table, one row per (device, backend, operation): the numpy backend (``mx_spec`` on a host
copy), the torch backend (``dmx.mx_torch`` on the tensor's device) and the compiled backend (the
same torch functions fused by ``torch.compile``; compiled in the warm-up, not timed) on the same
float32 tensor, timed alternately so that machine noise hits them alike. Operations:

* ``standard fwd``: ``mx_qdq_standard(x, mxfp4_e2m1)`` (a deployed format, eval path; compiled
  runs the eager torch code here);
* ``minifloat fwd``: ``mx_qdq_minifloat(x, E, M)`` at a fractional width (the calibration path);
* ``minifloat fwd+bwd``: the same plus the backward to x, E and M (the closed form).

Throughput is elements per second of the median run; the speed-up column is numpy time / the
backend's time on the same device. ``--devices cpu cuda`` adds the GPU rows (numpy then pays the
host round trip). ``--out`` writes the rows and the run's provenance as JSON.

    python benchmarks/bench_bridge.py --rows 1024 --cols 2048 --repeats 5 --threads 1 --out results/bench_bridge/cpu_1thread.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from dmx.autograd import BACKENDS, mx_qdq_minifloat, mx_qdq_standard
from dmx.provenance import run_provenance


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _ops(x: torch.Tensor, backend: str, ebits: float, mbits: float):
    def standard():
        mx_qdq_standard(x, "mxfp4_e2m1", backend=backend)

    def minifloat():
        mx_qdq_minifloat(x, ebits, mbits, backend=backend)

    def minifloat_bwd():
        xg = x.detach().requires_grad_(True)
        e = torch.tensor(ebits, device=x.device, requires_grad=True)
        m = torch.tensor(mbits, device=x.device, requires_grad=True)
        mx_qdq_minifloat(xg, e, m, backend=backend).sum().backward()

    return {"standard fwd": standard, "minifloat fwd": minifloat, "minifloat fwd+bwd": minifloat_bwd}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--cols", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--devices", nargs="+", default=["cpu"], help="cpu and/or cuda")
    parser.add_argument("--ebits", type=float, default=2.6, help="fractional exponent width of the minifloat rows")
    parser.add_argument("--mbits", type=float, default=1.7, help="fractional mantissa width of the minifloat rows")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for device in args.devices:
        x = torch.randn(args.rows, args.cols, generator=torch.Generator().manual_seed(0)).to(device)
        ops = {b: _ops(x, b, args.ebits, args.mbits) for b in BACKENDS}
        for name in ops["numpy"]:
            times: dict[str, list[float]] = {b: [] for b in BACKENDS}
            for b in BACKENDS:  # warm-up
                ops[b][name]()
            for _ in range(args.repeats):
                for b in BACKENDS:
                    _sync(device)
                    start = time.perf_counter()
                    ops[b][name]()
                    _sync(device)
                    times[b].append(time.perf_counter() - start)
            med = {b: statistics.median(t) for b, t in times.items()}
            for b in BACKENDS:
                rows.append({"device": device, "backend": b, "op": name, "median_s": med[b],
                             "elements_per_s": x.numel() / med[b], "speedup_vs_numpy": med["numpy"] / med[b],
                             "threads": torch.get_num_threads()})
    print(f"| device | backend | operation | median ms | Melem/s | vs numpy |  ({args.rows}x{args.cols} float32, "
          f"{torch.get_num_threads()} threads)")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['device']} | {r['backend']} | {r['op']} | {r['median_s'] * 1e3:.1f} | "
              f"{r['elements_per_s'] / 1e6:.0f} | {r['speedup_vs_numpy']:.2f}x |")
    if args.out:
        doc = {"rows_x_cols": [args.rows, args.cols], "ebits": args.ebits, "mbits": args.mbits,
               "repeats": args.repeats, "rows": rows,
               "provenance": run_provenance("benchmarks/bench_bridge.py", sys.argv[1:] if argv is None else argv)}
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(doc, handle, indent=2)
    return rows


if __name__ == "__main__":
    main()
