"""Which rotation should `make demo` and `dmx calibrate` use by default? The demo's calibration under each.

Issue #23 asks for the authors' learned rotation by default if it fits the demo's limit (15 min
wall on 2 cores, 4 GiB) and otherwise the fixed Hadamard, measured before choosing. This runs the
demo's calibration (`dmx calibrate --final-rounding budget`, 40 steps of 2 x 256 tokens, seed 0)
once per rotation in a child process, and records its wall time, the child's peak RSS, the bits
dMX's own threshold rule would deploy, and how far the offsets moved (|beta_hat| at the last step:
how many crossed 1, the threshold, and their largest and median values).

    python benchmarks/rotation_default.py --out results/rotation_default/results.json   # ~30 min at 1 thread
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dmx.checkpoint import load_checkpoint  # noqa: E402
from dmx.files import atomic_write_text  # noqa: E402
from dmx.provenance import run_provenance  # noqa: E402


def _values(saved) -> list[float]:
    """The offsets of a checkpoint's ``beta_hat`` entry (a name -> value mapping or a tensor)."""
    if isinstance(saved, dict):
        return [float(torch.as_tensor(v)) for v in saved.values()]
    return torch.as_tensor(saved).flatten().tolist()


def measure(rotation: str, threads: int, work: Path) -> dict:
    """One demo calibration under ``rotation``: time, peak memory, bits, offsets."""
    out = work / rotation / "assignment.json"
    ckpt = work / rotation / "ckpt"
    usage = work / rotation / "time.txt"
    usage.parent.mkdir(parents=True, exist_ok=True)
    # GNU time: the child's own peak RSS (KiB), wall seconds and CPU seconds (user, system): on a
    # shared machine the CPU time is what the calibration itself costs, the wall time an upper bound
    command = ["/usr/bin/time", "-f", "%M %e %U %S", "-o", str(usage), sys.executable, "-m", "dmx.cli", "calibrate",
               "--rotation", rotation, "--final-rounding", "budget", "--threads", str(threads),
               "--checkpoint-dir", str(ckpt), "--out", str(out), "--no-progress"]
    subprocess.run(command, check=True, cwd=REPO)
    peak_kib, wall, user, system = usage.read_text().split()[-4:]
    assignment = json.loads(out.read_text())
    offsets = [abs(float(v)) for v in _values(load_checkpoint(ckpt, announce=False)["beta_hat"])]
    return {"rotation": rotation, "wall_seconds": round(float(wall), 1),
            "cpu_seconds": round(float(user) + float(system), 1),
            "peak_rss_gib": round(int(peak_kib) / 2 ** 20, 2),
            "budget_bits": assignment["element_bits"],
            "threshold_bits": assignment["provenance"].get("threshold_element_bits"),
            "offsets_over_threshold": sum(v > 1 for v in offsets), "offsets": len(offsets),
            "offset_max": max(offsets), "offset_median": statistics.median(offsets)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rotations", nargs="+", default=["learned", "hadamard"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not os.environ.get("DMX_DATA_DIR"):
        parser.error("set DMX_DATA_DIR to the data directory (../shared/data)")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for rotation in args.rotations:  # one child at a time: its peak RSS is the largest so far
            rows.append(measure(rotation, args.threads, Path(work)))
            print(json.dumps(rows[-1]), file=sys.stderr)
    doc = {"schema": "dmx.rotation_default/1", "provenance": run_provenance(__file__, sys.argv[1:] if argv is None else argv),
           "threads": args.threads, "torch_threads_note": "one child per rotation, run one after the other",
           "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
