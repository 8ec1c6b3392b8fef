#!/usr/bin/env bash
# Fetch freely licensed music from Debian packages for tests and demos, without installing them.
#
#   ops/fetch-debian-media.sh PKG...        e.g. warzone2100-music wesnoth-1.16-music
#
# Each package is downloaded with `apt-get download` and unpacked with `dpkg-deb -x` into
# ${STREAMCOVER_CACHE:-~/.cache/streamcover}/debian/<pkg>. A `.complete` marker makes reruns a
# no-op, so tests can call this every time. Prints the extraction directory of each package.
# Exits non-zero with the reason on any failure (no silent skips).
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 PKG..." >&2
    exit 2
fi

cache_root="${STREAMCOVER_CACHE:-$HOME/.cache/streamcover}/debian"
mkdir -p "$cache_root"

for tool in apt-get dpkg-deb; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: '$tool' not found; this script needs a Debian/Ubuntu system" >&2
        exit 3
    fi
done

for pkg in "$@"; do
    if [[ ! "$pkg" =~ ^[a-z0-9][a-z0-9.+-]+$ ]]; then
        echo "error: '$pkg' is not a valid Debian package name" >&2
        exit 2
    fi
    dest="$cache_root/$pkg"
    if [[ -f "$dest/.complete" ]]; then
        echo "$dest"
        continue
    fi
    work="$(mktemp -d "$cache_root/.tmp-$pkg.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    # apt-get download writes into the current directory.
    if ! (cd "$work" && apt-get download -q "$pkg" >"$work/apt.log" 2>&1); then
        # The package lists may be missing (fresh container): refresh once and retry.
        if [[ "$(id -u)" == "0" ]]; then
            apt-get update -q >"$work/update.log" 2>&1 || true
        fi
        if ! (cd "$work" && apt-get download -q "$pkg" >"$work/apt.log" 2>&1); then
            echo "error: apt-get download $pkg failed:" >&2
            cat "$work/apt.log" >&2
            exit 4
        fi
    fi
    deb="$(find "$work" -maxdepth 1 -name '*.deb' | head -n 1)"
    if [[ -z "$deb" ]]; then
        echo "error: apt-get download $pkg produced no .deb" >&2
        exit 4
    fi
    rm -rf "$dest"
    mkdir -p "$dest"
    if ! dpkg-deb -x "$deb" "$dest"; then
        echo "error: dpkg-deb -x failed for $deb" >&2
        rm -rf "$dest"
        exit 5
    fi
    touch "$dest/.complete"
    rm -rf "$work"
    trap - EXIT
    echo "$dest"
done
