#!/usr/bin/env bash
# The whole Pareto study of issue #23 on one GPU: every set-up of benchmarks/pareto_study.sh (the
# learned rotation, the fixed Hadamard and no rotation for FP8/FP4 at 4.5, 5, 6, 7 bits; FP6/FP4
# with the Hadamard at 5 and 6 bits with uniform MXFP6 E2M3), zero-shot accuracy at 5 and 6 bits,
# into results/pareto_<family>_<rotation>_gpu/ beside the CPU folders (same windows, seeds and
# draws; a GPU's float order differs, so its figures are compared with the CPU's, not mixed).
# The MX bits are the same on every backend (tests/core/test_mx_torch.py); `compiled` fuses them with
# torch.compile (Triton), `torch` runs them eagerly. Not run yet: no GPU was lent to the sessions
# that wrote it. Resumable like the CPU study.
#
#   BACKEND=compiled benchmarks/gpu_study.sh        # or BACKEND=torch where Triton is missing
set -euo pipefail
cd "$(dirname "$0")/.."
# DTYPE=bfloat16 halves the memory and time; the MX element and scale bits are the same, the
# unquantised parts (norms, softmax, residual sums) are then rounded to bfloat16 as in the authors' runs.
gpu="--device cuda --backend ${BACKEND:-compiled} --dtype ${DTYPE:-float32} --zeroshot-batch-size 32"
# run FAMILY ROTATION TARGETS TASKS UNIFORM
run() {
    EXTRA="$gpu" THREADS=4 FAMILY=$1 ROTATION=$2 TARGETS=$3 TASKS=$4 UNIFORM=$5 \
        OUT="results/pareto_$1_$2_gpu" bash benchmarks/pareto_study.sh
}
fp8="mxfp4_e2m1 mxfp8_e4m3"
for rotation in learned hadamard; do
    run fp8_fp4 "$rotation" "5 6" default "$fp8"
    run fp8_fp4 "$rotation" "4.5 7" "" "$fp8"
done
run fp8_fp4 none "5 6 4.5 7" "" "$fp8"
run fp6_fp4 hadamard "5 6" default "mxfp4_e2m1 mxfp6_e2m3"
