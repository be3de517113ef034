"""The notifier's durable state: a key -> JSON map kept in a compacted Kafka topic.

This is what a Faust changelog-backed table is (a compacted topic replayed into memory at
start), written by hand because the notifier changes state from timers (a group whose window
closed, an alert due to repeat), which Faust tables refuse outside stream iteration, and
because the consumer commits its offsets only after the state covering them is flushed.

One partition: one notifier process owns the state (like Alertmanager's notification log
per instance); a restarted notifier reads it back before consuming anything.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from oms.kafka.security import KafkaConnection, as_connection

log = structlog.get_logger(__name__)


class StateStore:
    """In-memory map mirrored to a compacted topic. ``put`` buffers, ``flush`` persists."""

    def __init__(
        self, producer: AIOKafkaProducer, kafka: KafkaConnection | str, topic: str
    ) -> None:
        self._producer = producer
        self._kafka = as_connection(kafka)
        self.topic = topic
        self.data: dict[str, Any] = {}
        self._dirty: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self._unacked: set[asyncio.Future[Any]] = set()
        # Records of the topic that were not JSON at the last restore (see restore()).
        self.unreadable = 0

    async def restore(self) -> int:
        """Read the topic from the beginning to its end; returns the records read."""
        consumer = AIOKafkaConsumer(
            **self._kafka.aiokafka(enable_auto_commit=False, group_id=None)
        )
        await consumer.start()
        read = 0
        self.unreadable = 0
        try:
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=10_000)
                for msg in batch.get(tp, []):
                    read += 1
                    key = msg.key.decode(errors="replace") if msg.key else ""
                    if msg.value is None:  # a deletion (put(key, None))
                        self.data.pop(key, None)
                        continue
                    value = _json_object(msg.value)
                    if value is None:
                        # Only this process writes the topic (JSON objects): a record it cannot
                        # read is not input to dead-letter but damage to report. Its key keeps
                        # the last readable value, so the notifier still starts.
                        self.unreadable += 1
                        log.error("notify.state_unreadable", key=key, offset=msg.offset)
                        continue
                    self.data[key] = value
        finally:
            await consumer.stop()
        log.info(
            "notify.state_restored", records=read, keys=len(self.data), unreadable=self.unreadable
        )
        return read

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def put(self, key: str, value: Any) -> None:
        """Set (or with None, delete) a key; persisted by the next :meth:`flush`."""
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value
        self._dirty[key] = value

    def items(self, prefix: str = "") -> list[tuple[str, Any]]:
        """The entries whose key starts with ``prefix`` (all of them by default)."""
        return [(k, v) for k, v in self.data.items() if k.startswith(prefix)]

    def forget_finished(self, cutoff_ms: int) -> int:
        """Delete delivery markers (``d:``) and finished notifications (``p:`` marked done)
        written before ``cutoff_ms``, so the state stays proportional to recent traffic
        (compaction then removes them); returns how many. Pending notifications and alerts
        are kept whatever their age."""
        old = [
            key
            for key, value in self.data.items()
            if (key.startswith("d:") or (key.startswith("p:") and value.get("done")))
            and value.get("at", cutoff_ms) < cutoff_ms
        ]
        for key in old:
            self.put(key, None)
        return len(old)

    async def flush(self) -> int:
        """Produce every changed key and wait until the broker has them all, and everything
        an earlier (concurrent) flush sent too: when this returns, every ``put`` made before
        the call is durable."""
        async with self._lock:  # only the sending: one partition, one order
            dirty, self._dirty = self._dirty, {}
            try:
                for key, value in dirty.items():
                    future = await self._producer.send(
                        self.topic,
                        key=key.encode(),
                        value=None if value is None else orjson.dumps(value),
                        partition=0,
                    )
                    self._unacked.add(future)
                    future.add_done_callback(self._unacked.discard)
            except Exception:
                # Broker trouble: keep the changes for the next flush (newer puts win).
                self._dirty = {**dirty, **self._dirty}
                raise
            waiting = list(self._unacked)
        if waiting:
            try:
                await asyncio.gather(*waiting)
            except Exception:
                self._dirty = {**dirty, **self._dirty}
                raise
        return len(dirty)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """``raw`` as a JSON object, or None if it is not one."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
