"""Four fixes to faust-streaming that "a crash never loses an order" depends on.

1. Buffered table writes and offset commits.

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

2. Commits past an offset that was never processed.

``Consumer._new_offset`` computes the offset to commit from the acknowledged offsets. Its guard
against a gap at the head (``min(acked) - committed > 1``) is off by one: the committed offset
is the *next* offset to read, so with 15 committed and 16 acknowledged it commits 17 and offset
15, never processed (e.g. a request fetched just before a rebalance and dropped with the
stream's buffer), is skipped for good; with 0 committed the guard is skipped entirely. The
three-worker failover test lost requests this way (1-5 in 3 of 12 runs). The fix refuses to
commit past an unacknowledged head: the commit waits, and the partition is read again from the
committed offset at the next rebalance or restart (replays are idempotent here).

3. Offset jumps taken for gaps.

When the fetcher hands over an offset more than one past the last one read, Faust records the
skipped range as a "gap" (``Consumer._add_gap``) and counts it as acknowledged, so the next
commit moves past it. Gaps are real only in compacted or transactional topics; ours are
neither, so a jump means records were not delivered: after a rebalance, records fetched for
the old assignment arrive after the seek to the committed offset. The chaos suite's
``worker-kill`` scenario lost orders this way (33 of 1,000 over 15 kills: the requests
published while the killed worker was down, skipped by its successor during the rebalances
that evict the dead member). The fix records no gap: the commit stops at the first offset
not processed, and the stall healer below reads the partition again from there.

4. Partitions never committed are not sought back.

Faust drops fetched records on a rebalance (flow stopped, generation changed, partition
paused) and relies on its seek to the committed offsets to fetch them again. aiokafka's
``seek_to_committed`` does nothing for a partition without a committed offset, so records
fetched for it before the seek, then dropped, are gone: the fetch position is already past
them. The miniature worker-kill test lost whole partitions this way (about 1 run in 4): a
partition whose first requests arrived while the killed worker was down was fetched by its
successor during the rebalance, the records were dropped, and it was never read again. The
fix resets such partitions to their log start after every seek to the committed offsets,
which is where an uncommitted partition is read from anyway (``auto_offset_reset`` is
earliest). The reset is resolved by the fetcher's own routine (no broker request inside the
seek), and it discards records already buffered for the partition. Table changelogs are left
to Faust's recovery, which seeks them itself. Until the reset is resolved the partition has no
fetch position, which Faust's livelock check (``verify_event_path``) cannot take: it skips
such a partition instead of crashing the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import OffsetResetStrategy
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.producer import ProducerBuffer

_INSTALLED = "_oms_flush_fixed"
log = structlog.get_logger(__name__)


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

    original_new_offset = Consumer._new_offset

    def _new_offset(self: Any, tp: Any) -> int | None:
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if acked and committed is not None and not self._gap[tp] and min(acked) > committed:
            return None  # the head (``committed``) was never processed: do not skip it
        result: int | None = original_new_offset(self, tp)
        return result

    Consumer._new_offset = _new_offset  # type: ignore[method-assign]

    async def _add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        # Not a gap but records skipped (fix 3): never count them as processed.
        log.warning(
            "faust.offset_jump", topic=tp.topic, partition=tp.partition,
            skipped_from=offset_from, to=offset_to,
        )  # fmt: skip

    Consumer._add_gap = _add_gap  # type: ignore[method-assign]

    async def seek_to_committed(self: Any) -> Any:
        consumer = self._ensure_consumer()
        return await self.call_thread(
            _seek_to_committed_or_log_start, consumer, self.consumer, self.app
        )

    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed  # type: ignore[method-assign]

    original_verify = AIOKafkaConsumerThread.verify_event_path

    def verify_event_path(self: Any, now: float, tp: Any) -> None:
        # Faust's livelock check reads the fetch position, which aiokafka asserts is set; a
        # partition reset by fix 4 has none until the fetcher has resolved the reset, and
        # the assertion would crash the worker.
        subscription = self._ensure_consumer()._fetcher._subscriptions.subscription
        assignment = subscription.assignment if subscription is not None else None
        if assignment is None:
            return None  # between assignments: nothing to verify
        state = assignment.state_value(TopicPartition(tp.topic, tp.partition))
        if state is None or not state.has_valid_position:
            return None
        return original_verify(self, now, tp)

    AIOKafkaConsumerThread.verify_event_path = verify_event_path  # type: ignore[method-assign]


async def _seek_to_committed_or_log_start(consumer: Any, faust_consumer: Any, app: Any) -> Any:
    """aiokafka's seek to the committed offsets, plus fix 4: partitions never committed (0 is
    never a real commit either: aiokafka ignores it too) are reset to their log start."""
    committed = await consumer.seek_to_committed()
    never = [
        tp
        for tp, offset in committed.items()
        if not offset
        and not faust_consumer._is_changelog_tp(tp)
        and app.topics.acks_enabled_for(tp.topic)
    ]
    if never:
        # Not awaited: the fetcher's routine resolves the reset (a ListOffsets request).
        consumer._fetcher.request_offset_reset(never, OffsetResetStrategy.EARLIEST)
        log.debug("faust.reset_to_log_start", partitions=len(never))
    return committed


# How long an input partition may wait on a message that was never delivered before it is
# read again from its committed offset.
STALL_S = 5.0


class StallHealer:
    """Re-reads input partitions whose head message Faust dropped (fix 2's other half).

    Faust delivers a fetched message with ``wait_first(callback(message), suspend_flow)``
    and marks it read either way, so a message caught by a rebalance's flow suspension is
    never delivered; later offsets are, and (with fix 2) the commit stops at the dropped one.
    A partition whose lowest acknowledged offset stays above its committed offset for
    ``STALL_S`` is sought back to the committed offset: the dropped message is delivered, and
    those after it again (the caller marks them as replays, which are idempotent). So is a
    partition read past its committed offset with nothing acknowledged and nothing in flight:
    the dropped message was the last one read, and no later one would ever reveal it.
    """

    def __init__(self, consumer_of: Any, topics: set[str], stall_s: float = STALL_S) -> None:
        self._consumer_of = consumer_of
        self._topics = topics
        self._stall_s = stall_s
        self._since: dict[Any, float] = {}
        self.healed = 0

    def stalled(self, now: float) -> list[tuple[Any, int]]:
        """Partitions stalled for longer than ``stall_s``, with their committed offset."""
        consumer = self._consumer_of()
        due = []
        for tp in list(consumer.assignment()):
            if tp.topic not in self._topics:
                continue
            if not self._dropped(consumer, tp):
                self._since.pop(tp, None)
                continue
            first = self._since.setdefault(tp, now)
            if now - first >= self._stall_s:
                due.append((tp, consumer._committed_offset[tp]))
        return due

    @staticmethod
    def _dropped(consumer: Any, tp: Any) -> bool:
        """Whether a message at the committed offset was read but never delivered: later
        ones were processed, or (the dropped message was the last one read) nothing of the
        partition is processed or in flight although it was read up to the commit and the
        partition holds records beyond it."""
        committed = consumer._committed_offset.get(tp)
        if committed is None:
            return False
        acked = consumer._acked.get(tp)
        if acked:
            return bool(min(acked) > committed)
        read = getattr(consumer, "_read_offset", {}).get(tp)
        # Right after a seek the read offset equals the committed one too: only records
        # beyond the commit (highwater of the last fetch) make it a stall.
        if read is None or read < committed or (consumer.highwater(tp) or 0) <= committed:
            return False
        unacked = list(getattr(consumer, "_unacked_messages", ()))
        return not any(m.tp == tp and not m.acked for m in unacked)

    async def heal(self, tp: Any, offset: int) -> None:
        """Read ``tp`` again from ``offset``."""
        await self._consumer_of().seek(tp, offset)
        self._since.pop(tp, None)
        self.healed += 1
