"""Where market data enters a worker: the whole ``market-ticks`` topic, read by every worker.

Conditional orders are partitioned by order id, but a condition may watch any instrument
(e.g. an ETH option released by the BTC index). So every worker reads every partition of the
tick stream with a group-less consumer and evaluates only the orders of the partitions it
owns. Ticks are small and few (instruments x 10 per second), so reading them all costs little,
and nothing about the design changes when partitions move between workers.

Every tick read goes into the worker's one :class:`~oms.market.cache.MarketCache` first (marks
for risk, the touch for chase, the latest values conditions compare with), then the ticks the
cache applied go to ``on_ticks`` (the trigger loop).

On start it re-reads the last ``worker.tick_replay_per_partition`` ticks of each partition
(500 by default, enough for every instrument of a partition), so the cache has current values
before anything asks: the one replay depth of the process. Of those warm-up ticks only the
newest per instrument is evaluated by the trigger engine (see
:meth:`~oms.streams.triggering.TriggerLoop.on_ticks`).

A message that is not a tick (a tombstone, an empty value, not JSON, not a tick) is skipped
and counted by every worker, and dead-lettered by one: the owner of its partition (see
``owns_partition``), and only when it arrives live. A warm-up tick was read live before, by
this worker before it restarted or by another: dead-lettering it again on every start would
report one bad tick once per restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from oms.component import Component
from oms.market.cache import MarketCache
from oms.schemas import DeadLetter, MarketTick, Topic
from oms.schemas.decode import KafkaMessage, Undecodable, decode
from oms.settings import Settings

if TYPE_CHECKING:
    from oms.kafka.security import KafkaConnection

log = structlog.get_logger(__name__)

OnTicks = Callable[[list[MarketTick], bool], Awaitable[None]]

# Live ticks decoded and evaluated per slice of a fetch (see TickFeed.run).
_SLICE = 200


class TickFeed(Component):
    """Reads every partition of the tick topic into ``market``, and hands the ticks it
    applied to ``on_ticks`` (with ``True`` for warm-up ticks).

    ``dead_letter`` receives the dead letters of the partitions ``owns_partition`` says this
    worker answers for (all of them by default: a lone reader)."""

    def __init__(
        self,
        settings: Settings,
        market: MarketCache,
        on_ticks: OnTicks,
        *,
        kafka: KafkaConnection,
        dead_letter: Callable[[DeadLetter], Awaitable[None]] | None = None,
        owns_partition: Callable[[int], bool] = lambda partition: True,
    ) -> None:
        super().__init__("tick-feed")
        self._settings = settings
        self._kafka = kafka
        self._market = market
        self._replay = settings.worker.tick_replay_per_partition
        self._on_ticks = on_ticks
        self._dead_letter = dead_letter
        self._owns_partition = owns_partition
        self._topic = settings.topic(Topic.MARKET_TICKS)
        self.received = 0
        self.invalid = 0
        self.dead_lettered = 0
        self.invalid_reasons: dict[str, int] = {}
        self.ready = asyncio.Event()

    def stats(self) -> dict[str, object]:
        """Counters for the worker's ``/stats``."""
        return {
            "received": self.received,
            "invalid": self.invalid,
            "invalid_reasons": dict(self.invalid_reasons),
            "dead_lettered": self.dead_lettered,
            "ready": self.ready.is_set(),
        }

    async def on_start(self) -> None:
        self.spawn(self._run_forever(), "consume")

    async def _run_forever(self) -> None:
        while True:  # a lost broker connection must not end the feed for good
            try:
                await self.run()
            except Exception:
                log.exception("tick_feed.failed")
                await asyncio.sleep(1.0)

    async def run(self) -> None:
        """Consume until cancelled (reconnects are aiokafka's job)."""
        consumer = AIOKafkaConsumer(
            **self._kafka.aiokafka(
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="latest",
                fetch_max_wait_ms=50,
                max_partition_fetch_bytes=4 * 1024 * 1024,
            )
        )
        await consumer.start()
        try:
            warm_until = await self._assign_all(consumer)
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                for tp, messages in batches.items():
                    # Offsets below ``end`` were on the topic before this feed started: all
                    # of them come before the live ones of the same partition.
                    end = warm_until.get(tp, 0)
                    live_from = next(
                        (i for i, m in enumerate(messages) if m.offset >= end), len(messages)
                    )
                    if live_from:
                        await self._apply(messages[:live_from], warm=True)
                    # Live ticks in slices, yielding between them: a large fetch is not decoded
                    # whole before the engine sees its first tick, and the triggers it fires
                    # are published while the rest is read.
                    for start in range(live_from, len(messages), _SLICE):
                        await self._apply(messages[start : start + _SLICE], warm=False)
                        await asyncio.sleep(0)
                if not self.ready.is_set() and all(await _positions_reached(consumer, warm_until)):
                    self.ready.set()
        finally:
            await consumer.stop()

    async def _apply(self, messages: list[KafkaMessage], *, warm: bool) -> None:
        """Decode ``messages`` into the market cache and hand what it applied to the trigger
        loop (warm-up ticks as one batch, so only the newest per instrument is evaluated)."""
        ticks: list[MarketTick] = []
        for message in messages:
            tick = decode(MarketTick, message.value)
            if isinstance(tick, Undecodable):
                await self._refuse(message, tick, live=not warm)
                continue
            ticks.append(tick)
        self.received += len(ticks)
        applied = self._market.update(ticks) if ticks else ticks
        if applied:
            await self._on_ticks(applied, warm)

    async def _refuse(self, message: KafkaMessage, failure: Undecodable, *, live: bool) -> None:
        """Skip a message that is not a tick (the topic is not compacted: a tombstone on it
        deletes nothing); dead-letter it if it is live and ours to report."""
        self.invalid += 1
        reason = failure.reason_code.value
        self.invalid_reasons[reason] = self.invalid_reasons.get(reason, 0) + 1
        if not live or self._dead_letter is None or not self._owns_partition(message.partition):
            return
        log.warning(
            "tick_feed.undecodable",
            partition=message.partition,
            offset=message.offset,
            reason_code=reason,
            error=failure.error[:300],
        )
        await self._dead_letter(failure.letter_for(message, consumer="worker"))
        self.dead_lettered += 1

    async def _assign_all(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
        # A group-less consumer learns no partitions by itself; the producer API waits for
        # the topic's metadata (public API, one short-lived connection at start).
        probe = AIOKafkaProducer(**self._kafka.aiokafka())
        await probe.start()
        try:
            partitions = await probe.partitions_for(self._topic)
        finally:
            await probe.stop()
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(begins[tp], ends[tp] - self._replay))
        log.info("tick_feed.assigned", topic=self._topic, partitions=len(tps))
        return dict(ends)


async def _positions_reached(
    consumer: AIOKafkaConsumer, targets: dict[TopicPartition, int]
) -> list[bool]:
    return [await consumer.position(tp) >= end for tp, end in targets.items()]
