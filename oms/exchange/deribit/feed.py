"""Deribit's live streams as our schemas (:class:`~oms.exchange.interface.VenueFeed`):

* market data: ``ticker.{instrument}.{interval}`` -> MarketTicks, over one anonymous
  connection;
* user data, per account: ``user.changes`` -> ExecutionReports of our (labelled) orders, over
  the account's own connection; after each reconnect the account's open orders
  (``private/get_open_orders``) are reported again, for what changed during the gap.
"""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from oms.exchange.deribit.client import DeribitClient, reconnect_backoff
from oms.exchange.deribit.translate import report_from_order, report_from_trades
from oms.exchange.errors import ExchangeError
from oms.exchange.interface import OnReports, OnTick
from oms.schemas import ExecutionReport, MarketTick, ReportSource
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


class DeribitFeed:
    """Follows Deribit's tickers and the accounts' order changes."""

    def __init__(self, settings: Settings, secrets: SecretStore) -> None:
        self._settings = settings.exchange
        self._secrets = secrets
        self._clients: list[DeribitClient] = []
        self.counters: Counter[str] = Counter()

    async def follow_market(self, instruments: Sequence[str], on_tick: OnTick) -> None:
        """Subscribe to the instruments' ``ticker`` channels over an anonymous connection
        (waiting for the exchange to come up); a malformed ticker is counted and skipped."""
        client = DeribitClient(
            self._settings.url, None, settings=self._settings, name="gateway:market"
        )
        await self._connect(client)
        channels = [f"ticker.{i}.{self._settings.ticker_interval}" for i in instruments]
        if not channels:
            return

        async def on_ticker(channel: str, data: dict[str, Any]) -> None:
            try:
                tick = tick_from_ticker(data)
            except Exception as exc:
                self.counters["ticks_malformed"] += 1
                log.warning("gateway.bad_ticker", channel=channel, error=str(exc))
                return
            await on_tick(tick)

        await client.subscribe(channels, on_ticker)

    async def follow_account(self, account_id: str, on_reports: OnReports) -> bool:
        """Subscribe to the account's ``user.changes`` over its own connection; after each
        reconnect its open orders are reported again. False without credentials."""
        credentials = self._secrets.credentials(account_id)
        if credentials is None:
            return False

        async def on_reconnect() -> None:
            await self._report_open_orders(account_id, client, on_reports)

        client = DeribitClient(
            self._settings.url,
            credentials,
            settings=self._settings,
            name=f"gateway:{account_id}",
            on_reconnect=on_reconnect,
        )
        await self._connect(client)

        async def on_changes(channel: str, data: Any) -> None:
            await on_reports(reports_from_changes(data, account_id))
            if isinstance(data, dict):
                self.counters["external_orders"] += sum(
                    1 for order in data.get("orders") or () if not order.get("label")
                )

        await client.subscribe(USER_CHANNELS, on_changes)
        return True

    async def close(self) -> None:
        """Close every connection."""
        for client in self._clients:
            with contextlib.suppress(Exception):
                await client.close()
        self._clients.clear()

    async def _connect(self, client: DeribitClient) -> None:
        """Connect, waiting for the exchange to come up (it may start after us)."""

        def failed(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning("gateway.connect_failed", client=client.name, error=str(error))

        async for attempt in AsyncRetrying(
            wait=reconnect_backoff(self._settings),
            retry=retry_if_exception_type((OSError, TimeoutError, ExchangeError)),
            before_sleep=failed,
        ):
            with attempt:
                await client.connect()
        self._clients.append(client)

    async def _report_open_orders(
        self, account_id: str, client: DeribitClient, on_reports: OnReports
    ) -> None:
        """After a reconnect, state that changed during the gap is re-read from the exchange."""
        try:
            orders = await client.call("private/get_open_orders", {})
        except Exception as exc:
            log.warning("gateway.reconcile_failed", account=account_id, error=str(exc))
            return
        await on_reports(
            [
                report_from_order(order, account_id=account_id, source=ReportSource.RECONCILE)
                for order in orders
                if order.get("label")
            ]
        )
