#!/usr/bin/env bash
# dMX vs KL at 5 bits as a function of the calibration budget (issue #12's budget study).
#
# The 40-step x 2-window point, KL and the random control come from the headline sweep
# ($HEADLINE, made by benchmarks/headline.sh); this adds dMX points with more steps or more
# tokens per step, measured on the same test windows, and draws results/budget_study/budget.png
# with benchmarks/budget_study.py. Each budget is its own sweep folder (resumable: rerun the
# same command). One torch thread per run; 120 steps take ~15 min on one idle core, 400 steps
# ~50 min, each evaluation of 8 x 2048 test windows ~5 min. Unrotated, as the headline it is compared
# with (--rotation none, since new calibrations rotate by default; $ROTATION overrides).
#
#   benchmarks/budget_study.sh                       # BUDGETS="120x2 400x2 40x8" (docs/RESULTS.md's)
#   BUDGETS="400x2" benchmarks/budget_study.sh       # one budget: the authors' step count
set -euo pipefail
source "$(dirname "$0")/env.sh"
HEADLINE=${HEADLINE:-results/headline_5bit}
OUT=${OUT:-results/budget_study}
MAX_WINDOWS=${MAX_WINDOWS:-8}
SEEDS=${SEEDS:-1}
for budget in ${BUDGETS:-120x2 400x2 40x8}; do
  steps=${budget%x*}; batch=${budget#*x}
  "$PY" -m dmx.cli sweep --model smollm2-135m --family fp8_fp4 --out "$OUT/steps${steps}_batch${batch}" \
      --targets 5 --threads "${THREADS:-1}" --seqlen 2048 --max-windows "$MAX_WINDOWS" \
      --calib-windows 64 --calib-seqlen 256 --steps "$steps" --batch-size "$batch" --checkpoint-every 5 \
      --methods dmx --seeds "$SEEDS" --final-rounding budget --rotation "${ROTATION:-none}" --no-progress
done
"$PY" benchmarks/budget_study.py --headline "$HEADLINE" --study "$OUT" --out "$OUT/budget.png"
