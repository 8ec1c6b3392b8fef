#!/bin/sh
# A detached HPCP training run on the SHS100K-TEST HPCP train split, by default with the
# shipped model's current recipe (hpcp-t2-crops.json; the shipped weights themselves are a
# chain of warm starts, listed in models/streamcover-hpcp-compact.md). Detached (nohup +
# setsid) so it outlives the shell; re-running resumes from
# ~/.cache/streamcover/runs/$RUN/last.pt. Log: $RUNS/$RUN/train.out.
#
# Priority: the job runs at nice 0 and other work is meant to run under `nice`. With
# kernel autogroup scheduling (kernel.sched_autogroup_enabled=1) nice only orders
# processes *within* one session, so every session gets an equal share and a niced job
# in another session competes as an equal. setsid gives the training its own session;
# its autogroup nice is set to $AUTOGROUP_NICE (default -10, the weight ratio nice 0 has
# over nice 10) so it gets the share intended. It uses one thread, so at most one core.
# AUTOGROUP_NICE=0 turns this off.
#
# Usage: [CONFIG=ops/train/<config>.json] [MANIFEST=...] [INIT_FROM=...] ops/train/run-hpcp-compact.sh [RUN_NAME] [SHS_NPZ]
set -eu
cd "$(dirname "$0")/../.."
RUN=${1:-hpcp-t2}
CONFIG=${CONFIG:-ops/train/hpcp-t2-crops.json}
SHS=${2:-/work/shared/data/shs100k_test_hpcp_u8.npz}
RUNS=${STREAMCOVER_RUNS:-$HOME/.cache/streamcover/runs}
AUTOGROUP_NICE=${AUTOGROUP_NICE:--10}
# INIT_FROM=<other run>/last.pt warm-starts a new run (ignored when the run resumes).
INIT=${INIT_FROM:+--init-from $INIT_FROM}
# MANIFEST=<corpus>/manifest-train.jsonl mixes a versions corpus into the SHS batches.
MIX=${MANIFEST:+--manifest $MANIFEST}
mkdir -p "$RUNS/$RUN"
nohup setsid .venv/bin/python -m streamcover train --shs "$SHS" \
  --split ops/train/shs100k-test-split.json --config "$CONFIG" \
  --run "$RUN" --runs-dir "$RUNS" --no-progress $INIT $MIX >> "$RUNS/$RUN/train.out" 2>&1 < /dev/null &
PID=$!
if [ -w "/proc/$PID/autogroup" ] && [ "$AUTOGROUP_NICE" != 0 ]; then
  sleep 1
  echo "$AUTOGROUP_NICE" > "/proc/$PID/autogroup" 2>/dev/null \
    || echo "could not set autogroup nice (needs root); training runs at an equal share"
fi
echo "training $RUN in the background (pid $PID); log: $RUNS/$RUN/train.out"
