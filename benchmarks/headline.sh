#!/usr/bin/env bash
# The headline comparison (docs/RESULTS.md) at a 5-bit budget on the embedded SmolLM2-135M: full
# precision, uniform MXFP4 and MXFP8, the KL heuristic, dMX (3 calibration seeds, budget
# rounding: equal bits) and the random control (3 seeded draws at the same budget), on the first
# $MAX_WINDOWS x 2048 WikiText-2 test windows. dMX uses the demo's calibration (64 windows x 256
# tokens, 40 steps of 2 windows) with the library's defaults (the authors' recipe,
# docs/FIDELITY.md). KL, dMX and the random control run first. Resumable: rerun the same
# command and finished points are skipped.
#
#   MAX_WINDOWS=32 OUT=results/headline_5bit_w32 benchmarks/headline.sh                             # docs/RESULTS.md
#   MAX_WINDOWS=8 benchmarks/headline.sh                            # results/headline_5bit: budget study's reference
#   ROTATION=hadamard MAX_WINDOWS=32 OUT=results/headline_5bit_hadamard_w32 benchmarks/headline.sh  # docs/RESULTS.md
#   ROTATION=hadamard MAX_WINDOWS=16 OUT=results/headline_5bit_hadamard benchmarks/headline.sh      # scale_rule.sh's reference
#
# Cost on one core of the 2-core machine (the two sweeps side by side, one torch thread each):
# a quantised evaluation takes 25-45 s per 2048-token window, the KL scoring ~15 min, a dMX
# calibration ~6 min; 10 points x 32 windows is about 3.5 hours per sweep.
set -euo pipefail
source "$(dirname "$0")/env.sh"
"$PY" -m dmx.cli sweep --model smollm2-135m --family fp8_fp4 --out "${OUT:-results/headline_5bit}" --targets 5 \
    --threads "${THREADS:-1}" --seqlen 2048 --max-windows "${MAX_WINDOWS:-8}" --kl-windows 2 --kl-seqlen 256 \
    --calib-windows 64 --calib-seqlen 256 --steps 40 --batch-size 2 --checkpoint-every 5 \
    --rotation "${ROTATION:-none}" --methods kl dmx random fp uniform --uniform-formats mxfp4_e2m1 mxfp8_e4m3 \
    --seeds "${SEEDS:-3}" --final-rounding budget --no-progress
