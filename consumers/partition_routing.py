"""Which input partition each piece of a batch's output belongs to: the split of one
:class:`Output` into one per partition, and the partition a stream's key is produced to."""

from __future__ import annotations

from collections.abc import Callable

from streamcover.monitor.pipeline import Output


def split_output(out: Output, partition_of: Callable[[str], int | None]) -> dict[int, Output]:
    """Split one batch's output into one :class:`Output` per input partition.

    Why: each input partition commits in its own transaction (its own transactional id),
    so everything a partition's records caused must travel with that partition's offset.
    Events are placed by their stream (``partition_of``); ones whose stream is unknown are
    left out under the key -1 for the caller to report.
    """
    parts: dict[int, Output] = {}

    def at(p: int) -> Output:
        return parts.setdefault(p, Output())

    for ev in out.events:
        p = partition_of(ev.stream_id)
        at(-1 if p is None else p).events.append(ev)
    for dl in out.dead_letters:
        at(dl.partition).dead_letters.append(dl)
    for state in out.states:
        at(state[0]).states.append(state)
    for p, off in out.offsets.items():
        at(p).offsets[p] = off
    return parts


def keyed_partition(stream_id: str, partitions: list[int]) -> int:
    """The partition Kafka's default partitioner (murmur2 of the key) gives ``stream_id``."""
    from aiokafka.partitioner import DefaultPartitioner

    return int(DefaultPartitioner()(stream_id.encode(), partitions, partitions))
