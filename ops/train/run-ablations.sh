#!/bin/sh
# Short ablation runs on the SHS100K-TEST HPCP train split, one after the other, at low
# priority; each validates on 60 held-out val works. Resumable: re-run the script.
# Usage: ops/train/run-ablations.sh [SHS_NPZ]
set -eu
cd "$(dirname "$0")/../.."
SHS=${1:-/work/shared/data/shs100k_test_hpcp_u8.npz}
RUNS=${STREAMCOVER_RUNS:-$HOME/.cache/streamcover/runs}
for cfg in ablation-base ablation-global-only ablation-no-ibn ablation-no-bnneck ablation-avgpool ablation-maploss; do
  mkdir -p "$RUNS/$cfg"
  nice -n 10 .venv/bin/python -m streamcover train --shs "$SHS" \
    --split ops/train/shs100k-test-split.json --config "ops/train/$cfg.json" \
    --run "$cfg" --runs-dir "$RUNS" --no-progress >> "$RUNS/$cfg/train.out" 2>&1
done
