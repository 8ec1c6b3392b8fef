"""Retrying a call to the Kafka broker with exponential backoff, up to
``monitor.broker_retry_seconds``; past that the monitor stops with exit 75."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from consumers.exit_codes import EXIT_BROKER, MonitorExit
from streamcover.config import Settings
from streamcover.log import get_logger

log = get_logger(__name__)

T = TypeVar("T")


def backoff_delays(first: float = 0.5, cap: float = 10.0) -> Iterator[float]:
    """Exponential backoff delays: first, 2·first, … capped at ``cap`` (forever)."""
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * 2)


async def with_broker_retry(settings: Settings, what: str, call: Callable[[], Awaitable[T]]) -> T:
    """Run ``call`` until it succeeds, backing off, for ``monitor.broker_retry_seconds``;
    then raise :class:`MonitorExit` (75). Each attempt is bounded by the request timeout."""
    limit = settings.monitor.broker_retry_seconds
    timeout = settings.kafka.request_timeout_ms / 1000 * 2 + 5
    deadline = time.monotonic() + limit
    for attempt, delay in enumerate(backoff_delays(), start=1):
        try:
            return await asyncio.wait_for(call(), timeout)
        except MonitorExit:
            raise
        except Exception as exc:  # broker errors of every kind are retried alike
            left = deadline - time.monotonic()
            if left <= 0:
                raise MonitorExit(EXIT_BROKER, (
                    f"{what}: the Kafka broker at {settings.kafka.bootstrap_servers} was "
                    f"not usable for {limit:.0f} s (last error: {type(exc).__name__}: {exc})")) from exc
            log.warning("broker_retry", what=what, attempt=attempt, error=f"{type(exc).__name__}: {exc}",
                        retry_in_s=round(min(delay, left), 2))
            await asyncio.sleep(min(delay, left))
    raise AssertionError("unreachable")
