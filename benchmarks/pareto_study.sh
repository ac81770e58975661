#!/usr/bin/env bash
# The Pareto study of issue #23 under the authors' recipe on the embedded SmolLM2-135M: at each
# target, full precision, uniform MX, the KL heuristic (3 calibration draws of 8 x 512 tokens),
# dMX (3 calibration seeds, deployed with budget rounding: equal bits to KL) and the random control
# (3 draws), scored on the held-out WikiText-2 test windows 32-63 (2048 tokens; windows 0-31 chose
# the recipe and the rotation block, so they report nothing here). Every point stores its
# per-window NLLs, so `make readme-results` gives a paired interval for dMX - KL at every target.
# A second folder, <OUT>_threshold, re-deploys the same calibrations with dMX's own threshold rule
# (|beta_hat| > 1 -> high format: the method's own bits), sharing the checkpoints. Under the learned
# rotation KL runs twice: on the learned kind's fixed start (kl: the pipeline comparison) and, draw i
# on the rotation dMX seed i learned (kl_learned_rotation: both ranked on one rotation; ~1.5 h a
# draw on one core, in PART=rest after dMX).
#
#   benchmarks/pareto_study.sh                                   # fixed Hadamard-64, FP8/FP4, 5 6 4.5 7 bits
#   ROTATION=learned benchmarks/pareto_study.sh                  # the authors' learned rotation
#   FAMILY=fp6_fp4 TARGETS="5 4.5" UNIFORM="mxfp4_e2m1 mxfp6_e2m3" benchmarks/pareto_study.sh
#     (not 6: it is the FP6/FP4 family's top, where every method deploys every layer at MXFP6 E2M3,
#     the uniform point this runs anyway)
#   ROTATION=none TARGETS=5 benchmarks/pareto_study.sh           # plain MX
#   TASKS=default TARGETS="5 6" benchmarks/pareto_study.sh      # adds zero-shot accuracy to the points
#   TASKS=default LIMIT=200 ROTATION=learned TARGETS=4.5 ...       # the first 200 questions of each task
#   QUESTIONS=all ROTATION=learned TARGETS=5 benchmarks/pareto_study.sh
#     every question of the four offline tasks (6,653, about an hour a point on one core) for the points
#     a zero-shot verdict reads: dMX's seeds and the KL draws they are ranked against (under the learned
#     rotation KL on each seed's rotation), copied finished (--points-from) into <OUT>_every_question,
#     so the study folder keeps its first-200 answers; PART=rest (dMX) and PART=kl split it over two cores
#   EXTRA="--device cuda --backend compiled" OUT=... benchmarks/pareto_study.sh   # on a GPU: benchmarks/gpu_study.sh
#
# One target after another (5 first): dMX (whose checkpoints the demo records reuse), random, fp, uniform,
# random, then the threshold deployment,
# then KL, so the cheap points finish first. Resumable: rerun the same command; finished points are skipped, an
# interrupted calibration or KL scoring resumes from its checkpoint or score cache.
# On the 2-core machine the KL draws and the rest can run side by side, one core each (the two
# sweeps share the result folder; each point is merged in under a lock):
#   PART=kl benchmarks/pareto_study.sh &  PART=rest benchmarks/pareto_study.sh
# Cost on one core of the 2-core machine: a quantised evaluation of 32 windows takes 15-25 min,
# a dMX calibration ~7 min, one KL draw at 8 x 512 tokens ~2 h; a target is about 10 hours.
set -euo pipefail
source "$(dirname "$0")/env.sh"
ROTATION=${ROTATION:-hadamard}
FAMILY=${FAMILY:-fp8_fp4}
OUT=${OUT:-results/pareto_${FAMILY}_${ROTATION}}
UNIFORM=${UNIFORM:-mxfp4_e2m1 mxfp6_e2m3 mxfp8_e4m3}  # MXFP6 E2M3: the 6-bit reference (it beat every mix under the first recipe)
common=(--model smollm2-135m --family "$FAMILY" --rotation "$ROTATION" --threads "${THREADS:-1}"
        --seqlen 2048 --first-window 32 --max-windows 32 --kl-windows 8 --kl-seqlen 512
        --calib-windows 64 --calib-seqlen 256 --steps 40 --batch-size 2 --checkpoint-every 5
        --seeds 3 --no-progress ${EXTRA:-})
accuracy=()
if [ -n "${TASKS:-}" ]; then accuracy=(--tasks $TASKS ${LIMIT:+--limit $LIMIT}); fi  # LIMIT: the first N questions of each task
PART=${PART:-all}  # all | rest (dMX, fp, uniform, random, threshold; learned: kl_learned_rotation) | kl
case "$PART" in all|rest|kl) ;; *) echo "PART must be all, rest or kl (got '$PART')" >&2; exit 2;; esac
case "${QUESTIONS:-}" in ""|all) ;; *) echo "QUESTIONS must be all or unset (got '$QUESTIONS')" >&2; exit 2;; esac
if [ "${QUESTIONS:-}" = all ]; then
    ranked_against=kl
    if [ "$ROTATION" = learned ]; then ranked_against=kl_learned_rotation; fi
    every=(--out "${OUT}_every_question" --points-from "$OUT" --final-rounding budget --tasks default)
    for target in ${TARGETS:-5 6}; do
        if [ "$PART" != kl ]; then "$PY" -m dmx.cli sweep "${common[@]}" "${every[@]}" --targets "$target" --methods dmx; fi
        if [ "$PART" != rest ]; then
            "$PY" -m dmx.cli sweep "${common[@]}" "${every[@]}" --targets "$target" --methods "$ranked_against"
        fi
    done
    exit 0
fi
mkdir -p "$OUT/checkpoints" "${OUT}_threshold"
# the threshold deployment re-deploys the budget folder's calibrations (final rounding is not part
# of a checkpoint's identity)
# (a relative link, so a committed folder resumes in any checkout; -fn replaces rather than nests, since
# PART=kl and PART=rest start together and a test-then-link would let the second put a link inside the first)
ln -sfn "../$(basename "$OUT")/checkpoints" "${OUT}_threshold/checkpoints"
for target in ${TARGETS:-5 6 4.5 7}; do
    if [ "$PART" != kl ]; then
        "$PY" -m dmx.cli sweep "${common[@]}" --out "$OUT" --targets "$target" --final-rounding budget \
            --methods dmx random fp uniform --uniform-formats $UNIFORM "${accuracy[@]}"
        "$PY" -m dmx.cli sweep "${common[@]}" --out "${OUT}_threshold" --targets "$target" --final-rounding threshold \
            --methods dmx "${accuracy[@]}"
        if [ "$ROTATION" = learned ]; then  # after dMX, whose learned rotations it scores KL on
            "$PY" -m dmx.cli sweep "${common[@]}" --out "$OUT" --targets "$target" --final-rounding budget \
                --methods kl_learned_rotation "${accuracy[@]}"
        fi
    fi
    if [ "$PART" != rest ]; then
        "$PY" -m dmx.cli sweep "${common[@]}" --out "$OUT" --targets "$target" --final-rounding budget \
            --methods kl "${accuracy[@]}"
    fi
done
