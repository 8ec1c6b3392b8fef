"""One live monitor per instance id: the client id that names an instance in the consumer
group, and the refusal at start (exit 78) while another live member already has it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from consumers.broker_retry import with_broker_retry
from consumers.exit_codes import EXIT_DUPLICATE, MonitorExit
from consumers.kafka import admin_kwargs
from streamcover.config import Settings
from streamcover.log import get_logger

log = get_logger(__name__)


def member_client_id(settings: Settings) -> str:
    """The monitor consumer's client id: names the instance in the group (duplicate check)."""
    return f"{settings.kafka.client_id}-monitor-{settings.monitor.instance_id}"


def same_instance(client_id: str, instance_id: str) -> bool:
    """Whether a group member's client id names monitor instance ``instance_id`` (whatever
    ``kafka.client_id`` that monitor was started with)."""
    return client_id.endswith(f"-monitor-{instance_id}")


def member_client_ids(described: Iterable[Any]) -> list[str]:
    """Client ids of the members in DescribeGroups responses (any protocol version).

    A member is ``(member_id, [group_instance_id,] client_id, client_host, metadata,
    assignment)``: the client id is the third string field from the end of the strings
    before the two byte fields.
    """
    ids: list[str] = []
    for response in described:
        for group in getattr(response, "groups", []):
            members = next((f for f in group if isinstance(f, list)), [])
            for member in members:
                strings = [f for f in member if isinstance(f, str) or f is None]
                # (member_id, client_id, host) or (member_id, instance_id, client_id, host)
                if len(strings) >= 3 and isinstance(strings[-2], str):
                    ids.append(strings[-2])
    return ids


async def refuse_duplicate(settings: Settings) -> None:
    """Exit 78 if a live member of the group already has this instance's client id.

    A member that died (kill -9) stays listed until its session times out, so a listed
    twin is waited for that long: a dead one disappears, a live one stays.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    k = settings.kafka
    deadline = time.monotonic() + k.session_timeout_ms / 1000 + 3.0
    waited = False
    while True:
        async def describe() -> list[str]:
            admin = AIOKafkaAdminClient(**admin_kwargs(k))
            try:
                await admin.start()
                return member_client_ids(await admin.describe_consumer_groups([k.group_id]))
            finally:
                await admin.close()

        members = await with_broker_retry(settings, "describe_group", describe)
        if not any(same_instance(c, settings.monitor.instance_id) for c in members):
            if waited:
                log.info("instance_id_free", instance_id=settings.monitor.instance_id)
            return
        if time.monotonic() > deadline:
            raise MonitorExit(EXIT_DUPLICATE, (
                f"another monitor with instance id {settings.monitor.instance_id!r} is "
                f"live in consumer group {k.group_id!r}; give each running "
                "instance its own --instance-id / STREAMCOVER_MONITOR__INSTANCE_ID"))
        if not waited:
            log.warning("instance_id_in_use_waiting", instance_id=settings.monitor.instance_id,
                        seconds=round(deadline - time.monotonic(), 1))
            waited = True
        await asyncio.sleep(1.0)
