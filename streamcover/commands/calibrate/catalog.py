"""The calibration catalog `streamcover calibrate` searches: the positive Debian recordings
and one version of every cover-set work, built through the public store and index functions
(as ``catalog add`` does) and cached by everything that shapes it.

Speed renders (``catalog.reference_speeds``) of the Debian recordings are rendered from their
audio, as ``catalog add`` does. The cover sets hold features only, so their references have
none: a render cannot be made from chroma (rolling it a bin and resampling it in time gives
what the encoder already sees in the original, which is transposition invariant, while an
audio render's chunks score only 0.34-0.61 MaxMean against the original's). Unrelated
streams therefore meet fewer reference chunks here than in a catalog where every reference
has renders (docs/results/2026-12-04-reference-speeds.md splits their scores by the kind of
reference they hit)."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamcover.commands.calibrate.cache import RECIPE, digest

if TYPE_CHECKING:
    from streamcover.commands.calibrate.data import Data
    from streamcover.config import Settings
    from streamcover.model.inference import Encoder


def build_catalog(root: Path, encoder: Encoder, settings: Settings, data: Data, progress: Any) -> Path:
    """The calibration catalog, through the public store and index functions (as ``catalog
    add`` does), cached by everything that shapes it."""
    from streamcover.audio.decode import load_audio
    from streamcover.catalog import store
    from streamcover.catalog.factory import IndexParams
    from streamcover.catalog.snapshot import build_snapshot

    cs = settings.catalog
    hop = getattr(cs, "reference_hop_seconds", None)
    speeds = tuple(getattr(cs, "reference_speeds", ()))
    params = IndexParams.from_settings(cs)
    refs = [(r.ref_id, r.sha256) for r in data.positives] + [
        (rid, c.name) for c in data.covers for rid in c.ref_ids]
    key = digest(RECIPE, encoder.model_id, getattr(encoder.frontend, "params", None), hop,
                  store.SCHEMA_VERSION,
                  getattr(store, "FEATURE_FORMAT", None), params.build_key(),
                  settings.audio.window_seconds, settings.audio.min_clip_seconds, refs,
                  *([speeds] if speeds else []))
    path = root / f"catalog-{key}"
    if (path / ".complete").is_file():
        return path
    add_kw = set(inspect.signature(store.Catalog.add_references).parameters)
    has_feats = "features" in {f.name for f in dataclasses.fields(store.ReferenceInput)}
    embed_kw: dict[str, Any] = {}
    if "hop_seconds" in inspect.signature(encoder.embed_features).parameters and hop is not None:
        embed_kw["hop_seconds"] = hop
    fe = encoder.frontend
    batch: list[store.ReferenceInput] = []

    def flush(cat: store.Catalog, fps: float) -> None:
        kw: dict[str, Any] = {}
        if "reference_hop_s" in add_kw:
            kw["reference_hop_s"] = hop
        if speeds:
            kw["reference_speeds"] = speeds
        if "feature_fps" in add_kw and has_feats:
            kw["feature_fps"] = fps
        if batch:
            cat.add_references(batch, encoder.model_id, **kw)
            batch.clear()

    def ref(rid: str, feat: np.ndarray, wave: np.ndarray | None = None, **meta: Any) -> store.ReferenceInput:
        if speeds and wave is not None and hop is not None:
            from streamcover.catalog.ingest import embed_reference

            emb = embed_reference(encoder, wave, hop_seconds=hop, speeds=speeds)
        else:
            emb = encoder.embed_features(feat, **embed_kw)
        extra: dict[str, Any] = {"features": feat} if has_feats else {}
        return store.ReferenceInput(id=rid, vectors=emb.vectors, starts=emb.starts,
                                    duration=float(emb.duration_s), **meta, **extra)

    import shutil

    shutil.rmtree(path, ignore_errors=True)
    with store.Catalog.open(path, "w", model_id=encoder.model_id) as cat:
        task = progress.add_task("catalog: debian", total=len(data.positives), note="")
        for r in data.positives:
            wave = load_audio(r.path, fe.sample_rate)
            feat = np.asarray(fe.features(wave), np.float32)
            batch.append(ref(r.ref_id, feat, wave, title=r.path.stem, artist=r.package,
                             content_hash=r.sha256, source_path=str(r.path)))
            if len(batch) >= 32:
                flush(cat, float(fe.frames_per_second))
            progress.advance(task)
        flush(cat, float(fe.frames_per_second))
        for c in data.covers:
            task = progress.add_task(f"catalog: {c.name}", total=len(c.ref_ids), note="")
            for rid, feat in zip(c.ref_ids, c.ref_features, strict=True):
                batch.append(ref(rid, feat, title=rid, artist=c.name))
                if len(batch) >= 128:
                    flush(cat, float(fe.frames_per_second))
                progress.advance(task)
            flush(cat, float(fe.frames_per_second))
        build_snapshot(cat, params, incremental=False)
    (path / ".complete").write_text(key + "\n")
    return path
