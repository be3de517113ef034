"""Several venues behind one :class:`~oms.exchange.interface.Exchange`: the worker's view
when more than one venue is configured.

Every order names its venue (``OrderRecord.venue``); the router forwards each call about an
order to that venue's exchange, and tags every report it hands back with the venue, so the
rest of the OMS (the state machine, the position keeper) knows where a fill happened. Each
venue keeps its own sessions, rate limits, reconnects and instrument catalog.

The router only routes: it never chooses a venue. A smart order router would sit in front of
it (splitting a parent order into children that each name one venue, as the algorithms do),
using :meth:`VenueRouter.venues_of`, :meth:`VenueRouter.instrument` and the per-venue
:meth:`VenueRouter.exchange` to decide.

Calls that name only an account (rate-limit pacing of queued orders, ``settled``,
``open_orders``) act on every venue the account trades at: ``order_entry_delay`` is the
longest wait among them, and the credit of a queued order is taken by its venue when it is
sent (``place(..., prepaid=True)`` is forwarded unpaid), since the account-wide reservation
cannot know which venue the next order goes to.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence

from oms.component import Component
from oms.exchange.errors import ExchangeError, InvalidParams, NotSupported
from oms.exchange.instruments import InstrumentCatalog
from oms.exchange.interface import BookSource, Exchange, Reconnect
from oms.orders.routing import BookSnapshot
from oms.schemas import ExecutionReport, Fill, InstrumentSpec, OrderRecord

UNKNOWN_VENUE_CODE = 0


class UnknownVenue(InvalidParams):
    """An order names a venue the router does not have (intake refuses those first)."""

    default_reason = "unknown_venue"


class VenueRouter(Component):
    """One :class:`Exchange` per venue, chosen by each order's ``venue``."""

    name = "venues"

    def __init__(
        self,
        exchanges: Mapping[str, Exchange],
        *,
        primary: str,
        accounts: Mapping[str, Sequence[str] | None] | None = None,
    ) -> None:
        """``primary``: the venue whose catalog is :attr:`instruments` (market data, risk);
        ``accounts``: per venue, the accounts that trade there (None or absent: all)."""
        super().__init__(self.name)
        if primary not in exchanges:
            raise ValueError(f"primary venue {primary!r} is not among {sorted(exchanges)}")
        self._exchanges = dict(exchanges)
        self._primary = primary
        allowed = accounts or {}
        self._accounts: dict[str, frozenset[str] | None] = {}
        for name in self._exchanges:
            listed = allowed.get(name)
            self._accounts[name] = None if listed is None else frozenset(listed)
        self._reconnects: asyncio.Queue[Reconnect] = asyncio.Queue()

    # -- what a router (or a later smart order router) knows about its venues -------------

    @property
    def venues(self) -> list[str]:
        """Every venue, by name."""
        return list(self._exchanges)

    def exchange(self, venue: str) -> Exchange:
        """The venue's own exchange (KeyError if there is none)."""
        return self._exchanges[venue]

    def knows(self, venue: str) -> bool:
        """Whether ``venue`` is one of the router's venues."""
        return venue in self._exchanges

    def trades_at(self, venue: str, account_id: str) -> bool:
        """Whether ``account_id`` may trade at ``venue`` (False for an unknown venue)."""
        if venue not in self._exchanges:
            return False
        allowed = self._accounts[venue]
        return allowed is None or account_id in allowed

    def venues_of(self, account_id: str) -> list[str]:
        """The venues ``account_id`` trades at."""
        return [name for name in self._exchanges if self.trades_at(name, account_id)]

    def instrument(self, venue: str, instrument_name: str | None) -> InstrumentSpec | None:
        """The instrument's specification at ``venue`` (its own tick size, minimum and
        contract size), None if it is not listed there or the venue is unknown."""
        exchange = self._exchanges.get(venue)
        return exchange.instruments.get(instrument_name) if exchange is not None else None

    async def order_book(
        self, venue: str, account_id: str, instrument_name: str, depth: int
    ) -> BookSnapshot:
        """The top ``depth`` levels of the instrument's book at ``venue`` (what a smart
        order router splits on); NotSupported if that venue cannot show its book."""
        exchange = self._exchanges.get(venue)
        if exchange is None:
            raise UnknownVenue(UNKNOWN_VENUE_CODE, f"no venue {venue!r}")
        if not isinstance(exchange, BookSource):
            raise NotSupported(UNKNOWN_VENUE_CODE, f"venue {venue!r} shows no order book")
        return await exchange.order_book(account_id, instrument_name, depth)

    # -- Exchange ----------------------------------------------------------------------------

    @property
    def instruments(self) -> InstrumentCatalog:
        """The primary venue's catalog (market data, currencies, risk)."""
        return self._exchanges[self._primary].instruments

    async def on_start(self) -> None:
        for name, exchange in self._exchanges.items():
            await exchange.start()
            self.spawn(self._follow_reconnects(name, exchange), f"reconnects-{name}")

    async def on_stop(self) -> None:
        for exchange in self._exchanges.values():
            await exchange.stop()

    async def _follow_reconnects(self, name: str, exchange: Exchange) -> None:
        while True:
            reconnect = await exchange.next_reconnect()
            self._reconnects.put_nowait(dataclasses.replace(reconnect, venue=name))

    def _of(self, order: OrderRecord) -> Exchange:
        exchange = self._exchanges.get(order.venue)
        if exchange is None:
            raise UnknownVenue(
                UNKNOWN_VENUE_CODE,
                f"order {order.order_id} names venue {order.venue!r}; "
                f"configured: {', '.join(self._exchanges)}",
            )
        return exchange

    def _account_venues(self, account_id: str) -> list[Exchange]:
        return [self._exchanges[name] for name in self.venues_of(account_id)]

    @staticmethod
    def _tag(report: ExecutionReport, venue: str) -> ExecutionReport:
        if report.venue == venue:
            return report
        return report.model_copy(update={"venue": venue})

    async def place(self, order: OrderRecord, *, prepaid: bool = False) -> ExecutionReport:
        # Unpaid: the account-wide reservation took no venue's credit (see the module doc).
        return self._tag(await self._of(order).place(order), order.venue)

    async def find(self, order: OrderRecord) -> ExecutionReport | None:
        report = await self._of(order).find(order)
        return None if report is None else self._tag(report, order.venue)

    async def refresh(self, order: OrderRecord) -> ExecutionReport:
        return self._tag(await self._of(order).refresh(order), order.venue)

    async def fills(self, order: OrderRecord, exchange_order_id: str) -> list[Fill]:
        return await self._of(order).fills(order, exchange_order_id)

    async def open_orders(self, account_id: str, currency: str) -> list[ExecutionReport]:
        reports: list[ExecutionReport] = []
        for name in self.venues_of(account_id):
            try:
                listed = await self._exchanges[name].open_orders(account_id, currency)
            except NotSupported:
                # A listing only saves lookups: that venue's orders are looked up by label.
                continue
            reports.extend(self._tag(report, name) for report in listed)
        return reports

    async def cancel(self, order: OrderRecord) -> None:
        await self._of(order).cancel(order)

    async def amend(
        self, order: OrderRecord, amount: float, price: float | None
    ) -> ExecutionReport:
        return self._tag(await self._of(order).amend(order, amount, price), order.venue)

    async def order_entry_delay(self, account_id: str) -> float:
        delays = [await ex.order_entry_delay(account_id) for ex in self._account_venues(account_id)]
        return max(delays, default=0.0)

    async def reserve_order_entry(self, account_id: str) -> None:
        # Nothing to take yet: the venue of the order that follows takes its own credit.
        return None

    async def settled(self, account_id: str) -> None:
        for exchange in self._account_venues(account_id):
            try:
                await exchange.settled(account_id)
            except (ExchangeError, KeyError):
                # A venue the account cannot reach now does not hold back its other venues;
                # the command at that venue fails on its own.
                continue

    async def next_reconnect(self) -> Reconnect:
        return await self._reconnects.get()

    def reconciled(self, reconnect: Reconnect) -> None:
        exchange = self._exchanges.get(reconnect.venue or self._primary)
        if exchange is not None:
            exchange.reconciled(dataclasses.replace(reconnect, venue=None))
