"""Publishing PositionRecords: real-time (one produce per record as it is made) or batch.

Batch mode buffers records in the process and sends them every ``batch_flush_interval_s``
or ``batch_size`` records. Nothing is lost on shutdown or crash: Faust flushes its producer
before it commits input offsets, and the buffer is flushed inside that same flush, so an
input offset is never committed while a record it produced is still only in the buffer.
"""

from __future__ import annotations

from typing import Any

import faust

from oms.positions.state import compact_json
from oms.schemas import PositionRecord
from oms.settings import PositionSettings


class RecordPublisher:
    """Sends records to ``oms.positions`` keyed by position key."""

    def __init__(
        self, app: faust.App, topic: str, settings: PositionSettings, *, batch: bool
    ) -> None:
        self.app = app
        self.topic = topic
        self.batch = batch
        self.batch_size = settings.batch_size
        self._buffer: list[PositionRecord] = []
        self.published = 0
        self.flushes = 0
        self._hooked = False
        self._producer_flush: Any = None

    def start(self) -> None:
        """Hook the buffer into the producer's flush (batch mode); call once the app runs."""
        if not self.batch or self._hooked:
            return
        producer = self.app.producer
        original = producer.flush
        self._producer_flush = original

        async def flush_records_first() -> None:
            await self.flush()
            await original()

        producer.flush = flush_records_first  # type: ignore[method-assign]
        self._hooked = True

    async def flush_producer_only(self) -> None:
        """Flush what is already sent to the producer, leaving the record buffer alone (the
        router's commits need their bundles on the broker, not the buffered records)."""
        await (self._producer_flush or self.app.producer.flush)()

    async def publish(self, record: PositionRecord) -> None:
        if not self.batch:
            await self._send(record)
            return
        self._buffer.append(record)
        if len(self._buffer) >= self.batch_size:
            await self.flush()

    async def flush(self) -> None:
        """Send every buffered record (no-op in real-time mode)."""
        if not self._buffer:
            return
        records, self._buffer = self._buffer, []
        for record in records:
            await self._send(record)
        self.flushes += 1

    async def _send(self, record: PositionRecord) -> None:
        await self.app.producer.send(
            self.topic, record.key.encode(), compact_json(record), partition=None, timestamp=None,
            headers=None,
        )  # fmt: skip
        self.published += 1

    def stats(self) -> dict[str, Any]:
        return {
            "mode": "batch" if self.batch else "real_time",
            "published": self.published,
            "buffered": len(self._buffer),
            "flushes": self.flushes,
        }
