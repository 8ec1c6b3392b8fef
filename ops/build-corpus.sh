#!/usr/bin/env bash
# Rebuild the versions corpus on a fresh machine (see docs/corpus.md).
#
#   ops/build-corpus.sh [extra `streamcover corpus build` arguments…]
#
# Installs the corpus Python packages into .venv if missing, runs `apt-get update`
# once if apt has no package lists, then builds at nice 10 with two worker
# processes (the machine is shared with a training job that has priority).
# Debian packages are fetched with apt-get download + dpkg-deb -x (never installed)
# into ~/.cache/streamcover/debian/<pkg>. Resumable: re-run to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

if ! "$PY" -c "import music21, pretty_midi, tinysoundfont, pedalboard" 2>/dev/null; then
  # tinysoundfont declares pyaudio (live playback only, needs portaudio headers): skip it.
  uv pip install -p "$PY" "music21>=9.1" "pretty-midi>=0.2.10" "pedalboard>=0.9.16"
  uv pip install -p "$PY" --no-deps "tinysoundfont>=0.3.7"
fi

if command -v apt-get >/dev/null && ! apt-cache policy fluid-soundfont-gm 2>/dev/null | grep -q Candidate; then
  apt-get update -qq
fi

start=$(date +%s)
nice -n 10 "$PY" -m streamcover corpus build "$@"
echo "corpus build took $(( $(date +%s) - start )) s (wall clock)"
