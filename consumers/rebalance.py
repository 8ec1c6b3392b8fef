"""The consumer's rebalance listener: aiokafka's callbacks, handed on as partition numbers
to the monitor (:meth:`consumers.monitor.Monitor.on_revoked` / ``on_assigned``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol


class RebalanceHandler(Protocol):
    async def on_revoked(self, partitions: Iterable[int]) -> None: ...

    async def on_assigned(self, partitions: Iterable[int]) -> None: ...


def _listener_base() -> type:
    from aiokafka import ConsumerRebalanceListener

    return ConsumerRebalanceListener


class RebalanceListener(_listener_base()):  # type: ignore[misc]
    """Rebalance callbacks: revocation waits for the transaction in flight; assignment
    takes the partitions before their records are processed."""

    def __init__(self, monitor: RebalanceHandler) -> None:
        self.monitor = monitor

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.monitor.on_revoked(tp.partition for tp in revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.monitor.on_assigned(tp.partition for tp in assigned)
