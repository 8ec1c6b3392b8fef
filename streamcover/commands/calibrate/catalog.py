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

from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    from streamcover.catalog.ingest import embed_reference, embed_reference_features
    from streamcover.catalog.snapshot import build_snapshot

    cs = settings.catalog
    hop = cs.reference_hop_seconds
    speeds = tuple(cs.reference_speeds)
    params = IndexParams.from_settings(cs)
    refs = [(r.ref_id, r.sha256) for r in data.positives] + [
        (rid, c.name) for c in data.covers for rid in c.ref_ids]
    key = digest(RECIPE, encoder.model_id, getattr(encoder.frontend, "params", None), hop,
                 store.SCHEMA_VERSION, store.FEATURE_FORMAT, params.build_key(),
                 settings.audio.window_seconds, settings.audio.min_clip_seconds, refs,
                 *([speeds] if speeds else []), "silent-chunks-dropped")
    path = root / f"catalog-{key}"
    if (path / ".complete").is_file():
        return path
    fe = encoder.frontend
    fps = float(fe.frames_per_second)
    batch: list[store.ReferenceInput] = []

    def flush(cat: store.Catalog) -> None:
        if batch:
            cat.add_references(batch, encoder.model_id, reference_hop_s=hop,
                               reference_speeds=speeds, feature_fps=fps)
            batch.clear()

    import shutil

    shutil.rmtree(path, ignore_errors=True)
    with store.Catalog.open(path, "w", model_id=encoder.model_id) as cat:
        task = progress.add_task("catalog: debian", total=len(data.positives), note="")
        for r in data.positives:
            emb = embed_reference(encoder, load_audio(r.path, fe.sample_rate), hop_seconds=hop,
                                  speeds=speeds)
            batch.append(store.ReferenceInput(
                id=r.ref_id, vectors=emb.vectors, starts=emb.starts, duration=emb.duration_s,
                title=r.path.stem, artist=r.package, content_hash=r.sha256,
                source_path=str(r.path), features=emb.features))
            if len(batch) >= 32:
                flush(cat)
            progress.advance(task)
        flush(cat)
        for c in data.covers:
            task = progress.add_task(f"catalog: {c.name}", total=len(c.ref_ids), note="")
            for rid, feat in zip(c.ref_ids, c.ref_features, strict=True):
                vectors, starts = embed_reference_features(encoder, feat, hop_seconds=hop)
                if len(vectors) == 0:  # silent or too short: `catalog add` refuses it too
                    progress.advance(task)
                    continue
                batch.append(store.ReferenceInput(
                    id=rid, vectors=vectors, starts=starts, duration=feat.shape[1] / fps,
                    title=rid, artist=c.name, features=feat))
                if len(batch) >= 128:
                    flush(cat)
                progress.advance(task)
            flush(cat)
        build_snapshot(cat, params, incremental=False)
    (path / ".complete").write_text(key + "\n")
    return path
