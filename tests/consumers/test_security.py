"""SASL over TLS against the real local broker's SASL_SSL listener.

The monitor must reach secured clusters with nothing but settings; these tests build every
client from ``KafkaSettings`` via ``consumers.kafka`` and check that the broker enforces
both halves: the password (SASL) and the certificate chain + hostname (TLS).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from pydantic import SecretStr

from consumers.broker import KafkaBroker
from consumers.broker.certificates import make_test_certificates
from consumers.kafka import consumer_kwargs, ensure_topics, producer_kwargs, ssl_context
from streamcover.config import KafkaSettings

StartedProducer = Callable[..., AbstractAsyncContextManager[AIOKafkaProducer]]
"""The ``started_producer`` fixture (tests/conftest.py)."""


async def _round_trip(started_producer: StartedProducer, settings: KafkaSettings,
                      payload: bytes) -> bytes:
    topic = settings.audio_topic
    await ensure_topics(settings, {topic: 1})
    async with started_producer(settings) as producer:
        await producer.send_and_wait(topic, payload, key=b"secure-stream")
    consumer = AIOKafkaConsumer(topic, **consumer_kwargs(settings))
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            while True:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    for r in records:
                        assert r.value is not None
                        return r.value
    finally:
        await consumer.stop()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
async def test_sasl_ssl_round_trip(
    kafka_sasl_settings: KafkaSettings, mechanism: str, started_producer: StartedProducer
) -> None:
    settings = kafka_sasl_settings.model_copy(update={"sasl_mechanism": mechanism})
    assert settings.security_protocol == "SASL_SSL"
    assert settings.ssl_check_hostname  # the broker cert is verified, name included
    kwargs = producer_kwargs(settings)
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert kwargs["sasl_mechanism"] == mechanism
    payload = f"secured via {mechanism}".encode()
    assert await _round_trip(started_producer, settings, payload) == payload


async def test_sasl_ssl_settings_from_environment(
    kafka_sasl_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch,
    started_producer: StartedProducer,
) -> None:
    """The STREAMCOVER_KAFKA__* variables (docker-compose, ops) configure the same thing."""
    from streamcover.config import Settings

    s = kafka_sasl_settings
    assert s.sasl_password is not None
    env = {
        "STREAMCOVER_KAFKA__BOOTSTRAP_SERVERS": s.bootstrap_servers,
        "STREAMCOVER_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMCOVER_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAMCOVER_KAFKA__SASL_USERNAME": str(s.sasl_username),
        "STREAMCOVER_KAFKA__SASL_PASSWORD": s.sasl_password.get_secret_value(),
        "STREAMCOVER_KAFKA__SSL_CAFILE": str(s.ssl_cafile),
        "STREAMCOVER_KAFKA__AUDIO_TOPIC": s.audio_topic,
        "STREAMCOVER_KAFKA__GROUP_ID": s.group_id,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings(_env_file=None).kafka
    assert settings.security_protocol == "SASL_SSL"
    assert await _round_trip(started_producer, settings, b"from env") == b"from env"


async def _expect_connect_failure(
    settings: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> str:
    producer = AIOKafkaProducer(**producer_kwargs(settings, request_timeout_ms=10_000))
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        try:
            await producer.start()
        finally:
            await producer.stop()
    return "\n".join(r.getMessage() for r in caplog.records)


async def test_wrong_password_is_an_authentication_failure(
    kafka_sasl_settings: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    for mechanism in ("SCRAM-SHA-512", "PLAIN"):
        bad = kafka_sasl_settings.model_copy(
            update={"sasl_mechanism": mechanism, "sasl_password": SecretStr("not-the-password")}
        )
        log = await _expect_connect_failure(bad, caplog)
        assert "[Error 58] SaslAuthenticationFailed" in log, log


async def test_unknown_user_is_an_authentication_failure(
    kafka_sasl_settings: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    bad = kafka_sasl_settings.model_copy(update={"sasl_username": "mallory"})
    log = await _expect_connect_failure(bad, caplog)
    assert "[Error 58] SaslAuthenticationFailed" in log, log


async def test_untrusted_certificate_is_rejected(
    kafka_sasl_settings: KafkaSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Right password, wrong CA: TLS verification stops the client before SASL."""
    other_ca, _ = make_test_certificates(tmp_path / "other")
    bad = kafka_sasl_settings.model_copy(update={"ssl_cafile": other_ca})
    log = await _expect_connect_failure(bad, caplog)
    assert "CERTIFICATE_VERIFY_FAILED" in log, log
    assert "SaslAuthenticate" not in log  # never got as far as sending the password


async def test_plaintext_client_cannot_use_the_secured_listener(
    kafka_sasl_settings: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    plain = KafkaSettings(
        bootstrap_servers=kafka_sasl_settings.bootstrap_servers, request_timeout_ms=5_000
    )
    await _expect_connect_failure(plain, caplog)


def test_ssl_settings_errors_name_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(FileNotFoundError, match=r"kafka\.ssl_cafile"):
        ssl_context(KafkaSettings(security_protocol="SSL", ssl_cafile=missing))
    with pytest.raises(ValueError, match="sasl_mechanism"):
        KafkaSettings(security_protocol="SASL_SSL")


def test_broker_exposes_secured_listener(kafka_broker: KafkaBroker) -> None:
    assert kafka_broker.sasl_ssl_bootstrap_servers.startswith("127.0.0.1:")
    assert kafka_broker.sasl_ssl_bootstrap_servers != kafka_broker.bootstrap_servers
    assert kafka_broker.ssl_cafile is not None and kafka_broker.ssl_cafile.is_file()
    assert kafka_broker.sasl_username and kafka_broker.sasl_password


# ---- the broker's own secret: never on a command line, never printed -------------------------


def _cmdlines() -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:
                continue  # exited meanwhile, or not ours to read
    return out


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_session_broker_keeps_its_password_off_command_lines_and_logs(
    kafka_broker: KafkaBroker,
) -> None:
    secret = kafka_broker.sasl_password.encode()
    proc = kafka_broker._proc
    assert proc is not None and proc.poll() is None
    jvm = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    assert b"kafka.Kafka" in jvm and secret not in jvm
    assert secret not in kafka_broker.log_path.read_bytes()
    assert kafka_broker.work_dir is not None
    props = kafka_broker.work_dir / "server.properties"
    assert _mode(props) == 0o600 and secret in props.read_bytes()  # the PLAIN JAAS entry
    assert not (kafka_broker.work_dir / "storage-format.args").exists()


def test_broker_run_prints_a_password_file_not_the_password(kafka_broker: KafkaBroker) -> None:
    from consumers.broker.cli import env_lines

    lines = env_lines(kafka_broker)
    assert not any(kafka_broker.sasl_password in line for line in lines)
    (line,) = [line for line in lines if line.startswith("STREAMCOVER_KAFKA__SASL_PASSWORD=")]
    path = Path(line.split("$(cat ", 1)[1].rstrip(')"'))
    assert _mode(path) == 0o600 and path.read_text() == kafka_broker.sasl_password


@pytest.mark.slow
def test_storage_format_never_shows_the_password_to_ps(
    tmp_path: Path, started_producer: StartedProducer
) -> None:
    """Watch every process's command line while a SASL broker formats and starts."""
    import threading

    secret = "pw" + "0123456789abcdef" * 2
    seen: list[int] = []
    java_seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for pid, cmd in _cmdlines().items():
                if b"java" in cmd or b"StorageTool" in cmd:
                    java_seen.add(pid)
                if secret.encode() in cmd:
                    seen.append(pid)
            done.wait(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with KafkaBroker(sasl_ssl=True, sasl_password=secret, data_dir=tmp_path / "b") as broker:
            settings = broker.client_settings(secure=True, audio_topic="t.secret")
            assert asyncio.run(_round_trip(started_producer, settings, b"x")) == b"x"  # the SCRAM user exists
            assert _mode(tmp_path / "b" / "server.properties") == 0o600
            assert secret.encode() not in broker.log_path.read_bytes()
    finally:
        done.set()
        watcher.join()
    assert len(java_seen) >= 2  # StorageTool's JVM and the broker's were both watched
    assert seen == []
