"""What several subcommands share: the ``--catalog`` option and the ``--model`` encoder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamcover.model.inference import Encoder


def catalog_path(args: argparse.Namespace) -> Path:
    """``--catalog``, else ``settings.catalog.path``."""
    from streamcover.config import get_settings

    return Path(args.catalog) if args.catalog is not None else get_settings().catalog.path


def cli_encoder(model: Path | None) -> Encoder:
    """The trained encoder from ``--model`` or the settings (``model.loading``); a missing
    or unusable checkpoint is a user-facing error, never an untrained encoder."""
    from streamcover.cli import CliError
    from streamcover.config import get_settings
    from streamcover.model.checkpoint import CheckpointError
    from streamcover.model.loading import load_encoder

    try:
        encoder, _ = load_encoder(get_settings(), model)
    except CheckpointError as exc:
        raise CliError(str(exc)) from exc
    return encoder
