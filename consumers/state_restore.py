"""Restoring stream checkpoints: every committed record of the compacted state topic's
partitions, up to their end offsets (partition p of the state topic holds the streams of
audio partition p)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from consumers.kafka import consumer_kwargs
from streamcover.config import KafkaSettings


class StateLoadError(RuntimeError):
    """The state partitions could not be read up to their end offsets."""


async def load_state(settings: KafkaSettings, partitions: set[int],
                     sink: Callable[[int, str, bytes | None], None], timeout_s: float) -> int:
    """Feed every committed record of the state ``partitions`` to ``sink`` in log order.

    Reads up to the end offsets taken at the start (read_committed: the last stable offset,
    so an open transaction of a predecessor must have been ended first). Raises
    :class:`StateLoadError` if those offsets are not reached within ``timeout_s``.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    if not partitions:
        return 0
    reader = AIOKafkaConsumer(**consumer_kwargs(settings, group_id=None, enable_auto_commit=False))
    await reader.start()
    count = 0
    try:
        tps = [TopicPartition(settings.state_topic, p) for p in sorted(partitions)]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        ends: Mapping[Any, int] = await reader.end_offsets(tps)
        pending = {tp for tp in tps if ends.get(tp, 0) > 0}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise StateLoadError(
                    f"state partitions {sorted(tp.partition for tp in pending)} not read to their end "
                    f"offsets within {timeout_s:g} s")
            got = await reader.getmany(*pending, timeout_ms=200)
            for tp, msgs in got.items():
                for m in msgs:
                    if m.key is None:
                        continue
                    sink(tp.partition, m.key.decode(), m.value)
                    count += 1
            for tp in list(pending):
                # Control records (transaction markers) advance the position without records.
                if await reader.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await reader.stop()
    return count
