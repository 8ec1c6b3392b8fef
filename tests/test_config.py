"""The one settings object: env prefix, nesting and validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from streamcover.config import Settings


def test_defaults_follow_the_papers() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.audio.window_seconds == 20.0 and s.audio.hop_seconds == 10.0
    # ByteCover3 takes K=50 neighbour chunks per query chunk; 72 (fetch factor 1) is the
    # K measured to keep recall@10 >= 0.99 at 1M chunks (docs/catalog.md).
    assert s.catalog.top_k * s.catalog.stage1_fetch_factor == 72
    assert s.kafka.security_protocol == "PLAINTEXT"


def test_env_overrides_nested_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMCOVER_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    monkeypatch.setenv("STREAMCOVER_AUDIO__HOP_SECONDS", "5")
    monkeypatch.setenv("STREAMCOVER_MATCH__THRESHOLD", "0.7")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert s.audio.hop_seconds == 5.0
    assert s.match.threshold == 0.7


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("STREAMCOVER_MONITOR__MAX_STREAMS=17\n")
    s = Settings(_env_file=env)  # type: ignore[call-arg]
    assert s.monitor.max_streams == 17


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("STREAMCOVER_AUDIO__HOP_SECONDS", "30", "hop_seconds"),
        ("STREAMCOVER_MATCH__RELEASE_THRESHOLD", "0.9", "release_threshold"),
        ("STREAMCOVER_KAFKA__SECURITY_PROTOCOL", "SASL_SSL", "sasl"),
        ("STREAMCOVER_ENCODER__DEVICE", "tpu", "device"),
    ],
)
def test_invalid_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, message: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError, match=message):
        Settings(_env_file=None)  # type: ignore[call-arg]
