"""The exchange gateway: the venue's live streams into Kafka.

* market data: the venue's tickers -> ``market-ticks`` (key: instrument);
* user data, per account: the account's order and trade changes -> ``execution-reports``
  (key: the order's client order id, which is our order id, so reports land on the
  partition that owns the order).

What the streams are and how they are followed is the venue's business (its
:class:`~oms.exchange.interface.VenueFeed`, from :func:`oms.exchange.venues.create_feed`).
One gateway process serves all accounts. Reports are idempotent downstream (the state
machine drops stale and repeated ones), so a restart or a reconnect may repeat some.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import structlog
from aiokafka import AIOKafkaProducer

from oms.exchange.interface import VenueFeed
from oms.schemas import ExecutionReport, MarketTick, Topic
from oms.settings import Settings

if TYPE_CHECKING:
    from oms.kafka.security import KafkaConnection

log = structlog.get_logger(__name__)


class ExchangeGateway:
    """Follows the venue's streams for ``accounts`` and publishes what it hears."""

    def __init__(
        self, settings: Settings, feed: VenueFeed, accounts: list[str], kafka: KafkaConnection
    ) -> None:
        self.settings = settings
        self._kafka = kafka
        self._feed = feed
        self._accounts = accounts
        self._producer: AIOKafkaProducer | None = None
        self.counters: Counter[str] = Counter()
        self._ticks_topic = settings.topic(Topic.MARKET_TICKS)
        self._reports_topic = settings.topic(Topic.EXECUTION_REPORTS)

    async def start(self) -> None:
        """Connect the producer, then follow the market and every account."""
        self._producer = AIOKafkaProducer(**self._kafka.aiokafka(linger_ms=5, acks="all"))
        await self._producer.start()
        await self._feed.follow_market(self.settings.exchange.instruments, self._on_tick)
        for account_id in self._accounts:
            await self._feed.follow_account(account_id, self._on_reports)
        log.info(
            "gateway.started",
            instruments=self.settings.exchange.instruments,
            accounts=len(self._accounts),
        )

    async def stop(self) -> None:
        """Stop following the venue, then flush and close the producer."""
        await self._feed.close()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _on_tick(self, tick: MarketTick) -> None:
        await self._send(self._ticks_topic, tick.instrument_name, tick.to_bytes())
        self.counters["ticks"] += 1

    async def _on_reports(self, reports: list[ExecutionReport]) -> None:
        # The feed is the primary venue's: its reports say so (positions are kept per venue).
        venue = self.settings.exchange.primary_venue
        for report in reports:
            if report.venue != venue:
                report = report.model_copy(update={"venue": venue})
            await self._send(self._reports_topic, report.order_id, report.to_bytes())
            self.counters["reports"] += 1

    async def _send(self, topic: str, key: str, value: bytes) -> None:
        assert self._producer is not None
        await self._producer.send(topic, value=value, key=key.encode())
