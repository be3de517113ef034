"""The exchange gateway: the venues' live streams into Kafka.

* market data: the primary venue's tickers -> ``market-ticks`` (key: instrument);
* user data, per venue and account: the account's order and trade changes at that venue ->
  ``execution-reports`` (key: the order's client order id, which is our order id, so
  reports land on the partition that owns the order), each tagged with its venue.

Market data stays the primary venue's: ticks are keyed by instrument and the workers' market
cache holds one mark per instrument, so a second venue's ticks would overwrite the first's.

What the streams are and how they are followed is each venue's business (its
:class:`~oms.exchange.interface.VenueFeed`, from :func:`oms.exchange.venues.create_feed`).
One gateway process serves all venues and accounts: the primary venue is followed before
the gateway counts as started, every other venue in the background, so a venue that is down
holds up none of the others. Reports are idempotent downstream (the state machine drops
stale and repeated ones), so a restart or a reconnect may repeat some.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import partial
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
    """Follows the primary venue's market and, at every venue in ``feeds``, the accounts
    ``accounts`` names for it, and publishes what it hears."""

    def __init__(
        self,
        settings: Settings,
        feeds: Mapping[str, VenueFeed],
        accounts: Mapping[str, Sequence[str]],
        kafka: KafkaConnection,
    ) -> None:
        self.settings = settings
        self._kafka = kafka
        self._primary = settings.exchange.primary_venue
        if self._primary not in feeds:
            raise ValueError(f"no feed of the primary venue {self._primary!r}")
        self._feeds = dict(feeds)
        self._accounts = {venue: list(accounts.get(venue, ())) for venue in self._feeds}
        self._producer: AIOKafkaProducer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.counters: Counter[str] = Counter()
        # Per venue: the accounts whose streams are followed (what has credentials there).
        self.followed: dict[str, list[str]] = {venue: [] for venue in self._feeds}
        self._ticks_topic = settings.topic(Topic.MARKET_TICKS)
        self._reports_topic = settings.topic(Topic.EXECUTION_REPORTS)

    async def start(self) -> None:
        """Connect the producer, follow the primary venue's market and accounts, then every
        other venue's accounts in the background."""
        self._producer = AIOKafkaProducer(**self._kafka.aiokafka(linger_ms=5, acks="all"))
        await self._producer.start()
        await self._feeds[self._primary].follow_market(
            self.settings.exchange.instruments, self._on_tick
        )
        await self._follow_accounts(self._primary)
        for venue in self._feeds:
            if venue != self._primary:
                self._tasks.append(
                    asyncio.create_task(self._follow_in_background(venue), name=f"follow:{venue}")
                )
        log.info(
            "gateway.started",
            instruments=self.settings.exchange.instruments,
            venues={venue: len(accounts) for venue, accounts in self._accounts.items()},
        )

    async def stop(self) -> None:
        """Stop following the venues, then flush and close the producer."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        for feed in self._feeds.values():
            await feed.close()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _follow_accounts(self, venue: str) -> None:
        feed = self._feeds[venue]
        on_reports = partial(self._on_reports, venue)
        for account_id in self._accounts[venue]:
            if await feed.follow_account(account_id, on_reports):
                self.followed[venue].append(account_id)

    async def _follow_in_background(self, venue: str) -> None:
        try:
            await self._follow_accounts(venue)
        except Exception:
            # The other venues go on; this one's orders are still seen by the worker's checks.
            self.counters[f"follow_failed:{venue}"] += 1
            log.exception("gateway.follow_failed", venue=venue)
            return
        log.info("gateway.venue_followed", venue=venue, accounts=len(self.followed[venue]))

    async def _on_tick(self, tick: MarketTick) -> None:
        await self._send(self._ticks_topic, tick.instrument_name, tick.to_bytes())
        self.counters["ticks"] += 1

    async def _on_reports(self, venue: str, reports: list[ExecutionReport]) -> None:
        # The feed is the venue's: its reports say so (positions are kept per venue).
        for report in reports:
            if report.venue != venue:
                report = report.model_copy(update={"venue": venue})
            await self._send(self._reports_topic, report.order_id, report.to_bytes())
            self.counters["reports"] += 1
            self.counters[f"reports:{venue}"] += 1

    async def _send(self, topic: str, key: str, value: bytes) -> None:
        assert self._producer is not None
        await self._producer.send(topic, value=value, key=key.encode())
