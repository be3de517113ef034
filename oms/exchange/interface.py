"""What a worker needs from an exchange, whichever exchange it is.

The worker builds its venue with :func:`create_exchange`, chosen by the settings
(``exchange.venue``), and nothing else in the worker names an exchange: the executor
(:mod:`oms.streams.execution`), the dispatcher (:mod:`oms.streams.dispatcher`) and the
reconciliation (:mod:`oms.lifecycle.reconcile`) only talk to an :class:`Exchange`. Every
answer comes back as our :class:`~oms.schemas.ExecutionReport`, every failure as one of the
typed errors of :mod:`oms.exchange.errors` (``retryable``, ``outcome_unknown``). Deribit and
the paper exchange are the implementations (:mod:`oms.exchange.deribit.venue`); adding an
exchange means one more class and one line in :data:`VENUES`, never a change to the streams.

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

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from oms.component import ComponentState
from oms.exchange.instruments import InstrumentCatalog
from oms.schemas import ExecutionReport, Fill, OrderRecord


@dataclass(frozen=True, slots=True)
class Reconnect:
    """An account's session came back after a drop (``session``: which one, per account)."""

    account_id: str
    session: int


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
