"""Debian packages as corpus material: fetch without installing, list media, read licences.

Packages are fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x`` into
``<cache>/debian/<pkg>`` (the layout ``ops/fetch-debian-media.sh`` uses), so nothing is
installed and the material stays outside the work tree.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from streamcover.config import PROJECT_ROOT, default_cache_dir
from streamcover.log import get_logger
from streamcover.train.corpus.model import Member, PackageLicence, Work

log = get_logger(__name__)

SOUNDFONT_PACKAGES = ("fluid-soundfont-gm", "musescore-general-soundfont")
MIDI_PACKAGES = ("freedoom", "openttd-openmsx", "planetblupi-music-midi")
AUDIO_PACKAGES = ("warzone2100-music", "wesnoth-1.16-music", "supertux-data")
AUDIO_SUFFIXES = (".ogg", ".opus", ".flac", ".mp3")
_MARKER = ".streamcover-extracted"

# The licence of the *media* in each package, read from its copyright file (and the
# album license.txt files warzone2100-music ships). A package's copyright file also
# lists the licences of code and other data, which do not apply to the corpus.
MEDIA_LICENCES = {
    "fluid-soundfont-gm": "MIT (Fluid R3 GM soundfont, Frank Wen)",
    "musescore-general-soundfont": "MIT (MuseScore General soundfont; parts public domain or CC0)",
    "freedoom": "BSD-3-Clause (freedoom-license, Freedoom project contributors)",
    "openttd-openmsx": "GPL-2.0 (OpenMSX music set)",
    "planetblupi-music-midi": "GPL-3+ (Planet Blupi music)",
    "warzone2100-music": "GPL-2+ (original soundtrack); Aftermath soundtrack CC-BY-SA-3.0+ or GPL-2+ "
    "(albums/aftermath_soundtrack/license.txt)",
    "wesnoth-1.16-music": "GPL-2+ (Battle for Wesnoth music; see copyright file)",
    "supertux-data": "GPL-2+ (Files: data/music/*, Marek Moeckel and contributors; see copyright file)",
}


class DebianFetchError(RuntimeError):
    """A Debian package could not be downloaded or unpacked; the message names it."""


def package_dir(debian_dir: Path, package: str) -> Path:
    return debian_dir / package


def fetch_package(debian_dir: Path, package: str) -> Path:
    """Download and unpack one package (idempotent: an unpacked package is not fetched again)."""
    dest = package_dir(debian_dir, package)
    if (dest / _MARKER).exists() or (dest / ".complete").exists():
        return dest
    script = PROJECT_ROOT / "ops" / "fetch-debian-media.sh"
    if script.is_file() and debian_dir.resolve() == (default_cache_dir() / "debian").resolve():
        # The shared fetcher (same layout, its own .complete marker) when we use its folder.
        res = subprocess.run(["bash", str(script), package], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise DebianFetchError(f"{script.name} {package} failed: {res.stderr.strip()[-300:]}")
        return dest
    if (dest / "usr").is_dir() and not (dest / _MARKER).exists():
        # Unpacked by ops/fetch-debian-media.sh or an earlier run without the marker.
        (dest / _MARKER).write_text(package + "\n")
        return dest
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise DebianFetchError(f"cannot fetch Debian package {package}: apt-get/dpkg-deb not found")
    debian_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=debian_dir) as tmp:
        res = subprocess.run(
            ["apt-get", "download", package], cwd=tmp, capture_output=True, text=True, check=False
        )
        debs = list(Path(tmp).glob(f"{package}_*.deb"))
        if res.returncode != 0 or not debs:
            raise DebianFetchError(
                f"apt-get download {package} failed (run apt-get update?): {res.stderr.strip()[-300:]}"
            )
        staging = Path(tmp) / "x"
        res = subprocess.run(
            ["dpkg-deb", "-x", str(debs[0]), str(staging)], capture_output=True, text=True, check=False
        )
        if res.returncode != 0:
            raise DebianFetchError(f"dpkg-deb -x {debs[0].name} failed: {res.stderr.strip()[-300:]}")
        (staging / _MARKER).write_text(debs[0].name + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    log.info("corpus.debian_fetched", package=package, dest=str(dest))
    return dest


def package_licence(debian_dir: Path, package: str, note: str = "") -> PackageLicence:
    """Licence names from the package's machine-readable copyright file (DEP-5)."""
    copyright_file = package_dir(debian_dir, package) / "usr/share/doc" / package / "copyright"
    names: list[str] = []
    if copyright_file.exists():
        for line in copyright_file.read_text(errors="replace").splitlines():
            m = re.match(r"License:\s*(\S.*)$", line)
            if m and m.group(1).strip() not in names:
                names.append(m.group(1).strip())
    licence = MEDIA_LICENCES.get(package) or (" AND ".join(names) if names else "see copyright file")
    return PackageLicence(
        package=package,
        origin="Debian package (apt-get download + dpkg-deb -x)",
        licence=licence,
        copyright_file=str(copyright_file),
        note=note,
    )


def extract_wad_music(wad: Path, out_dir: Path) -> list[Path]:
    """Write the MIDI music lumps (D_*) of a Doom WAD as .mid files; MUS lumps are skipped."""
    data = wad.read_bytes()
    magic, count, table = struct.unpack("<4sii", data[:12])
    if magic not in (b"IWAD", b"PWAD"):
        raise ValueError(f"{wad}: not a WAD file")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        pos, size, raw = struct.unpack("<ii8s", data[table + 16 * i : table + 16 * i + 16])
        name = raw.rstrip(b"\0").decode("ascii", "replace")
        lump = data[pos : pos + size]
        if not name.startswith("D_") or not lump.startswith(b"MThd"):
            continue
        path = out_dir / f"{wad.stem}_{name}.mid"
        if not path.exists():
            tmp = path.with_suffix(".partial")
            tmp.write_bytes(lump)
            tmp.replace(path)
        paths.append(path)
    return paths


def midi_works(debian_dir: Path, cache_dir: Path, packages: tuple[str, ...] = MIDI_PACKAGES) -> list[Work]:
    """One work per distinct MIDI file in the game-music packages (duplicates by content dropped)."""
    works = []
    seen: set[str] = set()
    for pkg in packages:
        root = package_dir(debian_dir, pkg)
        if pkg == "freedoom":
            files: list[Path] = []
            for wad in sorted(root.rglob("*.wad")):
                files += extract_wad_music(wad, cache_dir / "freedoom-midi")
        else:
            files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
        for path in files:
            digest = hashlib.sha1(path.read_bytes()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            title = path.stem.replace("_", " ")
            member = Member(f"{pkg}/{path.name}", "midi", str(path), title, pkg)
            works.append(
                Work(
                    work_id=f"midi:{pkg}:{path.stem.lower()}",
                    title=title,
                    artist=f"{pkg} contributors",
                    source=f"debian:{pkg}",
                    package=pkg,
                    members=(member,),
                )
            )
    return works


def recordings(debian_dir: Path, packages: tuple[str, ...] = AUDIO_PACKAGES) -> list[Member]:
    """Music recordings in the packages (only files under a music folder)."""
    out = []
    for pkg in packages:
        root = package_dir(debian_dir, pkg)
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if path.suffix.lower() not in AUDIO_SUFFIXES or "music" not in str(rel.parent).lower():
                continue
            out.append(Member(f"{pkg}/{rel}", "audio", str(path), path.stem.replace("_", " "), pkg))
    return out


def recording_works(members: list[Member], seed: int, work_fraction: float = 0.6) -> tuple[list[Work], list[Member]]:
    """Split recordings into pseudo-version works and a background pool (disjoint).

    The split is a seeded hash of the file key, so it is stable as packages change.
    """
    works, background = [], []
    for m in members:
        h = int(hashlib.sha1(f"{seed}:{m.key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        if h < work_fraction:
            works.append(
                Work(
                    work_id=f"audio:{m.collection}:{Path(m.key).stem.lower()}",
                    title=m.title,
                    artist=f"{m.collection} contributors",
                    source=f"debian:{m.collection}",
                    package=m.collection,
                    members=(m,),
                )
            )
        else:
            background.append(m)
    return works, background
