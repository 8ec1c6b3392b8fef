"""Loading the encoder the settings name: the one rule every command and the monitor share.

Without weights the encoder is untrained and matches only near-identical audio, so
running on one by accident would look like a working monitor that never hears a cover.
:func:`load_encoder` therefore refuses unless the caller asks for it (``allow_untrained``,
for the demo and tests), and then says so in the log.
"""

from __future__ import annotations

from pathlib import Path

from streamcover.config import PROJECT_ROOT, Settings
from streamcover.log import get_logger
from streamcover.model.checkpoint import CheckpointError
from streamcover.model.inference import Encoder

log = get_logger(__name__)


class EncoderMissingError(CheckpointError):
    """The encoder checkpoint does not exist (and an untrained encoder was not allowed)."""


def resolve_model_path(settings: Settings, model: Path | None = None) -> Path:
    """``model`` or ``settings.encoder.model_path``; a relative path that does not exist
    here is taken relative to the project (where the shipped weights live)."""
    path = Path(model) if model is not None else settings.encoder.model_path
    if not path.is_absolute() and not path.exists():
        path = PROJECT_ROOT / path
    return path


def load_encoder(
    settings: Settings,
    model: Path | None = None,
    *,
    allow_untrained: bool = False,
    seed: int = 0,
) -> tuple[Encoder, bool]:
    """The encoder from ``model`` (default ``settings.encoder.model_path``) and whether it
    is trained.

    A missing checkpoint raises :class:`EncoderMissingError`, or with ``allow_untrained``
    gives an untrained encoder of the compact configuration (deterministic in ``seed``)
    and a warning. An unusable checkpoint raises ``CheckpointError`` either way.
    """
    from streamcover.model.config import EncoderConfig

    path = resolve_model_path(settings, model)
    if path.is_file():
        enc = Encoder.from_checkpoint(path, device=settings.encoder.device, settings=settings)
        log.info("encoder_loaded", path=str(path), model_id=enc.model_id)
        return enc, True
    if not allow_untrained:
        raise EncoderMissingError(f"encoder checkpoint {path} not found (pass --model)")
    log.warning(
        "encoder_untrained",
        path=str(path),
        detail="shipped model not found: using an UNTRAINED encoder "
               "(matches only near-identical audio)",
    )
    cfg = EncoderConfig.compact(settings.frontend.name)
    return Encoder.untrained(cfg, seed=seed, device=settings.encoder.device, settings=settings), False
