#!/usr/bin/env bash
# Which fractional-width block-scale rule ranks layers better (docs/FIDELITY.md row 7): dMX at 5
# bits calibrated with the project's first rule (--fractional-scale emax) beside the headline's
# dMX, which used the authors' rule (maxfloat, the default), on the same calibration windows,
# seeds, rotation and test windows. Budget rounding, so both spend exactly the same bits and only
# the ranking of the layers differs. Resumable: rerun the same command.
#
#   SEEDS=3 benchmarks/scale_rule.sh  # docs/RESULTS.md: the three headline seeds, vs results/headline_5bit_hadamard (16 windows)
#   benchmarks/scale_rule.sh          # seed 0 only
#
# Cost on one core: ~10 min of calibration + ~4 min of evaluation per seed.
set -euo pipefail
source "$(dirname "$0")/env.sh"
"$PY" -m dmx.cli sweep --model smollm2-135m --family fp8_fp4 --out "${OUT:-results/scale_rule_emax_hadamard}" --targets 5 \
    --threads "${THREADS:-1}" --seqlen 2048 --max-windows "${MAX_WINDOWS:-16}" \
    --calib-windows 64 --calib-seqlen 256 --steps 40 --batch-size 2 --checkpoint-every 5 \
    --rotation "${ROTATION:-hadamard}" --methods dmx --seeds "${SEEDS:-1}" --final-rounding budget \
    --fractional-scale emax --no-progress
