#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, lint, type checks, tests.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash ops/setup.sh
V="$ROOT/.venv/bin"
echo "== ruff" >&2
"$V/ruff" check streamcover consumers tests ops
echo "== mypy" >&2
"$V/mypy" streamcover consumers ops
echo "== pytest" >&2
"$V/pytest" -q "$@"
