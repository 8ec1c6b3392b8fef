#!/bin/sh
# Ablation runs on the SHS100K-TEST HPCP train split: 600 steps of 16 works x 4 versions
# from scratch, validated on all 163 val works every 200 steps. Each config differs from
# ablation-base (the shipped recipe: IBN, BNNeck, GeM, CosFace CE + triplet, LAL) in one
# switch; ablation-base-seed2 repeats the base with another seed to show run-to-run noise.
# JOBS runs (default 2, one thread each) go at once. Resumable: re-run the script.
# Summary afterwards: .venv/bin/python ops/train/ablation-table.py
# Usage: [JOBS=2] [CONFIGS="ablation-base ..."] ops/train/run-ablations.sh [SHS_NPZ]
set -eu
cd "$(dirname "$0")/../.."
SHS=${1:-/work/shared/data/shs100k_test_hpcp_u8.npz}
RUNS=${STREAMCOVER_RUNS:-$HOME/.cache/streamcover/runs}
JOBS=${JOBS:-2}
run_one() {
  mkdir -p "$RUNS/$1"
  .venv/bin/python -m streamcover train --shs "$SHS" \
    --split ops/train/shs100k-test-split.json --config "ops/train/$1.json" \
    --run "$1" --runs-dir "$RUNS" --no-progress >> "$RUNS/$1/train.out" 2>&1
}
i=0
CONFIGS=${CONFIGS:-ablation-base ablation-global-only ablation-no-ibn ablation-no-bnneck \
ablation-avgpool ablation-base-seed2 ablation-maploss}
for cfg in $CONFIGS; do
  run_one "$cfg" &
  i=$((i + 1))
  if [ $((i % JOBS)) -eq 0 ]; then wait; fi
done
wait
