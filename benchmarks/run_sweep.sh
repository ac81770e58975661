#!/usr/bin/env bash
# The earlier quality benchmark (docs/RESULTS.md): dMX vs the KL heuristic vs uniform MX on the embedded
# SmolLM2-135M (no network), WikiText-2 perplexity with the GPTQ protocol on the first
# $MAX_WINDOWS window(s) of 2048 tokens (a full test pass takes ~15 min per point on 2 cores).
# dMX points use the demo's calibration (64 windows x 256 tokens, 40 steps of 2 windows); the
# KL scores use $KL_WINDOWS x $KL_SEQLEN validation tokens. One torch thread by default
# ($THREADS), so two sweeps (e.g. ROTATION=hadamard OUT=results/sweep_smollm2_hadamard) can
# share a 2-core machine. About an hour per sweep on one idle core.
#
#   benchmarks/run_sweep.sh                                   # writes results/sweep_smollm2/
#   ROTATION=hadamard OUT=results/sweep_smollm2_hadamard benchmarks/run_sweep.sh
#   TASKS=default LIMIT=100 benchmarks/run_sweep.sh            # adds zero-shot accuracy to stage 1
#   OUT=/tmp/x TARGETS="5 6" benchmarks/run_sweep.sh
#   cp -r results/sweep_smollm2 results/sweep_smollm2_budget   # keep the threshold points
#   FINAL_ROUNDING=budget OUT=results/sweep_smollm2_budget benchmarks/run_sweep.sh
#                               # re-deploys the finished dMX points filling the budget exactly
#                               # (no calibration step; the other points are kept)
#
# Interruptible: rerun the same command and finished points are skipped (the KL scores and
# the dMX calibration checkpoints resume too). Stage 1 runs what the quality target needs
# (fp, MXFP4, MXFP8 E4M3, dMX and KL at the targets); stage 2 adds the other uniform formats.
set -euo pipefail
source "$(dirname "$0")/env.sh"
OUT=${OUT:-results/sweep_smollm2}
TARGETS=${TARGETS:-4.5 5 6}
MAX_WINDOWS=${MAX_WINDOWS:-4}
common=(--model smollm2-135m --family fp8_fp4 --out "$OUT" --targets $TARGETS
        --threads "${THREADS:-1}" --seqlen 2048 --max-windows "$MAX_WINDOWS"
        --kl-windows "${KL_WINDOWS:-2}" --kl-seqlen "${KL_SEQLEN:-256}"
        --calib-windows "${CALIB_WINDOWS:-64}" --calib-seqlen "${CALIB_SEQLEN:-256}"
        --steps "${STEPS:-40}" --batch-size 2 --checkpoint-every 5
        --rotation "${ROTATION:-none}")
# Only passed when set, so the points of sweeps run before the flag existed still count as finished.
if [ -n "${FINAL_ROUNDING:-}" ]; then common+=(--final-rounding "$FINAL_ROUNDING"); fi
# TASKS set: a rerun on a finished directory only adds accuracy to its points (nothing recomputed).
accuracy=()
if [ -n "${TASKS:-}" ]; then accuracy=(--tasks $TASKS --limit "${LIMIT:-100}"); fi
"$PY" -m dmx.cli sweep "${common[@]}" --methods fp uniform dmx kl \
    --uniform-formats mxfp4_e2m1 mxfp8_e4m3 "${accuracy[@]}"
"$PY" -m dmx.cli sweep "${common[@]}" --methods uniform \
    --uniform-formats mxfp4_e2m1 mxfp6_e2m3 mxfp6_e3m2 mxfp8_e4m3 mxfp8_e5m2
