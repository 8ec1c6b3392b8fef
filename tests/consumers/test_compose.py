"""docker-compose.yml cannot run here (no Docker engine); keep it consistent with the code."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from pydantic import BaseModel

from consumers.broker.jars import DEFAULT_KAFKA_VERSION, POM_PATH
from consumers.broker.process import MESSAGE_MAX_BYTES
from streamcover.config import PROJECT_ROOT, KafkaSettings, Settings

yaml = pytest.importorskip("yaml")


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    return data


def _setting_exists(path: list[str]) -> bool:
    model: type[BaseModel] = Settings
    for i, part in enumerate(path):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if i < len(path) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True


def test_monitor_environment_names_real_settings() -> None:
    env: dict[str, str] = _compose()["services"]["monitor"]["environment"]
    assert env, "monitor has no environment"
    for name in env:
        assert name.startswith("STREAMCOVER_"), name
        path = name.removeprefix("STREAMCOVER_").lower().split("__")
        assert _setting_exists(path), f"{name} does not name a field of streamcover.config"


def test_monitor_environment_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    env: dict[str, str] = _compose()["services"]["monitor"]["environment"]
    for k, v in env.items():
        monkeypatch.setenv(k, str(v))
    settings = Settings(_env_file=None)
    assert settings.kafka.bootstrap_servers == "kafka:19092"
    assert str(settings.catalog.path) == "/catalog"
    volumes = _compose()["services"]["monitor"]["volumes"]
    assert any(v.endswith(":/catalog:ro") for v in volumes), "catalog is not a volume"


def test_kafka_image_matches_the_jars_and_broker_settings() -> None:
    kafka = _compose()["services"]["kafka"]
    image_version = kafka["image"].split(":")[1]
    pom = ET.parse(POM_PATH).getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    pom_version = pom.find("m:properties/m:kafka.version", ns)
    assert pom_version is not None
    assert image_version == pom_version.text == DEFAULT_KAFKA_VERSION
    env = kafka["environment"]
    assert int(env["KAFKA_MESSAGE_MAX_BYTES"]) == MESSAGE_MAX_BYTES
    assert KafkaSettings().max_message_bytes <= MESSAGE_MAX_BYTES
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    # The host-facing listener is what the settings' default bootstrap points at.
    assert f"HOST://{KafkaSettings().bootstrap_servers}" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert all(p.startswith("127.0.0.1:") for p in kafka["ports"]), "publish on loopback only"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"])
