"""A fix to faust-streaming that exactly-once at the exchange depends on.

Table writes (``table[key] = value``) do not go to Kafka at once: Faust puts them in its
producer's buffer, and a background task sends them. Before committing consumer offsets Faust
flushes the producer, but ``ProducerBuffer.flush`` gives up as soon as 0.1 s pass without a
message leaving the buffer. On a loaded machine the sender task can be slower than that, so the
commit overtakes table writes still in the buffer; a worker killed right then has committed the
offset of a request whose order never reached the changelog. Its successor neither replays the
request nor finds the order: the order is lost. We saw exactly that under load in the failover
tests (an order with no trace anywhere, once in a few runs).

The fix makes ``flush`` wait until every message put in the buffer before the call has been
handed to the Kafka producer (which Faust then flushes too), however long the sender takes.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from faust.transport.producer import ProducerBuffer

_INSTALLED = "_oms_flush_fixed"


def install() -> None:
    """Patch :class:`ProducerBuffer` once per process (idempotent)."""
    if getattr(ProducerBuffer, _INSTALLED, False):
        return
    original_put = ProducerBuffer.put
    original_send = ProducerBuffer._send_pending

    def put(self: Any, fut: Any) -> None:
        self._oms_put = getattr(self, "_oms_put", 0) + 1
        original_put(self, fut)

    async def _send_pending(self: Any, fut: Any) -> None:
        try:
            await original_send(self, fut)
        finally:
            self._oms_sent = getattr(self, "_oms_sent", 0) + 1

    async def flush(self: Any) -> None:
        """Wait until everything buffered so far has been handed to the Kafka producer."""
        target = getattr(self, "_oms_put", 0)
        while getattr(self, "_oms_sent", 0) < target:
            if self.state != "running":
                raise RuntimeError("Cannot flush: Producer not Running")
            self.message_sent.clear()
            # A slow sender is waited for; the timeout only re-checks the counters.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.message_sent.wait(), timeout=1.0)

    ProducerBuffer.put = put  # type: ignore[method-assign]
    ProducerBuffer._send_pending = _send_pending  # type: ignore[method-assign]
    ProducerBuffer.flush = flush  # type: ignore[method-assign]
    setattr(ProducerBuffer, _INSTALLED, True)
