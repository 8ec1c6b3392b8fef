"""The monitor's engine refuses to run without encoder weights unless asked to."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamcover.config import Settings
from streamcover.model.loading import EncoderMissingError
from streamcover.monitor.engine import build_engine


def test_build_engine_refuses_missing_weights_naming_the_path_and_setting(tmp_path: Path) -> None:
    missing = tmp_path / "none.pt"
    settings = Settings(_env_file=None, encoder={"threads": 1, "device": "cpu", "model_path": missing},
                        catalog={"path": tmp_path / "catalog"})  # type: ignore[arg-type]
    with pytest.raises(EncoderMissingError) as info:
        build_engine(settings)
    assert str(missing) in str(info.value)
    assert "STREAMCOVER_ENCODER__MODEL_PATH" in str(info.value)
