#!/usr/bin/env bash
# The prepared GPU check: encoder chunks/s in fp32/bf16/fp16 at batch 64-4096, the front end
# on the device, and a monitor capacity estimate, in one run of at most 8 minutes
# (set-up included). Prints one table and writes a JSON (ops/bench/gpu_check.py explains
# every figure).
#
#   bash ops/bench/gpu-check.sh                         # auto device, JSON to $OUT/gpu-check.json or ./gpu-check.json
#   bash ops/bench/gpu-check.sh --device cuda --json /tmp/gpu.json
#   bash ops/bench/gpu-check.sh --device cpu --quick    # the CPU smoke run (< 60 s)
#   bash ops/bench/gpu-check.sh --no-setup ...          # skip ops/setup.sh (venv already there)
#
# It installs nothing beyond the project's own set-up: ops/setup.sh runs first (idempotent;
# on a machine that received the tree without .venv it builds the venv). If set-up fails
# (e.g. no network), the check still runs with the first Python that can import torch and
# the project's dependencies, and says so. GPU_CHECK_TOTAL_S (default 480) is the hard limit
# for the whole run: the Python part gets what set-up left of it, and a timeout stops it
# (it then writes the figures it has) if it ever overruns.
set -uo pipefail

START="$(date +%s)"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOTAL="${GPU_CHECK_TOTAL_S:-480}"
say() { printf '[gpu-check] %s\n' "$*" >&2; }

setup=1
args=()
for a in "$@"; do
  case "$a" in
    --no-setup) setup=0 ;;
    *) args+=("$a") ;;
  esac
done

if ((setup)); then
  say "running ops/setup.sh"
  if ! bash "$ROOT/ops/setup.sh" >&2; then
    say "ops/setup.sh failed: trying the Python already on this machine"
  fi
fi

# A Python that can import the check itself (torch, numpy, streamcover and what they pull in).
probe="import sys; sys.path.insert(0, '$ROOT/ops/bench'); import gpu_check, torch
print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
py=""
for cand in "$ROOT/.venv/bin/python" python3.11 python3; do
  command -v "$cand" >/dev/null 2>&1 || continue
  if found="$(PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$cand" -c "$probe" 2>/dev/null)"; then
    py="$cand"
    break
  fi
done
if [ -z "$py" ]; then
  say "no Python here can import ops/bench/gpu_check.py (torch, numpy, pydantic-settings, ...): nothing measured"
  exit 2
fi
say "python: $py ($found)"

left=$((TOTAL - ($(date +%s) - START)))
if ((left < 30)); then
  say "set-up used $((TOTAL - left)) s of the ${TOTAL} s limit: too little left to measure"
  exit 3
fi
# TERM at the limit (the Python part writes its JSON then), KILL 10 s later.
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" timeout --signal=TERM --kill-after=10 "$left" \
  "$py" "$ROOT/ops/bench/gpu_check.py" --started-at "$START" --max-total-s "$TOTAL" "${args[@]}"
