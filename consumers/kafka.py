"""aiokafka clients built from ``streamcover.config.KafkaSettings``: one place for security.

Why: every service (monitor, send, mic, demo) must reach plain local brokers and secured
clusters (SASL PLAIN/SCRAM over TLS) alike, with the same knobs. The ``*_kwargs`` functions
return keyword arguments for ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and
``AIOKafkaAdminClient``; callers add their own serialisers/topics. :func:`ensure_topics`
creates the topics idempotently (the state topic compacted).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streamcover.config import KafkaSettings


class TopicSetupError(RuntimeError):
    """A topic could not be created, or exists with settings we cannot work with."""


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    """TLS context for SSL/SASL_SSL: CA from ``ssl_cafile`` (else the system store),
    optional client certificate (mutual TLS), hostname check per ``ssl_check_hostname``."""
    from aiokafka.helpers import create_ssl_context

    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(settings, name)
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"kafka.{name}: {path} does not exist")
    if settings.ssl_keyfile is not None and settings.ssl_certfile is None:
        raise ValueError("kafka.ssl_keyfile needs kafka.ssl_certfile")
    ctx = create_ssl_context(
        cafile=settings.ssl_cafile,
        certfile=settings.ssl_certfile,
        keyfile=settings.ssl_keyfile,
    )
    if not settings.ssl_check_hostname:
        # The chain is still verified; only the name match is skipped.
        ctx.check_hostname = False
    return ctx


def _common_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "request_timeout_ms": settings.request_timeout_ms,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        # KafkaSettings validates that mechanism, username and password are all set.
        assert settings.sasl_password is not None
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return kwargs


def producer_kwargs(
    settings: KafkaSettings, *, transactional_id: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """``AIOKafkaProducer`` arguments: acks=all and idempotence, so retries never duplicate.

    ``transactional_id`` turns on transactions (the monitor's exactly-once path).
    """
    kwargs = _common_kwargs(settings)
    kwargs.update(
        acks="all",
        enable_idempotence=True,
        max_request_size=settings.max_message_bytes,
        # A batch must hold at least one maximal record.
        max_batch_size=max(16_384, min(settings.max_message_bytes, 1_048_576)),
        linger_ms=5,
    )
    if transactional_id is not None:
        kwargs["transactional_id"] = transactional_id
        kwargs["transaction_timeout_ms"] = settings.transaction_timeout_ms
    kwargs.update(overrides)
    return kwargs


def consumer_kwargs(settings: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """``AIOKafkaConsumer`` arguments: the settings' group, manual commits, read_committed.

    read_committed hides records of aborted or still-open transactions, which is what makes
    the monitor's transactional output exactly-once for readers. ``overrides`` win, e.g.
    ``group_id=None`` for a group-less reader or ``isolation_level="read_uncommitted"``.
    """
    kwargs = _common_kwargs(settings)
    kwargs.update(
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=max(1_048_576, settings.max_message_bytes),
        fetch_max_bytes=max(52_428_800, settings.max_message_bytes),
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=min(settings.heartbeat_interval_ms, settings.session_timeout_ms // 3),
    )
    kwargs.update(overrides)
    return kwargs


def admin_kwargs(settings: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """``AIOKafkaAdminClient`` arguments."""
    kwargs = _common_kwargs(settings)
    kwargs.update(overrides)
    return kwargs


@dataclass(frozen=True)
class TopicSpec:
    """What a topic needs: partitions and topic-level configs."""

    partitions: int = 1
    config: Mapping[str, str] = field(default_factory=dict)


def standard_topics(settings: KafkaSettings) -> dict[str, TopicSpec]:
    """The topics streamcover uses, from the settings.

    The state topic is compacted: only the latest checkpoint per stream key is kept.
    Audio has ``audio_partitions`` partitions; the stream id key keeps a stream on one.
    Every topic gets an explicit ``max.message.bytes`` equal to what the producers may send
    (``max_message_bytes``), so a broker with a smaller default (1 MiB on a stock broker)
    cannot reject a record the monitor already decided to write.
    """
    big = {"max.message.bytes": str(settings.max_message_bytes)}
    return {
        settings.audio_topic: TopicSpec(settings.audio_partitions, big),
        settings.match_topic: TopicSpec(settings.audio_partitions, big),
        settings.dead_letter_topic: TopicSpec(1, big),
        settings.state_topic: TopicSpec(
            settings.audio_partitions, {**big, "cleanup.policy": "compact"}
        ),
    }


def _as_spec(value: int | TopicSpec | Mapping[str, Any]) -> TopicSpec:
    if isinstance(value, TopicSpec):
        return value
    if isinstance(value, int):
        return TopicSpec(partitions=value)
    return TopicSpec(
        partitions=int(value.get("partitions", 1)),
        config={str(k): str(v) for k, v in dict(value.get("config", {})).items()},
    )


async def topic_config(settings: KafkaSettings, topic: str) -> dict[str, str]:
    """The effective topic-level configuration of ``topic`` (DescribeConfigs)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(**admin_kwargs(settings))
    try:
        await admin.start()
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
    finally:
        await admin.close()
    out: dict[str, str] = {}
    for response in responses:
        for resource in response.resources:
            error_code, error_message, _type, name, entries = resource[:5]
            if error_code:
                raise TopicSetupError(f"describe configs of topic {name!r}: {error_message}")
            for entry in entries:
                out[entry[0]] = entry[1]
    return out


async def ensure_topics(
    settings: KafkaSettings,
    topics: Mapping[str, int | TopicSpec | Mapping[str, Any]] | None = None,
    *,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet; return the names actually created.

    ``topics`` maps name -> partitions, :class:`TopicSpec`, or ``{"partitions", "config"}``;
    default :func:`standard_topics`. Existing topics are accepted if they have at least the
    requested partitions and the same ``cleanup.policy`` (a non-compacted state topic would
    silently lose checkpoints, so that is an error). Waits until every partition has a leader.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import for_code

    specs = {name: _as_spec(v) for name, v in (topics or standard_topics(settings)).items()}
    if not specs:
        return []
    admin = AIOKafkaAdminClient(**admin_kwargs(settings))
    created: list[str] = []
    try:
        await admin.start()
        response = await admin.create_topics(
            [
                NewTopic(name, spec.partitions, settings.topic_replication_factor,
                         topic_configs=dict(spec.config))
                for name, spec in specs.items()
            ],
            timeout_ms=int(timeout_s * 1000),
        )
        existing: list[str] = []
        for entry in response.topic_errors:
            name, code = entry[0], entry[1]
            message = entry[2] if len(entry) > 2 else None
            if code == 0:
                created.append(name)
            elif for_code(code).__name__ == "TopicAlreadyExistsError":
                existing.append(name)
            else:
                raise TopicSetupError(
                    f"creating topic {name!r} failed: {for_code(code).__name__}"
                    + (f" ({message})" if message else "")
                )
        await _wait_for_leaders(admin, specs, existing, timeout_s)
    finally:
        await admin.close()
    for name in existing:
        wanted = specs[name].config.get("cleanup.policy")
        if wanted is not None:
            actual = (await topic_config(settings, name)).get("cleanup.policy")
            if actual is not None and set(actual.split(",")) != set(wanted.split(",")):
                raise TopicSetupError(
                    f"topic {name!r} exists with cleanup.policy={actual}, expected {wanted}"
                )
    return created


async def _wait_for_leaders(
    admin: Any, specs: Mapping[str, TopicSpec], existing: list[str], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    pending = set(specs)
    while True:
        described = await admin.describe_topics(sorted(pending))
        for topic in described:
            name, partitions = topic["topic"], topic["partitions"]
            if topic["error_code"] != 0 or not partitions:
                continue
            if name in existing and len(partitions) < specs[name].partitions:
                raise TopicSetupError(
                    f"topic {name!r} exists with {len(partitions)} partitions, "
                    f"{specs[name].partitions} needed"
                )
            if all(p["leader"] >= 0 for p in partitions):
                pending.discard(name)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TopicSetupError(f"topics without leaders after {timeout_s:.0f} s: {sorted(pending)}")
        await asyncio.sleep(0.1)
