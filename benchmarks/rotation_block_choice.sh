#!/usr/bin/env bash
# How the default size of the online Hadamard rotation (dmx.llm.rotation.DEFAULT_ROTATION_BLOCK, `--rotation-block`) was
# chosen: uniform MXFP4 (weights + activations) perplexity of the embedded SmolLM2-135M on
# WikiText-2 *validation* text (wikitext-2-tokenized/valid.txt, not the test split the results
# report), the first $MAX_WINDOWS windows of 2048 tokens, for every block that divides the
# model's linear input widths (576, 1536: 32, 64, 96, 192; 16 is finer than an MX block) and
# rotation seeds 0-2, plus no rotation. One torch thread; about 1.5 min per row.
#
#   benchmarks/rotation_block_choice.sh            # prints one table row per (block, seed)
#   BLOCKS="32 64" SEEDS=0 benchmarks/rotation_block_choice.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DMX=${DMX:-.venv/bin/dmx}
export DMX_DATA_DIR=${DMX_DATA_DIR:-$(cd .. && pwd)/shared/data}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
VALID="$DMX_DATA_DIR/wikitext-2-tokenized/valid.txt"
common=(--format mxfp4_e2m1 --text-file "$VALID" --max-windows "${MAX_WINDOWS:-4}" --seqlen 2048 --threads 1 --no-progress)
row() { echo "$1 $("$DMX" eval "${@:2}" "${common[@]}" 2>/dev/null | awk '$1 == "mxfp4_e2m1" {print $NF}')"; }
echo "rotation ppl(MXFP4, validation)"
row "none" --rotation none
for block in ${BLOCKS:-32 64 96 192}; do
  for seed in ${SEEDS:-0 1 2}; do
    row "block=$block,seed=$seed" --rotation hadamard --rotation-block "$block" --rotation-seed "$seed"
  done
done
