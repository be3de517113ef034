"""The latest MarketTick per instrument, from ``oms.market-ticks``.

A stand-in for the worker's tick cache (issue 3 adds one): anything that needs prices takes
a ``latest_tick(instrument) -> MarketTick | None`` callable, this or that.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from oms.schemas import MarketTick, Topic
from oms.settings import Settings

log = structlog.get_logger(__name__)


class TickCache:
    """Follows the market-ticks topic from its end and keeps the newest tick per instrument."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._latest: dict[str, MarketTick] = {}

    def latest(self, instrument: str) -> MarketTick | None:
        return self._latest.get(instrument)

    def update(self, tick: MarketTick) -> None:
        known = self._latest.get(tick.instrument_name)
        if known is None or tick.timestamp >= known.timestamp:
            self._latest[tick.instrument_name] = tick

    async def run(self) -> None:
        """Consume until cancelled (no consumer group: every worker sees every tick)."""
        topic = self._settings.topic(Topic.MARKET_TICKS)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka.bootstrap,
            group_id=None,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            partitions: set[int] | None = None
            while not partitions:
                partitions = consumer.partitions_for_topic(topic)
                if not partitions:
                    await consumer._client.force_metadata_update()
                    await asyncio.sleep(0.5)
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            async for message in consumer:
                with contextlib.suppress(ValueError):
                    self.update(MarketTick.from_bytes(message.value))
        finally:
            await consumer.stop()
