"""``server.properties`` of the local broker: one combined KRaft broker+controller on
loopback, sized for a small shared machine, with an optional SASL_SSL listener."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from consumers.broker.ports import BrokerPorts

SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
"""Mechanisms the SASL_SSL listener accepts; SCRAM users are created at format time."""

MESSAGE_MAX_BYTES = 8 * 1024 * 1024
"""Largest record batch the local broker accepts.

Kafka's default (~1 MiB) is smaller than a maximal audio frame plus its dead-letter envelope;
``KafkaSettings.max_message_bytes`` matches this on the client side.
"""


def server_properties(
    host: str,
    ports: BrokerPorts,
    work_dir: Path,
    *,
    keystore: Path | None = None,
    sasl_username: str = "",
    sasl_password: str = "",
    extra: Mapping[str, str] | None = None,
) -> str:
    """The text of ``server.properties``: the data under ``work_dir / "data"``; with a
    ``keystore`` (PEM) the SASL_SSL listener on ``ports.sasl_ssl`` too, whose PLAIN user is
    ``sasl_username``/``sasl_password`` (so the file must be private); ``extra`` last."""
    h, p = host, ports
    listeners = [f"PLAINTEXT://{h}:{p.plaintext}", f"CONTROLLER://{h}:{p.controller}"]
    advertised = [f"PLAINTEXT://{h}:{p.plaintext}"]
    protocol_map = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    props: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{h}:{p.controller}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(work_dir / "data"),
        # A single node: every internal topic has exactly one replica.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "5",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "5",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "message.max.bytes": str(MESSAGE_MAX_BYTES),
        # Small footprint on a shared 2-core machine with a 512 MiB heap.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.cleaner.threads": "1",
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        "log.cleaner.backoff.ms": "1000",
    }
    if keystore is not None:
        listeners.append(f"SASL_SSL://{h}:{p.sasl_ssl}")
        advertised.append(f"SASL_SSL://{h}:{p.sasl_ssl}")
        protocol_map.append("SASL_SSL:SASL_SSL")
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        props.update(
            {
                "sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
                "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": scram,
                "listener.name.sasl_ssl.plain.sasl.jaas.config": (
                    "org.apache.kafka.common.security.plain.PlainLoginModule required "
                    f'user_{sasl_username}="{sasl_password}";'
                ),
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(keystore),
                "ssl.client.auth": "none",
            }
        )
    props["listeners"] = ",".join(listeners)
    props["advertised.listeners"] = ",".join(advertised)
    props["listener.security.protocol.map"] = ",".join(protocol_map)
    props.update(extra or {})
    lines = ["# written by consumers/broker/process.py; one combined KRaft broker+controller"]
    lines += [f"{k}={v}" for k, v in props.items()]
    return "\n".join(lines) + "\n"
