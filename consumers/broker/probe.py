"""The readiness probe: one aiokafka admin metadata call, callable from sync code."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

from streamcover.config import KafkaSettings


async def probe_cluster(
    settings: KafkaSettings, timeout_s: float = 5.0
) -> dict[str, Any]:
    """One admin metadata call; returns aiokafka's ``describe_cluster()`` dict."""
    from aiokafka.admin import AIOKafkaAdminClient

    from consumers.kafka import admin_kwargs

    kwargs = admin_kwargs(settings)
    kwargs["request_timeout_ms"] = max(1000, int(timeout_s * 1000))
    admin = AIOKafkaAdminClient(**kwargs)
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            info: dict[str, Any] = await admin.describe_cluster()
            return info
    finally:
        await admin.close()


def in_thread(coro_factory: Any) -> Any:
    """Run ``asyncio.run(coro_factory())`` on a helper thread.

    The launcher is synchronous (fixtures, CLI) but may be called while an event loop is
    running in this thread (an async test); a private thread and loop work in both cases.
    """
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-probe") as pool:
        return pool.submit(lambda: asyncio.run(coro_factory())).result()
