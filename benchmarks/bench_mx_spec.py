"""Quantize + dequantize throughput of mx_spec vs torchao's ``to_mx`` + ``to_dtype``, single-threaded.

Usage::

    python benchmarks/bench_mx_spec.py                 # 2^24 float32 values, every format
    python benchmarks/bench_mx_spec.py --log2-n 20 --formats mxfp4_e2m1 --repeats 5

For each MX format, both implementations run on the same 2^N float32 values (standard normal
times a per-row log-uniform magnitude, laid out as rows of 4096 blocked along the last axis,
block 32, scale mode ``floor``, RNE).  The best of ``--repeats`` wall-clock timings of
quantize + dequantize to float32 is reported as elements per second, with the ratio
mx_spec / torchao in wall time and in process CPU time (steadier on a shared machine), and the two outputs are compared bit for bit: scale codes, element codes and
dequantized float32 values (torchao has no MXINT8).  Threads are pinned to one (numpy's BLAS
and OpenMP via the environment before import, ``torch.set_num_threads(1)``).  Prints a markdown
table.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import mx_spec  # noqa: E402
from dmx.provenance import run_provenance  # noqa: E402
from mx_spec.atomic import atomic_write_text  # noqa: E402
from mx_spec.formats import MX_FORMATS  # noqa: E402

torch.set_num_threads(1)


def _load_adapter():
    path = Path(__file__).resolve().parent / "torchao_mx_adapter.py"
    spec = importlib.util.spec_from_file_location("torchao_mx_adapter", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_data(log2_n: int, row: int = 4096, seed: int = 0) -> np.ndarray:
    """2^log2_n float32 values, rows of ``row``: N(0,1) times 2^U(-20, 20) per row."""
    n = 1 << log2_n
    row = min(row, n)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n // row, row), dtype=np.float32)
    x *= np.exp2(rng.uniform(-20, 20, size=(n // row, 1))).astype(np.float32)
    return x


def best_time(fn, repeats: int) -> tuple[tuple[float, float], object]:
    """((best wall seconds, best process CPU seconds), last output) over ``repeats`` calls.

    CPU time is reported too because on a shared machine wall time also counts waiting for a
    core; single-threaded, CPU time is the work done.
    """
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return (wall, cpu), out


def bench_format(fmt: str, x: np.ndarray, repeats: int, adapter) -> dict:
    def ours():
        mx = mx_spec.quantize(x, fmt)
        return mx, mx_spec.dequantize(mx, dtype=np.float32)

    t_ours, (mx, back) = best_time(ours, repeats)
    row = {"format": fmt, "n": x.size, "ours_s": t_ours, "theirs_s": None, "exact": "n/a (no torchao MXINT8)"}
    if fmt in adapter.TORCHAO_ELEM_DTYPES:
        t = torch.from_numpy(x)

        def theirs():
            with torch.inference_mode():
                return adapter.torchao_quantize_dequantize_last_axis(t, fmt)

        t_theirs, (scale, data, tback) = best_time(theirs, repeats)
        row["theirs_s"] = t_theirs
        scales_t, codes_t = adapter.torchao_quantize(x, fmt)  # same call, codes in mx_spec's layout
        same_scales = np.array_equal(scales_t, mx.scales)
        same_codes = np.array_equal(codes_t, mx.elements)
        same_values = np.array_equal(tback.numpy().view(np.uint32), back.view(np.uint32))
        row["exact"] = "yes" if (same_scales and same_codes and same_values) else (
            f"NO (scales {'ok' if same_scales else 'differ'}, codes {'ok' if same_codes else 'differ'}, "
            f"values {'ok' if same_values else 'differ'})")
    return row


def render(rows: list[dict]) -> str:
    lines = ["| format | mx_spec (Melem/s) | torchao to_mx+to_dtype (Melem/s) | ratio (wall) | ratio (CPU time) | bit-exact |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        ours = r["n"] / r["ours_s"][0] / 1e6
        if r["theirs_s"] is None:
            lines.append(f"| {r['format']} | {ours:.1f} | n/a | n/a | n/a | {r['exact']} |")
        else:
            theirs = r["n"] / r["theirs_s"][0] / 1e6
            cpu_ratio = r["theirs_s"][1] / r["ours_s"][1]
            lines.append(f"| {r['format']} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f}x | {cpu_ratio:.2f}x "
                         f"| {r['exact']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log2-n", type=int, default=24, help="number of values = 2^N (default 24)")
    parser.add_argument("--repeats", type=int, default=5, help="timings per implementation; the best is kept")
    parser.add_argument("--formats", nargs="+", default=list(MX_FORMATS), choices=list(MX_FORMATS))
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the rows as JSON here (the table in docs/BACKENDS.md is made from "
                             "results/bench_mx_spec/results.json by tools/readme_results.py)")
    args = parser.parse_args(argv)
    if not 5 <= args.log2_n <= 28:
        parser.error("--log2-n must be in 5..28")
    adapter = _load_adapter()
    x = make_data(args.log2_n)
    print(f"{x.size:,} float32 values, block 32 along the last axis, scale floor, RNE, 1 thread, "
          f"best of {args.repeats}; numpy {np.__version__}, torch {torch.__version__}", file=sys.stderr)
    rows = []
    try:
        for fmt in tqdm(args.formats, desc="bench", unit="format", file=sys.stderr):
            rows.append(bench_format(fmt, x, args.repeats, adapter))
    except KeyboardInterrupt:
        print("interrupted; partial results:", file=sys.stderr)
    print(render(rows))
    if args.out is not None:
        write_results(args.out, rows, args)
    return 0


def write_results(path: Path, rows: list[dict], args) -> None:
    """The rows in the schema tools/readme_results.py reads (``dmx.bench_mx_spec/1``)."""
    records = []
    for r in rows:
        ours = r["n"] / r["ours_s"][0] / 1e6
        theirs = None if r["theirs_s"] is None else r["n"] / r["theirs_s"][0] / 1e6
        records.append({"format": r["format"], "n": r["n"], "mx_spec_melem_s": round(ours, 1),
                        "torchao_melem_s": None if theirs is None else round(theirs, 1),
                        "ratio_wall": None if theirs is None else round(ours / theirs, 2),
                        "ratio_cpu": None if theirs is None else round(r["theirs_s"][1] / r["ours_s"][1], 2),
                        "bit_exact": "torchao has no MXINT8" if theirs is None else r["exact"]})
    doc = {"schema": "dmx.bench_mx_spec/1",
           "provenance": {**run_provenance("benchmarks/bench_mx_spec.py", sys.argv[1:]),
                          "log2_n": args.log2_n, "repeats": args.repeats,
                          "note": "1 thread, best of the repeats; absolute numbers depend on the machine's "
                                  "load, the ratios are measured side by side"},
           "rows": records}
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
