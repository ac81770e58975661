#!/usr/bin/env bash
# The README's headline comparison at a 5-bit budget on the embedded SmolLM2-135M: full
# precision, uniform MXFP4 and MXFP8, the KL heuristic, dMX (3 calibration seeds, budget
# rounding: equal bits) and the random control (3 seeded draws at the same budget), on the first
# $MAX_WINDOWS x 2048 WikiText-2 test windows. dMX uses the demo's calibration (64 windows x 256
# tokens, 40 steps of 2 windows) with the library's defaults (the authors' recipe,
# docs/FIDELITY.md). Resumable: rerun the same command and finished points are skipped.
#
#   benchmarks/headline.sh                                          # results/headline_5bit, 32 windows
#   ROTATION=hadamard MAX_WINDOWS=16 OUT=results/headline_5bit_hadamard benchmarks/headline.sh
#
# One torch thread ($THREADS), so the two sweeps can share a 2-core machine (~2 h each).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export DMX_DATA_DIR=${DMX_DATA_DIR:-$(cd .. && pwd)/shared/data}
export HF_HUB_OFFLINE=1
export OMP_NUM_THREADS=${THREADS:-1}
"$PY" -m dmx.cli sweep --model smollm2-135m --family fp8_fp4 --out "${OUT:-results/headline_5bit}" --targets 5 \
    --threads "${THREADS:-1}" --seqlen 2048 --max-windows "${MAX_WINDOWS:-32}" --kl-windows 2 --kl-seqlen 256 \
    --calib-windows 64 --calib-seqlen 256 --steps 40 --batch-size 2 --checkpoint-every 5 \
    --rotation "${ROTATION:-none}" --methods fp uniform kl dmx random --uniform-formats mxfp4_e2m1 mxfp8_e4m3 \
    --seeds "${SEEDS:-3}" --final-rounding budget --no-progress
