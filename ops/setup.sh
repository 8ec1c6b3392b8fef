#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: apt packages, a Python venv with every
# dependency (torch is installed once and then hard-linked from uv's cache),
# and the Kafka broker jars. Safe to run again; a no-op run takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${STREAMCOVER_CACHE_DIR:-$HOME/.cache/streamcover}"
VENV="$ROOT/.venv"
PYTHON="${STREAMCOVER_PYTHON:-python3.11}"
UV_VERSION="0.13.9"
mkdir -p "$CACHE"

say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

# 1. System packages: PortAudio for sounddevice, ALSA tools for the mic test path,
#    JDK + Maven for the Kafka broker, soundfonts/fluidsynth for the versions corpus.
APT_PACKAGES=(libportaudio2 alsa-utils libasound2-plugins openjdk-17-jre-headless maven
              fluid-soundfont-gm openssl)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  # Java may come from elsewhere (e.g. Temurin): only insist on the JRE package if java is absent.
  if command -v java >/dev/null; then missing=("${missing[@]/openjdk-17-jre-headless}"); fi
  if command -v mvn >/dev/null; then missing=("${missing[@]/maven}"); fi
  read -r -a missing <<<"${missing[*]}"
fi
if ((${#missing[@]})); then
  say "installing apt packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. uv (fast, cached, hard-linking installer) and the venv.
if ! command -v uv >/dev/null || [ "$(uv --version | awk '{print $2}')" != "$UV_VERSION" ]; then
  say "installing uv $UV_VERSION"
  "$PYTHON" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  uv venv -q -p "$PYTHON" "$VENV"
fi
stamp="$VENV/.streamcover-deps"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$VENV/bin/python" -c "import streamcover" 2>/dev/null \
   || [ "$("$VENV/bin/python" -c 'import streamcover,os;print(os.path.dirname(os.path.dirname(streamcover.__file__)))')" != "$ROOT" ]; then
  say "installing Python dependencies (torch is a multi-GB build: the first run downloads it once)"
  uv pip install -q -p "$VENV/bin/python" -e "$ROOT[dev,corpus]"
  uv pip install -q -p "$VENV/bin/python" --no-deps "tinysoundfont==0.3.7"
  echo "$want" >"$stamp"
fi

# 3. Kafka broker jars from Maven Central (cached under $CACHE/kafka).
"$VENV/bin/streamcover" broker fetch
say "ready: $VENV"
