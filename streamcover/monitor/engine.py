"""The monitor's compute engine: front end, encoder and catalog search behind one object.

The pipeline only needs four things: a streaming feature extractor, a batched chunk
encoder, a per-window two-stage search, and the model id / catalog version to stamp on
events. :class:`Engine` is that bundle; :func:`build_engine` makes the real one from the
settings (the encoder at ``encoder.model_path``; no weights, no engine, unless an untrained
encoder is asked for).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from streamcover.config import Settings
from streamcover.log import get_logger
from streamcover.match.decision import Hit

if TYPE_CHECKING:
    from streamcover.catalog.view import Stage1Memo
    from streamcover.match.calibration import Calibration

log = get_logger(__name__)


class FrontEndLike(Protocol):
    @property
    def sample_rate(self) -> int: ...
    @property
    def n_bins(self) -> int: ...
    @property
    def frames_per_second(self) -> float: ...
    def stream(self) -> Any: ...


class SearcherLike(Protocol):
    def search(self, query_vectors: np.ndarray, query_starts: np.ndarray, *,
               chunk_ids: Sequence[Hashable] | None = None,
               memo: Stage1Memo | None = None,
               query_features: np.ndarray | None = None) -> Sequence[Hit]: ...


class EncoderLike(Protocol):
    @property
    def model_id(self) -> str: ...
    def embed_chunks(self, chunks: np.ndarray) -> np.ndarray: ...


@dataclass
class Engine:
    """Everything the pipeline computes with; thread-confined to the monitor's worker."""

    frontend: FrontEndLike
    encoder: EncoderLike
    searcher: SearcherLike
    fixed_catalog_version: str | None = None
    trained: bool = True
    # The model's calibrated false-alarm curve (``streamcover calibrate``), for the
    # confidence every upload event carries; None: not calibrated for this scoring.
    calibration: Calibration | None = None

    @property
    def catalog_version(self) -> str:
        """The version of the catalog snapshot being served (changes on a hot swap)."""
        if self.fixed_catalog_version is not None:
            return self.fixed_catalog_version
        view = getattr(self.searcher, "view", None)
        return str(getattr(view, "store_version", "unknown"))

    @property
    def model_id(self) -> str:
        return str(self.encoder.model_id)

    @property
    def hop_samples(self) -> float:
        """Front-end samples per feature frame (20480 for HPCP at 44.1 kHz)."""
        return float(self.frontend.sample_rate) / float(self.frontend.frames_per_second)


def warn_if_catalog_stale(settings: Settings, model_id: str) -> None:
    """Log why the catalog no longer matches the settings (another reference hop, other speed
    renders, no stored features): the calibrated thresholds assume a current one."""
    from streamcover.catalog.ingest import rebuild_reasons
    from streamcover.catalog.store import Catalog

    with Catalog.open(settings.catalog.path, "r") as cat:
        reasons = rebuild_reasons(cat.stats(), model_id, settings.catalog)
    if reasons:
        log.warning("catalog_needs_reembed", catalog=str(settings.catalog.path), reasons=reasons,
                    detail="the calibrated thresholds assume a catalog built with the current "
                           "settings: run `streamcover catalog reembed`")


def build_engine(settings: Settings, encoder: Any | None = None, trained: bool = True, *,
                 allow_untrained: bool = False) -> Engine:
    """The real engine: front end from the settings, the encoder, the catalog's searcher.

    Without ``encoder`` the one in ``settings.encoder.model_path`` is loaded; if that file
    is missing this raises :class:`~streamcover.model.loading.EncoderMissingError` unless
    ``allow_untrained`` (then an untrained encoder, and a warning).
    """
    from streamcover.audio.frontend import make_frontend
    from streamcover.catalog.search import TwoStageSearcher
    from streamcover.model.loading import EncoderMissingError, load_encoder, resolve_model_path

    if encoder is None:
        if settings.monitor.torch_threads:
            # One torch thread pool serves the front end and the encoder of this process.
            enc = settings.encoder.model_copy(update={"threads": settings.monitor.torch_threads})
            settings = settings.model_copy(update={"encoder": enc})
        try:
            encoder, trained = load_encoder(settings, allow_untrained=allow_untrained)
        except EncoderMissingError as exc:
            raise EncoderMissingError(
                f"the monitor needs trained weights and {resolve_model_path(settings)} does not "
                "exist: set encoder.model_path (STREAMCOVER_ENCODER__MODEL_PATH) to the "
                "encoder checkpoint"
            ) from exc
    frontend = make_frontend(settings.frontend)
    # watch=True: a new catalog snapshot is picked up without a restart (hot swap).
    searcher = TwoStageSearcher.open(settings.catalog.path, settings.catalog, watch=True,
                                     model_id=encoder.model_id, verify_settings=settings.verify)
    if searcher.verifier is not None and int(frontend.n_bins) != 12:
        log.warning("stage3_needs_hpcp", front_end=settings.frontend.name,
                    detail="stage 3 aligns 12-bin HPCP; with this front end uploads are "
                           "scored by MaxMean alone: set match.threshold for that scale")
    if searcher.verifier is not None:
        # Compiles the alignment kernel now, so the first window does not pay for it (~3 s).
        searcher.verifier.warm_up()
    warn_if_catalog_stale(settings, encoder.model_id)
    if searcher.verifier is not None and searcher.view.feature_fps is None:
        log.warning(
            "catalog_without_features",
            catalog=str(settings.catalog.path),
            detail="stage 3 is on but the catalog stores no reference features, so every "
                   "score stays below match.threshold: run `streamcover catalog reembed "
                   "--force`, or set STREAMCOVER_VERIFY__ENABLED=false with a MaxMean threshold",
        )
    return Engine(frontend, encoder, searcher, None, trained,
                  calibration=load_calibration(settings, encoder.model_id))


def load_calibration(settings: Settings, model_id: str) -> Calibration | None:
    """The calibration file beside the model, if it was measured for this model and for the
    score the monitor thresholds (fused with stage 3 on, MaxMean with it off)."""
    from streamcover.match.calibration import Calibration, CalibrationError, default_path
    from streamcover.model.loading import resolve_model_path

    path = default_path(resolve_model_path(settings))
    if not path.is_file():
        log.warning("calibration_missing", path=str(path),
                    detail="events carry no false-alarm rate; run `streamcover calibrate`")
        return None
    try:
        cal = Calibration.load(path, model_id=model_id)
    except CalibrationError as exc:
        log.warning("calibration_unusable", path=str(path), detail=str(exc))
        return None
    stage3 = cal.stage3
    if stage3 is not None and stage3 != settings.verify.enabled:
        log.warning("calibration_other_scoring", path=str(path), stage3=stage3,
                    detail="measured with stage 3 " + ("on" if stage3 else "off"))
        return None
    return cal
