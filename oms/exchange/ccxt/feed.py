"""A ccxt venue's live account streams as our reports (:class:`~oms.exchange.interface.VenueFeed`),
through ccxt.pro: per account, ``watch_orders`` (order changes) and ``watch_my_trades``
(fills) over the account's own WebSocket session, each labelled order's change as an
ExecutionReport (source ``subscription``).

A stream that fails (a dropped connection, a refused login) is watched again after a backoff;
the account's open labelled orders are then reported again (source ``reconcile``), for what
changed during the gap. Market data is not followed here: ticks come from the primary venue.

A venue whose exchange ccxt.pro does not stream, or whose WebSocket URL is not known, has no
live feed: its accounts are not followed (``follow_account`` says False and it is logged),
and its orders are seen through the worker's own calls and checks only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import ccxt.pro as ccxt_pro
import structlog

from oms.exchange.ccxt.clients import new_client, ws_url_of
from oms.exchange.ccxt.translate import (
    label_of,
    market_id_of,
    report_from_order,
    report_from_trades,
)
from oms.exchange.deribit.client import reconnect_backoff
from oms.exchange.errors import ExchangeError
from oms.exchange.interface import OnReports, OnTick
from oms.schemas import ExecutionReport, ReportSource
from oms.secrets import SecretStore
from oms.settings import Settings

log = structlog.get_logger(__name__)

# Trade ids already reported, per account: ccxt.pro's deribit hands back its whole cache of
# trades on every ``watch_my_trades``, not only the new ones. Bounded like that cache.
SEEN_TRADES = 2_000


class RecentIds:
    """The last ``limit`` ids added: :meth:`add` says whether an id is new."""

    def __init__(self, limit: int = SEEN_TRADES) -> None:
        self._limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, item: str) -> bool:
        """Remember ``item``; False if it was already remembered."""
        if item in self._ids:
            return False
        self._ids[item] = None
        if len(self._ids) > self._limit:
            self._ids.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._ids)


def reports_from_orders(
    orders: Sequence[dict[str, Any]],
    account_id: str,
    markets: dict[str, Any] | None,
    source: ReportSource = ReportSource.SUBSCRIPTION,
) -> tuple[list[ExecutionReport], Counter[str]]:
    """Reports of ccxt orders: one per order carrying our id. Also counts of what was
    skipped: ``external`` (orders without our id, placed outside the OMS) and
    ``unmapped`` (a status or market that has no meaning here, logged)."""
    reports = []
    skipped: Counter[str] = Counter()
    for order in orders:
        label = label_of(order)
        if not label:
            skipped["external"] += 1
            continue
        try:
            report = report_from_order(
                order,
                account_id=account_id,
                order_id=label,
                instrument_name=market_id_of(order, markets),
                source=source,
                trades=order.get("trades") or (),
            )
        except ExchangeError as exc:
            skipped["unmapped"] += 1
            log.warning("gateway.order_unmapped", order_id=label, error=str(exc)[:300])
            continue
        reports.append(report)
    return reports, skipped


def reports_from_trades(
    trades: Sequence[dict[str, Any]],
    account_id: str,
    markets: dict[str, Any] | None,
    seen: RecentIds,
) -> list[ExecutionReport]:
    """Fills-only reports (source ``subscription``) of the trades not ``seen`` before, one per
    order of ours; trades of orders without our id are skipped."""
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for trade in trades:
        label = label_of(trade)
        if label and seen.add(str(trade.get("id"))):
            by_label[label].append(trade)
    reports = []
    for label, group in by_label.items():
        try:
            instrument = market_id_of(group[0], markets)
        except ExchangeError as exc:
            log.warning("gateway.trades_unmapped", order_id=label, error=str(exc)[:300])
            continue
        reports.append(
            report_from_trades(
                group,
                account_id=account_id,
                order_id=label,
                instrument_name=instrument,
                source=ReportSource.SUBSCRIPTION,
            )
        )
    return reports


class CcxtFeed:
    """Follows the accounts' orders and trades at a ccxt venue through ccxt.pro."""

    def __init__(self, settings: Settings, secrets: SecretStore) -> None:
        # The venue settings hold this venue alone (oms.exchange.venues.venue_settings).
        ((venue, config),) = settings.exchange.venues.items()
        self.venue = venue
        self._config = config
        self._secrets = secrets
        self._instruments = list(settings.exchange.instruments)
        self._backoff = reconnect_backoff(settings.exchange)
        self._clients: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.counters: Counter[str] = Counter()
        self._ws_url: str | None = None
        self.unavailable: str | None = None
        if config.ccxt_id not in ccxt_pro.exchanges:
            self.unavailable = f"ccxt.pro does not stream {config.ccxt_id}"
        else:
            try:
                self._ws_url = ws_url_of(config)
            except ValueError as exc:
                self.unavailable = str(exc)

    async def follow_market(self, instruments: Sequence[str], on_tick: OnTick) -> None:
        """Not followed at a ccxt venue: market data comes from the primary venue."""
        raise ValueError(f"venue {self.venue}: market data comes from the primary venue")

    async def follow_account(self, account_id: str, on_reports: OnReports) -> bool:
        """Watch the account's orders and trades (in the background, watched again after a
        failure). False without credentials, or when the venue cannot stream."""
        credentials = self._secrets.credentials(account_id)
        if credentials is None:
            return False
        if self.unavailable is not None:
            log.warning(
                "gateway.no_live_feed",
                venue=self.venue,
                account=account_id,
                reason=self.unavailable,
            )
            return False
        client = new_client(ccxt_pro, self._config, credentials, ws_url=self._ws_url)
        self._clients.append(client)
        seen = RecentIds()

        async def orders() -> list[ExecutionReport]:
            found = await client.watch_orders()
            reports, skipped = reports_from_orders(found, account_id, client.markets)
            self.counters["external_orders"] += skipped["external"]
            self.counters["unmapped_orders"] += skipped["unmapped"]
            return reports

        async def trades() -> list[ExecutionReport]:
            found = await client.watch_my_trades()
            return reports_from_trades(found, account_id, client.markets, seen)

        async def open_orders() -> None:
            await self._report_open_orders(account_id, client, on_reports)

        for name, watch, after_gap in (("orders", orders, open_orders), ("trades", trades, None)):
            task = asyncio.create_task(
                self._watch(account_id, name, watch, on_reports, after_gap),
                name=f"gateway:{self.venue}:{account_id}:{name}",
            )
            self._tasks.append(task)
        return True

    async def close(self) -> None:
        """Stop watching and close every client."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        for client in self._clients:
            with contextlib.suppress(Exception):
                await client.close()
        self._clients.clear()

    async def _watch(
        self,
        account_id: str,
        stream: str,
        watch: Callable[[], Awaitable[list[ExecutionReport]]],
        on_reports: OnReports,
        after_gap: Callable[[], Awaitable[None]] | None,
    ) -> None:
        """Watch one stream for good: every batch to ``on_reports``; after a failure, a
        backoff, then the stream again (and ``after_gap`` while it resubscribes)."""
        failures = 0
        while True:
            pending = asyncio.ensure_future(watch())
            try:
                if failures and after_gap is not None:
                    await after_gap()
                reports = await pending
            except asyncio.CancelledError:
                pending.cancel()
                raise
            except Exception as exc:
                pending.cancel()
                failures += 1
                self.counters[f"{stream}_stream_errors"] += 1
                log.warning(
                    "gateway.stream_failed",
                    venue=self.venue,
                    account=account_id,
                    stream=stream,
                    error=str(exc)[:300],
                )
                await asyncio.sleep(self._backoff.delay(failures))
                continue
            failures = 0
            if reports:
                self.counters[f"{stream}_reports"] += len(reports)
                await on_reports(reports)

    async def _report_open_orders(
        self, account_id: str, client: Any, on_reports: OnReports
    ) -> None:
        """After a gap in the streams, the account's open orders are read again (per
        configured instrument: listing every market's orders is not one unified call)."""
        try:
            if not client.markets:
                await client.load_markets()
            found: list[dict[str, Any]] = []
            for name in self._instruments:
                markets = client.markets_by_id.get(name) if client.markets_by_id else None
                if markets:
                    found += await client.fetch_open_orders(markets[0]["symbol"])
            reports, _ = reports_from_orders(
                found, account_id, client.markets, ReportSource.RECONCILE
            )
        except Exception as exc:
            log.warning(
                "gateway.reconcile_failed", venue=self.venue, account=account_id, error=str(exc)
            )
            return
        await on_reports(reports)
