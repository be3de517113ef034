"""Publishing PositionRecords: real-time (one produce per record as it is made) or batch.

Batch mode buffers records in the process and sends them every ``batch_flush_interval_s``
or ``batch_size`` records. Nothing is lost on shutdown or crash: Faust flushes its producer
before it commits input offsets, and the keeper's app runs :meth:`RecordPublisher.flush`
first in that same flush (``before_producer_flush`` of
:func:`oms.kafka.faust_worker.new_faust_app`), so an input offset is never committed while
a record it produced is still only in the buffer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from oms.positions.state import compact_json
from oms.schemas import PositionRecord

# Produce one record: (key, value) on the positions topic.
Send = Callable[[str, bytes], Awaitable[None]]


class RecordPublisher:
    """Sends records to ``oms.positions`` keyed by position key (through ``send``)."""

    def __init__(self, send: Send, *, batch: bool, batch_size: int) -> None:
        self._send_raw = send
        self.batch = batch
        self.batch_size = batch_size
        self._buffer: list[PositionRecord] = []
        self.published = 0
        self.flushes = 0

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
        await self._send_raw(record.key, compact_json(record))
        self.published += 1

    def stats(self) -> dict[str, Any]:
        return {
            "mode": "batch" if self.batch else "real_time",
            "published": self.published,
            "buffered": len(self._buffer),
            "flushes": self.flushes,
        }
