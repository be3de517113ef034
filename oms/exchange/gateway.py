"""The exchange gateway: Deribit's streams into Kafka.

* market data: ``ticker.{instrument}.{interval}`` -> ``market-ticks`` (key: instrument);
* user data, per account: ``user.orders`` and ``user.trades`` -> ``execution-reports``
  (key: the order's label, which is our order id, so reports land on the partition that
  owns the order).

One gateway process serves all accounts. Reports are idempotent downstream (the state
machine drops stale and repeated ones), so a restart or a reconnect may repeat some.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from oms.exchange.deribit.client import DeribitClient, reconnect_backoff
from oms.exchange.errors import ExchangeError
from oms.exchange.translate import report_from_order, report_from_trades
from oms.schemas import ExecutionReport, MarketTick, ReportSource, Topic
from oms.secrets import SecretStore
from oms.settings import Settings

log = structlog.get_logger(__name__)

# One channel for orders and trades together, batched every 100 ms: an order's snapshot and
# its fills travel as one report, and an order that changed several times within the batch
# is reported once (its latest state). Halves the reports of a fill against raw channels.
USER_CHANNELS = ("user.changes.any.any.100ms",)


def tick_from_ticker(data: dict[str, Any]) -> MarketTick:
    """A Deribit ``ticker`` notification as a MarketTick."""
    return MarketTick(
        instrument_name=data["instrument_name"],
        timestamp=int(data.get("timestamp") or 0),
        last_price=data.get("last_price"),
        mark_price=data.get("mark_price"),
        index_price=data.get("index_price"),
        best_bid_price=data.get("best_bid_price"),
        best_bid_amount=data.get("best_bid_amount"),
        best_ask_price=data.get("best_ask_price"),
        best_ask_amount=data.get("best_ask_amount"),
        open_interest=data.get("open_interest"),
        state=str(data.get("state") or "open"),
    )


def reports_from_changes(data: Any, account_id: str) -> list[ExecutionReport]:
    """Reports of one ``user.changes`` notification: one per labelled order, carrying its
    latest snapshot in the batch and all its trades. Unlabelled (external) orders are skipped."""
    if not isinstance(data, dict):
        return []
    latest: dict[str, dict[str, Any]] = {}
    for order in data.get("orders") or ():
        label = order.get("label")
        if label and order.get("last_update_timestamp", 0) >= latest.get(label, {}).get(
            "last_update_timestamp", 0
        ):
            latest[label] = order
    trades: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for trade in data.get("trades") or ():
        if trade.get("label"):
            trades[trade["label"]].append(trade)
    reports = [
        report_from_order(
            order,
            account_id=account_id,
            source=ReportSource.SUBSCRIPTION,
            trades=trades.pop(label, ()),
        )
        for label, order in latest.items()
    ]
    reports += [
        report_from_trades(group, account_id=account_id, source=ReportSource.SUBSCRIPTION)
        for group in trades.values()
    ]
    return reports


class ExchangeGateway:
    """Subscribes to the exchange and publishes what it hears."""

    def __init__(self, settings: Settings, accounts: list[str] | None = None) -> None:
        self.settings = settings
        self._secrets = SecretStore(
            settings.resolved_secrets_file, settings.risk.exchange_accounts()
        )
        self._accounts = (
            accounts if accounts is not None else self._secrets.trading_accounts(settings.accounts)
        )
        self._producer: AIOKafkaProducer | None = None
        self._clients: list[DeribitClient] = []
        self.counters: dict[str, int] = defaultdict(int)
        self._ticks_topic = settings.topic(Topic.MARKET_TICKS)
        self._reports_topic = settings.topic(Topic.EXECUTION_REPORTS)

    async def start(self) -> None:
        """Connect the producer, then every exchange subscription."""
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka.bootstrap, linger_ms=5, acks="all"
        )
        await self._producer.start()
        await self._start_market_data()
        for account_id in self._accounts:
            await self._start_user_data(account_id)
        log.info(
            "gateway.started",
            instruments=self.settings.exchange.instruments,
            accounts=len(self._accounts),
        )

    async def stop(self) -> None:
        for client in self._clients:
            with contextlib.suppress(Exception):
                await client.close()
        self._clients.clear()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    # -- market data -----------------------------------------------------------------------

    async def _connect(self, client: DeribitClient) -> None:
        """Connect, waiting for the exchange to come up (it may start after us)."""

        def failed(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning("gateway.connect_failed", client=client.name, error=str(error))

        async for attempt in AsyncRetrying(
            wait=reconnect_backoff(self.settings.exchange),
            retry=retry_if_exception_type((OSError, TimeoutError, ExchangeError)),
            before_sleep=failed,
        ):
            with attempt:
                await client.connect()

    async def _start_market_data(self) -> None:
        exchange = self.settings.exchange
        client = DeribitClient(exchange.url, None, settings=exchange, name="gateway:market")
        await self._connect(client)
        self._clients.append(client)
        channels = [f"ticker.{i}.{exchange.ticker_interval}" for i in exchange.instruments]
        if channels:
            await client.subscribe(channels, self._on_ticker)

    async def _on_ticker(self, channel: str, data: dict[str, Any]) -> None:
        try:
            tick = tick_from_ticker(data)
        except Exception as exc:
            self.counters["ticks_malformed"] += 1
            log.warning("gateway.bad_ticker", channel=channel, error=str(exc))
            return
        await self._send(self._ticks_topic, tick.instrument_name, tick.to_bytes())
        self.counters["ticks"] += 1

    # -- user data -------------------------------------------------------------------------

    async def _start_user_data(self, account_id: str) -> None:
        credentials = self._secrets.credentials(account_id)
        if credentials is None:
            return
        exchange = self.settings.exchange

        async def on_reconnect() -> None:
            await self._publish_open_orders(account_id, client)

        client = DeribitClient(
            exchange.url,
            credentials,
            settings=exchange,
            name=f"gateway:{account_id}",
            on_reconnect=on_reconnect,
        )
        await self._connect(client)
        self._clients.append(client)

        async def on_user(channel: str, data: Any) -> None:
            await self._on_user_data(account_id, channel, data)

        await client.subscribe(USER_CHANNELS, on_user)

    async def _on_user_data(self, account_id: str, channel: str, data: Any) -> None:
        for report in reports_from_changes(data, account_id):
            await self._send_report(report)
        if isinstance(data, dict):
            self.counters["external_orders"] += sum(
                1 for order in data.get("orders") or () if not order.get("label")
            )

    async def _publish_open_orders(self, account_id: str, client: DeribitClient) -> None:
        """After a reconnect, state that changed during the gap is re-read from the exchange."""
        try:
            orders = await client.call("private/get_open_orders", {})
        except Exception as exc:
            log.warning("gateway.reconcile_failed", account=account_id, error=str(exc))
            return
        for order in orders:
            if order.get("label"):
                await self._send_report(
                    report_from_order(order, account_id=account_id, source=ReportSource.RECONCILE)
                )

    async def _send_report(self, report: ExecutionReport) -> None:
        await self._send(self._reports_topic, report.order_id, report.to_bytes())
        self.counters["reports"] += 1

    async def _send(self, topic: str, key: str, value: bytes) -> None:
        assert self._producer is not None
        await self._producer.send(topic, value=value, key=key.encode())
