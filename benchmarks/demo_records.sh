#!/usr/bin/env bash
# Record `make demo`'s figures for the demo table (docs/RESULTS.md) from the Pareto study's dMX calibrations
# instead of recomputing them: the study's 5-bit dMX points (benchmarks/pareto_study.sh) are the
# demo's calibration (64 x 256 validation windows, 40 steps of 2, target 5, the library's defaults,
# the fixed Hadamard-64 rotation) for seeds 0, 1, 2 at one thread. Each is re-deployed with the
# demo's budget rounding from its finished checkpoint (`dmx calibrate --resume`, no calibration
# step) and evaluated as `make demo` does (fp, MXFP8, MXFP4, the assignment and the recorded KL
# assignment on 2 x 2048 test windows), into results/demo/seed-<k>/. A fresh `make demo` is seed 0
# at the machine's thread count; the seed spread is the larger one. Needs the study's checkpoints
# ($SOURCE/checkpoints/, not committed).
set -euo pipefail
source "$(dirname "$0")/env.sh"
SOURCE=${SOURCE:-results/pareto_fp8_fp4_hadamard}
KL=$(sed -n 's/^DEMO_KL ?= //p' Makefile)
for seed in ${SEEDS:-0 1 2}; do
  key=$([ "$seed" = 0 ] && echo "dmx_at_5" || echo "dmx_at_5_s$seed")
  ckpt=$(ls -d "$SOURCE"/checkpoints/"$key"-* | head -n 1)
  out=results/demo/seed-$seed
  mkdir -p "$out"
  "$PY" -m dmx.cli calibrate --threads "${THREADS:-1}" --seed "$seed" --checkpoint-dir "$ckpt" --resume \
      --final-rounding budget --out "$out/assignment.json" --no-progress
  "$PY" -m dmx.cli eval --threads "${THREADS:-1}" --format fp mxfp8_e4m3 mxfp4_e2m1 \
      --assignment "$out/assignment.json" "$KL" --max-windows 2 --out "$out/eval.json" --no-progress
done
