#!/usr/bin/env bash
# The main job on a fresh machine: set-up, then the end-to-end demo
# (local broker, a small catalog, the monitor, three streams, events and a set list).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash ops/setup.sh
exec "$ROOT/.venv/bin/streamcover" demo "$@"
