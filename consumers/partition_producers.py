"""The per-partition transactional producers: one per assigned input partition, whose
transactional id belongs to the partition, not to the instance (``<prefix>-<audio topic>-<p>``;
docs/monitor.md "Fencing"), and the one transaction per partition and batch that writes its
events, dead letters, checkpoints and consumed offset together.

Creating a partition's producer (``InitProducerId``) bumps its id's epoch: a predecessor's
open transaction is aborted and its later commit fails (:func:`is_fenced`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from consumers.kafka import producer_kwargs
from streamcover.config import KafkaSettings
from streamcover.events import encode, value_budget
from streamcover.monitor.pipeline import Output


def is_fenced(exc: BaseException) -> bool:
    """Whether a failed transaction failed because another producer took the id over."""
    from aiokafka.errors import InvalidProducerEpoch, ProducerFenced

    return isinstance(exc, (ProducerFenced, InvalidProducerEpoch)) or "fenced" in type(exc).__name__.lower()


class PartitionProducers:
    """The open transactional producer of each owned input partition (:attr:`producers`)."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.producers: dict[int, Any] = {}

    def transactional_id(self, partition: int) -> str:
        """The transactional id of input partition ``partition`` (shared by every instance)."""
        k = self.settings
        return f"{k.transactional_id_prefix}-{k.audio_topic}-{partition}"

    async def open(self, partitions: set[int]) -> None:
        """Create the producers the partitions lack (fencing any previous owner and ending
        its open transaction)."""
        from aiokafka import AIOKafkaProducer

        k = self.settings

        async def producer_for(p: int) -> None:
            producer = AIOKafkaProducer(**producer_kwargs(k, transactional_id=self.transactional_id(p)))
            try:
                await producer.start()  # InitProducerId: bumps the epoch, aborts a zombie's txn
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), 10)
                raise
            self.producers[p] = producer

        await asyncio.gather(*(producer_for(p) for p in sorted(partitions) if p not in self.producers))

    async def close(self, partitions: list[int]) -> None:
        """Stop the partitions' producers (errors ignored: the partitions are given up)."""
        producers = [self.producers.pop(p) for p in partitions if p in self.producers]

        async def close(producer: Any) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 10)

        await asyncio.gather(*(close(pr) for pr in producers))

    async def commit(self, partition: int, out: Output) -> None:
        """One transaction of ``partition``'s producer: its events, dead letters, stream
        checkpoints and consumed offset (``send_offsets_to_transaction``)."""
        from aiokafka import TopicPartition

        k = self.settings
        producer = self.producers[partition]

        async def transact() -> None:
            async with producer.transaction():
                futures = []
                for ev in out.events:
                    ev_key = ev.stream_id.encode()
                    # shrunk (set list, metadata) to what the broker accepts: events.fit_event
                    ev_value = encode(ev, max_bytes=value_budget(k.max_message_bytes, ev_key))
                    futures.append(await producer.send(k.match_topic, key=ev_key, value=ev_value))
                for dl in out.dead_letters:
                    futures.append(await producer.send(k.dead_letter_topic, key=dl.key, value=encode(dl)))
                for p, key, value in out.states:
                    # value None is a tombstone: compaction deletes the key.
                    futures.append(await producer.send(k.state_topic, key=key.encode(), value=value,
                                                       partition=p))
                if futures:
                    await asyncio.gather(*futures)
                if partition in out.offsets:
                    await producer.send_offsets_to_transaction(
                        {TopicPartition(k.audio_topic, partition): out.offsets[partition]}, k.group_id)

        await asyncio.wait_for(transact(), k.request_timeout_ms / 1000 * 2 + 5)
