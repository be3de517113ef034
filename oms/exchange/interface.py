"""What a worker needs from an exchange, whichever exchange it is.

The worker builds its exchange with :func:`~oms.exchange.venues.create_exchange` from the
configured venues (``exchange.venues``: the venue itself in the default setup, a
:class:`~oms.exchange.router.VenueRouter` over every venue otherwise, forwarding each call by
the order's ``venue``), and nothing else in the worker names an exchange: the executor
(:mod:`oms.streams.execution`), the dispatcher (:mod:`oms.streams.dispatcher`) and the
reconciliation (:mod:`oms.lifecycle.reconcile`) only talk to an :class:`Exchange`. Every
answer comes back as our :class:`~oms.schemas.ExecutionReport`, every failure as one of the
typed errors of :mod:`oms.exchange.errors` (``retryable``, ``outcome_unknown``). Deribit and
the paper exchange are the native implementations (:mod:`oms.exchange.deribit.venue`); any
exchange ccxt knows is reached through :mod:`oms.exchange.ccxt`.

The other processes that talk to the venue see it through the rest of a :class:`Venue`: the
gateway follows its live streams through a :class:`VenueFeed`, the position keeper and the
notifier's margin monitor read accounts through :class:`VenueAccounts`, and the keeper loads
the instruments through the venue's catalog. Adding an exchange means one :class:`Venue` and
one line in :mod:`oms.exchange.venues`, never a change to the services.

Contract every implementation keeps:

* our order id is the exchange's client order id (Deribit ``label``), so :meth:`find` can
  always tell whether an order reached the exchange;
* :meth:`cancel` and :meth:`amend` are idempotent (by label, absolute amount and price) and
  act by label, so a stale exchange order id never touches another order;
* whatever is looked up by the exchange's order id (:meth:`refresh`, :meth:`fills`) is checked
  to carry our label (:class:`~oms.exchange.errors.LabelMismatch` otherwise);
* new orders are metered by the venue's own rate limit per account: :meth:`order_entry_delay`
  says how long the next one would wait, :meth:`reserve_order_entry` takes its credit ahead of
  a ``place(..., prepaid=True)`` (what lets the dispatcher keep priorities while throttled);
* after a session of an account comes back from a drop, :meth:`next_reconnect` returns it and
  :meth:`settled` holds that account's commands back until :meth:`reconciled` is called with
  it (the owner looks the account's orders up meanwhile);
* :attr:`instruments` is the venue's catalog of instrument specifications, kept fresh while
  the venue runs (:meth:`start` / :meth:`stop`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from oms.component import ComponentState
from oms.exchange.instruments import InstrumentCatalog
from oms.orders.routing import BookSnapshot
from oms.schemas import ExecutionReport, Fill, MarketTick, OrderRecord
from oms.secrets import SecretStore
from oms.settings import Settings


@dataclass(frozen=True, slots=True)
class Reconnect:
    """An account's session came back after a drop (``session``: which one, per account;
    ``venue``: where, set by the :class:`~oms.exchange.router.VenueRouter`)."""

    account_id: str
    session: int
    venue: str | None = None


@runtime_checkable
class Exchange(Protocol):
    """One trading venue, for every account the worker trades."""

    name: str

    @property
    def instruments(self) -> InstrumentCatalog:
        """The venue's instruments (loaded and refreshed while the venue runs)."""
        ...

    @property
    def state(self) -> ComponentState: ...

    async def start(self) -> None:
        """Start loading the instruments (sessions open on first use)."""
        ...

    async def stop(self) -> None:
        """Close every session."""
        ...

    async def place(self, order: OrderRecord, *, prepaid: bool = False) -> ExecutionReport:
        """Send a new order; the report of the exchange's answer (source ``rpc``).
        ``prepaid``: the caller already reserved the account's rate-limit credit
        (:meth:`reserve_order_entry`)."""
        ...

    async def find(self, order: OrderRecord) -> ExecutionReport | None:
        """The exchange's order with our order id (source ``reconcile``), or None."""
        ...

    async def refresh(self, order: OrderRecord) -> ExecutionReport:
        """The current state of an acknowledged order, by the exchange's id (raises
        OrderNotFound, or LabelMismatch when the id now names another order)."""
        ...

    async def fills(self, order: OrderRecord, exchange_order_id: str) -> list[Fill]:
        """Every trade of the exchange's order ``exchange_order_id`` (our ``order``), with
        the exchange's trade ids: what recovers fills missed while away."""
        ...

    async def open_orders(self, account_id: str, currency: str) -> list[ExecutionReport]:
        """The account's open orders in ``currency`` that carry a label (source
        ``reconcile``): one request that confirms many live orders at once."""
        ...

    async def cancel(self, order: OrderRecord) -> None:
        """Cancel by our order id (no error if it is already gone)."""
        ...

    async def amend(
        self, order: OrderRecord, amount: float, price: float | None
    ) -> ExecutionReport:
        """Change amount and/or price; the report of the edited order."""
        ...

    async def order_entry_delay(self, account_id: str) -> float:
        """Seconds until the account may send a new order without waiting at the rate limit
        (0.0: now). Reserves nothing. Raises an ExchangeError (no session) or KeyError (no
        credentials) when the account cannot trade now."""
        ...

    async def reserve_order_entry(self, account_id: str) -> None:
        """Take the rate-limit credit of one new order of the account (waiting for it if
        another request took it meanwhile), for the ``place(..., prepaid=True)`` that
        follows."""
        ...

    async def settled(self, account_id: str) -> None:
        """Wait (bounded) until the account's session is up and reconciled since its last
        reconnect."""
        ...

    async def next_reconnect(self) -> Reconnect:
        """Wait for the next account session that came back after a drop."""
        ...

    def reconciled(self, reconnect: Reconnect) -> None:
        """The account's orders were looked up after ``reconnect``: release its commands."""
        ...


# -- what the other processes need: live streams, account views, instruments ----------------

OnTick = Callable[[MarketTick], Awaitable[None]]
OnReports = Callable[[list[ExecutionReport]], Awaitable[None]]
OnReconnect = Callable[[], Awaitable[None]]


@runtime_checkable
class BookSource(Protocol):
    """A venue that shows the top levels of its order books (smart order routing)."""

    async def order_book(self, account_id: str, instrument_name: str, depth: int) -> BookSnapshot:
        """The top ``depth`` levels per side of ``instrument_name``'s book."""
        ...


class VenueFeed(Protocol):
    """The venue's live streams, as our schemas (what the gateway publishes)."""

    async def follow_market(self, instruments: Sequence[str], on_tick: OnTick) -> None:
        """Follow the instruments' tickers (waiting for the venue to come up); each tick goes
        to ``on_tick``."""
        ...

    async def follow_account(self, account_id: str, on_reports: OnReports) -> bool:
        """Follow the account's orders and trades; every change goes to ``on_reports`` as
        reports of labelled orders (source ``subscription``), and after every reconnect the
        account's open labelled orders are reported again (source ``reconcile``): what
        changed during the gap. False when the account has no credentials."""
        ...

    async def close(self) -> None:
        """Stop following everything."""
        ...


@dataclass(frozen=True, slots=True)
class VenuePosition:
    """One position as the venue reports it (its sizes and prices, in its units)."""

    instrument_name: str
    size: float
    average_price: float
    mark_price: float | None = None
    floating_pnl: float | None = None
    realized_pnl: float | None = None


@dataclass(frozen=True, slots=True)
class MarginSummary:
    """An account's margin in one currency."""

    currency: str
    maintenance_margin: float
    margin_balance: float

    @property
    def ratio(self) -> float:
        """Maintenance margin over margin balance (inf when the balance is gone)."""
        if self.margin_balance <= 0:
            return float("inf") if self.maintenance_margin > 0 else 0.0
        return self.maintenance_margin / self.margin_balance


class AccountSession(Protocol):
    """A read-only session to one account at the venue; it connects on first use."""

    async def positions(self) -> list[VenuePosition]:
        """Every position of the account, in every currency."""
        ...

    async def margin(self, currency: str) -> MarginSummary:
        """The account's margin in ``currency``."""
        ...

    async def close(self) -> None:
        """Close the session."""
        ...


class VenueAccounts(Protocol):
    """Opens read-only sessions to accounts at the venue."""

    def open(
        self, account_id: str, *, name: str, on_reconnect: OnReconnect | None = None
    ) -> AccountSession | None:
        """A session to the account (None when it has no credentials); ``name`` names it in
        logs, ``on_reconnect`` runs each time it comes back after a drop."""
        ...


@dataclass(frozen=True, slots=True)
class Venue:
    """Everything the OMS builds to work with one venue, from the settings and credentials."""

    exchange: Callable[[Settings, SecretStore], Exchange]
    accounts: Callable[[Settings, SecretStore], VenueAccounts]
    feed: Callable[[Settings, SecretStore], VenueFeed]
    instruments: Callable[[Settings], InstrumentCatalog]
