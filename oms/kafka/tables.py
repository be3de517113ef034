"""Faust tables keyed by order id whose changelog partition comes from the key itself, and
whose writes go to the producer without Faust's channel machinery."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import faust
from mode import Service

from oms.kafka.partitioning import partition_of

# One changelog write: partition, key bytes, value bytes (None: a tombstone).
Write = tuple[int, bytes | None, bytes | None]


class KeyPartitionedTable(faust.Table):
    """A table whose writes go to the changelog partition of their key (Kafka's default
    partitioner), not to the partition of the message being processed.

    Faust's own rule needs a current stream event and refuses writes from anywhere else. The
    worker's tables are keyed by order id and every topic it reads by order id is
    co-partitioned with them, so inside an agent both rules give the same partition; this one
    also lets a command running in the background record the exchange's answer on its order
    (it has no stream event), and it never depends on which topic an agent happened to read.

    A write is serialised where it is made and queued; one task of the table hands the queue
    to the app's producer in order. Faust's path for the same write (``Topic.send_soon``, a
    future message through the serializer registry, the producer buffer, then
    ``Topic.publish_message`` with callbacks) cost about twice as much, and the table's
    writes are about half of what the worker produces. The producer must run
    :meth:`flush_changelog` whenever it is flushed (``before_producer_flush``): Faust flushes
    it before committing input offsets, so no offset is committed while a write made from
    that input is still queued here.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._should_expire_keys():
            raise ValueError(f"table {self.name}: windowed tables are not supported")
        self._writes: deque[Write] = deque()
        self._queued = asyncio.Event()
        # Held while writes are handed to the producer: the background task and a flush
        # never interleave, so the changelog receives writes in the order they were made.
        self._handing = asyncio.Lock()
        self.changelog_writes = 0

    def partition_for_key(self, key: Any) -> int | None:
        """The partition of ``key`` (a str order id) among the table's partitions."""
        partitions = self.partitions or self.app.conf.topic_partitions
        return partition_of(str(key), partitions)

    def on_key_set(self, key: Any, value: Any) -> None:
        """Queue the changelog record of ``key``'s new value."""
        serializers = self.app.serializers
        self._queue(
            key,
            serializers.dumps_value(self.value_type, value, serializer=self.value_serializer),
        )
        self._sensor_on_set(self, key, value)

    def on_key_del(self, key: Any) -> None:
        """Queue the tombstone of ``key``."""
        self._queue(key, None)
        self._sensor_on_del(self, key)

    def _queue(self, key: Any, value: bytes | None) -> None:
        partition = self.partition_for_key(key)
        assert partition is not None
        raw_key = self.app.serializers.dumps_key(self.key_type, key, serializer=self.key_serializer)
        self._writes.append((partition, raw_key, value))
        self._queued.set()

    @property
    def changelog_queued(self) -> int:
        """Writes not yet handed to the producer."""
        return len(self._writes)

    async def flush_changelog(self) -> None:
        """Hand every write queued so far to the producer (in order)."""
        async with self._handing:
            await self._hand_over()

    async def _hand_over(self) -> None:
        topic = self.changelog_topic.get_topic_name()
        producer = self.app.producer
        writes = self._writes
        while writes:
            partition, key, value = writes.popleft()
            await producer.send(
                topic, key, value, partition=partition, timestamp=None, headers=None
            )
            self.changelog_writes += 1

    @Service.task
    async def _hand_over_queued(self) -> None:
        while not self.should_stop:
            await self._queued.wait()
            self._queued.clear()
            async with self._handing:
                await self._hand_over()
