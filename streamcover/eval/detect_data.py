"""Real data for the open-set detection protocol (``streamcover calibrate``).

Three sources, all real:

* **Debian music packages**, fetched with ``ops/fetch-debian-media.sh``. The positive
  packages' recordings go into the catalog and come back as re-uploads (random start,
  playback speed within ±6 %, white or brown noise at 10–20 dB SNR, MP3 or AAC at
  64 kbit/s through PyAV, decoded back through the real decoder at the wire rate and
  resampled as the monitor does). The negative packages' recordings are never catalogued:
  every event on them is a false alarm. The packages the shipped model was trained on
  (``TRAINING_PACKAGES``) are in neither set.
* **SHS100K-TEST** held-out ``test`` works and **the custom set**
  (``/work/shared/data``): one version per work is catalogued, the other versions are the
  cover queries (features only: these sets hold HPCP, not audio).

Everything expensive (front-end features of every query) is cached by the caller.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamcover.audio.speed import change_speed
from streamcover.config import PROJECT_ROOT

FETCH_SCRIPT = PROJECT_ROOT / "ops" / "fetch-debian-media.sh"
AUDIO_SUFFIXES = (".ogg", ".oga", ".opus", ".flac", ".mp3", ".wav")
# The shipped model saw these packages' audio in training (streamcover/train/corpus/debian.py).
TRAINING_PACKAGES = ("warzone2100-music", "wesnoth-1.16-music", "supertux-data")


@dataclass(frozen=True)
class PackageSpec:
    """A Debian package and the directory (relative to its root) holding its music."""

    name: str
    music_dir: str
    # File stems to leave out (regex): another tempo of a track already in the set.
    exclude: str = ""


# Catalogued and re-uploaded.
POSITIVE_PACKAGES: tuple[PackageSpec, ...] = (
    PackageSpec("supertuxkart-data", "usr/share/games/supertuxkart/data/music", r"_(fast|f)$"),
    PackageSpec("extremetuxracer-data", "usr/share/games/etr/music"),
    PackageSpec("lincity-ng-data", "usr/share/games/lincity-ng/music"),
    PackageSpec("frozen-bubble-data", "usr/share/games/frozen-bubble/snd"),
    # theme1_raw is theme1 unmastered (MaxMean 0.92 between them): one recording per work.
    PackageSpec("ardentryst", "usr/share/games/ardentryst/Music", r"_raw$"),
)
# Never catalogued: unrelated music.
NEGATIVE_PACKAGES: tuple[PackageSpec, ...] = (
    PackageSpec("hedgewars-data", "usr/share/games/hedgewars/Data/Music"),
    PackageSpec("widelands-data", "usr/share/games/widelands/data/music"),
    PackageSpec("planetblupi-music-ogg", "usr/share/planetblupi/music"),
    PackageSpec("singularity-music", "usr/share/games/singularity/music"),
    PackageSpec("freedroidrpg-data", "usr/share/freedroidrpg/data/sound/music"),
    PackageSpec("megaglest-data", "usr/share/games/megaglest/techs/megapack/factions"),
    PackageSpec("openclonk-data", "usr/share/games/openclonk/Music.ocg"),
    PackageSpec("hyperrogue-music", "usr/share/hyperrogue/music"),
    PackageSpec("asc-music", "usr/share/games/asc/music"),
    PackageSpec("drascula-music", "usr/share/scummvm/drascula/audio"),
)


class DataError(RuntimeError):
    """A package or data file the protocol needs is missing or unusable."""


def fetch_package(name: str, timeout_s: float = 1800.0) -> Path:
    """The extraction root of a Debian package (fetched once; reruns are a no-op)."""
    if name in TRAINING_PACKAGES:
        raise DataError(f"{name} is training data of the shipped model; it cannot calibrate it")
    proc = subprocess.run([str(FETCH_SCRIPT), name], capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise DataError(f"{FETCH_SCRIPT.name} {name} failed (exit {proc.returncode}): "
                        f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Recording:
    """One real recording of a Debian package."""

    package: str
    path: Path
    duration_s: float
    sha256: str

    @property
    def ref_id(self) -> str:
        return f"debian:{self.package}:{self.path.stem}"


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def package_recordings(spec: PackageSpec, root: Path, min_seconds: float = 45.0) -> list[Recording]:
    """The package's music files of at least ``min_seconds`` (shorter ones are jingles),
    sorted by path, byte-identical copies dropped."""
    from streamcover.audio.decode import AudioDecodeError, probe_duration

    base = root / spec.music_dir
    if not base.is_dir():
        raise DataError(f"{spec.name}: no music directory {spec.music_dir} under {root}")
    out: list[Recording] = []
    seen: set[str] = set()
    for f in sorted(p for p in base.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        if not f.is_file() or (spec.exclude and re.search(spec.exclude, f.stem)):
            continue
        try:
            dur = probe_duration(f)
        except AudioDecodeError:
            continue
        if dur is None or dur < min_seconds:
            continue
        digest = _sha256(f)
        if digest in seen:
            continue
        seen.add(digest)
        out.append(Recording(spec.name, f, float(dur), digest))
    return out


def package_licence(name: str, root: Path) -> str:
    """The distinct ``License:`` values of the package's Debian copyright file."""
    path = root / "usr" / "share" / "doc" / name / "copyright"
    if not path.is_file():
        return "unknown (no copyright file)"
    text = path.read_text(encoding="utf-8", errors="replace")
    found: list[str] = []
    for m in re.finditer(r"^License:\s*(\S.*)$", text, flags=re.MULTILINE):
        lic = m.group(1).strip()
        if lic not in found:
            found.append(lic)
    return ", ".join(found[:6]) if found else "see copyright file"


# ---------------------------------------------------------------------------- re-uploads


@dataclass(frozen=True)
class Reupload:
    """How one re-upload of a recording is made (drawn by :func:`draw_reupload`)."""

    start_s: float  # where in the original the upload starts
    length_s: float | None  # output length (None: to the end)
    speed: float  # playback speed: tempo and pitch together
    snr_db: float
    noise: str  # "white" or "brown"
    codec: str  # "mp3" or "aac"
    seed: int

    def key(self) -> str:
        return (f"s{self.start_s:.3f}-l{self.length_s}-v{self.speed:.4f}-n{self.noise}"
                f"{self.snr_db:.2f}-{self.codec}-r{self.seed}")


SPEED_DENOMINATOR = 200  # speeds are k/200: a 0.5 % grid that resample_poly handles exactly


def draw_reupload(rng: np.random.Generator, duration_s: float, length_s: float | None,
                  max_speed_change: float = 0.06) -> Reupload:
    """Random start, speed within ±``max_speed_change``, 10–20 dB of white or brown noise,
    MP3 or AAC. A full-length upload (``length_s=None``) starts in its first 10 s."""
    k_max = round(max_speed_change * SPEED_DENOMINATOR)
    speed = int(rng.integers(SPEED_DENOMINATOR - k_max, SPEED_DENOMINATOR + k_max + 1)) / SPEED_DENOMINATOR
    if length_s is None:
        start = float(rng.uniform(0.0, min(10.0, duration_s / 4)))
    else:
        span = length_s * speed  # source seconds an output of length_s consumes
        start = float(rng.uniform(0.0, max(0.0, duration_s - span)))
    return Reupload(start_s=start, length_s=length_s, speed=speed,
                    snr_db=float(rng.uniform(10.0, 20.0)),
                    noise=str(rng.choice(["white", "brown"])), codec=str(rng.choice(["mp3", "aac"])),
                    seed=int(rng.integers(0, 2**31 - 1)))


def colored_noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-power white noise, or brown noise (integrated white, leaky so it stays bounded)."""
    white = rng.standard_normal(n)
    if kind == "white":
        x = white
    elif kind == "brown":
        from scipy.signal import lfilter

        x = lfilter([1.0], [1.0, -0.995], white)
        x -= x.mean()
    else:
        raise ValueError(f"unknown noise kind {kind!r}; expected 'white' or 'brown'")
    p = float(np.mean(x**2))
    return (x / np.sqrt(p if p > 0 else 1.0)).astype(np.float32)


def add_noise(wave: np.ndarray, snr_db: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``wave`` plus noise at ``snr_db`` below the signal's mean power (silence gets none)."""
    power = float(np.mean(wave.astype(np.float64) ** 2)) if wave.size else 0.0
    if power <= 0:
        return wave.astype(np.float32, copy=True)
    noise = colored_noise(wave.size, kind, rng) * np.sqrt(power / 10 ** (snr_db / 10))
    return (wave + noise).astype(np.float32)


_CODECS = {"mp3": ("mp3", "libmp3lame", ".mp3"), "aac": ("adts", "aac", ".aac")}


def lossy_encode(wave: np.ndarray, sample_rate: int, codec: str, bitrate: int = 64_000) -> bytes:
    """Mono float ``wave`` as an MP3 or AAC (ADTS) file at ``bitrate``, through PyAV."""
    import av

    if codec not in _CODECS:
        raise ValueError(f"unknown codec {codec!r}; expected one of {sorted(_CODECS)}")
    fmt, enc, _ = _CODECS[codec]
    buf = io.BytesIO()
    x = np.clip(wave, -1.0, 1.0).astype(np.float32)
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream(enc, rate=sample_rate, layout="mono")
        if not isinstance(stream, av.AudioStream):
            raise TypeError(f"{enc} did not open an audio stream")
        stream.bit_rate = bitrate
        cc = stream.codec_context
        fmt_name = cc.format.name if cc.format is not None else "fltp"
        block = 1152 * 8
        for i in range(0, x.size, block):
            part = x[i : i + block]
            if fmt_name.startswith("s16"):
                arr = (part * 32767).astype(np.int16)[None]
                frame = av.AudioFrame.from_ndarray(arr, format="s16p" if fmt_name == "s16p" else "s16",
                                                   layout="mono")
            else:
                frame = av.AudioFrame.from_ndarray(part[None], format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def decode_bytes(data: bytes, codec: str, sample_rate: int) -> np.ndarray:
    """Decode an encoded file through the project's decoder (``streamcover.audio.decode``)."""
    from streamcover.audio.decode import load_audio

    suffix = _CODECS[codec][2]
    with tempfile.TemporaryDirectory(prefix="streamcover-reupload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        return load_audio(path, sample_rate)


def make_reupload(original: np.ndarray, sample_rate: int, spec: Reupload,
                  wire_rate: int) -> np.ndarray:
    """The re-upload as the monitor receives it: cut, sped up or slowed, noised, lossily
    re-encoded and decoded at the wire rate (mono float32 at ``wire_rate``)."""
    rng = np.random.default_rng(spec.seed)
    a = min(original.size, round(spec.start_s * sample_rate))
    if spec.length_s is None:
        b = original.size
    else:
        b = min(original.size, a + round(spec.length_s * spec.speed * sample_rate) + 1)
    x = change_speed(original[a:b], spec.speed)
    if spec.length_s is not None:
        x = x[: round(spec.length_s * sample_rate)]
    x = add_noise(x, spec.snr_db, spec.noise, rng)
    return decode_bytes(lossy_encode(x, sample_rate, spec.codec), spec.codec, wire_rate)


def monitor_features(wire_audio: np.ndarray, wire_rate: int, frontend: object) -> np.ndarray:
    """Front-end features [bins, T] of wire-rate audio, resampled to the front end's rate with
    the monitor's own stream resampler (``streamcover/monitor/stream.py`` does the same per stream)."""
    from streamcover.audio.frontend import FrontEnd
    from streamcover.audio.resample import StreamResampler

    if not isinstance(frontend, FrontEnd):
        raise TypeError("frontend must be a streamcover.audio.frontend.FrontEnd")
    rate = int(frontend.sample_rate)
    x = wire_audio.astype(np.float32, copy=False)
    if wire_rate != rate:
        r = StreamResampler(wire_rate, rate)
        x = r.push(np.concatenate([x, np.zeros(64, np.float32)]))[: x.size * rate // wire_rate]
    return np.asarray(frontend.features(x), dtype=np.float32)


# ---------------------------------------------------------------------------- covers


@dataclass
class CoverSet:
    """Versions of real works as features: one catalogued reference per work, the rest queries."""

    name: str  # "shs" or "custom"
    ref_ids: list[str]
    ref_features: list[np.ndarray]  # [12, T] float32
    query_ids: list[str]
    query_refs: list[str]  # the reference id of each query's work
    query_features: list[np.ndarray]
    frames_per_second: float


def cover_set(name: str, path: Path, works: Sequence[int] | None = None,
              max_queries_per_work: int | None = None) -> CoverSet:
    """Works with ≥ 2 distinct versions (byte-identical duplicates dropped): the first
    version is the reference, the others are queries. ``works`` restricts to those ids."""
    from streamcover.train.shs import load_shs

    data = load_shs(path, drop_duplicates=True)
    t = data.tracks
    keep = set(int(w) for w in works) if works is not None else None
    by_work: dict[int, list[int]] = {}
    for i, w in enumerate(t.works.tolist()):
        if keep is None or int(w) in keep:
            by_work.setdefault(int(w), []).append(i)
    cs = CoverSet(name, [], [], [], [], [], float(t.frames_per_second))
    for w, idx in sorted(by_work.items()):
        if len(idx) < 2:
            continue
        rid = f"{name}:{w}"
        cs.ref_ids.append(rid)
        cs.ref_features.append(_as_bins_time(t.features[idx[0]], t.scale))
        rest = idx[1:] if max_queries_per_work is None else idx[1 : 1 + max_queries_per_work]
        for i in rest:
            cs.query_ids.append(f"{name}:{t.track_ids[i]}")
            cs.query_refs.append(rid)
            cs.query_features.append(_as_bins_time(t.features[i], t.scale))
    if not cs.ref_ids:
        raise DataError(f"{path}: no work with two or more versions")
    return cs


def _as_bins_time(feat: np.ndarray, scale: float) -> np.ndarray:
    return np.ascontiguousarray((np.asarray(feat, np.float32) * np.float32(scale)).T)


def excerpt(feat: np.ndarray, seconds: float, fps: float, rng: np.random.Generator) -> np.ndarray:
    """A random ``seconds``-long excerpt of features [bins, T] (all of it if shorter)."""
    n = round(seconds * fps)
    if feat.shape[1] <= n:
        return feat
    a = int(rng.integers(0, feat.shape[1] - n + 1))
    return feat[:, a : a + n]
