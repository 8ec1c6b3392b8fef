"""One encoder loader: a missing checkpoint stops a command unless untrained is asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamcover.config import Settings
from streamcover.model.checkpoint import CheckpointError
from streamcover.model.loading import EncoderMissingError, load_encoder, resolve_model_path


def _settings(model: Path) -> Settings:
    return Settings(_env_file=None, encoder={"threads": 1, "device": "cpu", "model_path": model})


def test_missing_weights_are_refused_by_default(tmp_path: Path) -> None:
    missing = tmp_path / "none.pt"
    with pytest.raises(EncoderMissingError, match=r"none\.pt not found") as info:
        load_encoder(_settings(missing))
    assert isinstance(info.value, CheckpointError)


def test_allow_untrained_gives_a_deterministic_untrained_encoder(tmp_path: Path) -> None:
    s = _settings(tmp_path / "none.pt")
    a, trained = load_encoder(s, allow_untrained=True, seed=3)
    b, _ = load_encoder(s, allow_untrained=True, seed=3)
    assert trained is False
    assert a.model_id == b.model_id and "untrained" in a.model_id


def test_an_explicit_model_overrides_the_settings(tmp_path: Path) -> None:
    given = tmp_path / "given.pt"
    assert resolve_model_path(_settings(tmp_path / "other.pt"), given) == given
