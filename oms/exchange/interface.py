"""What the execution path needs from an exchange (seed 13.1: multi-exchange readiness).

The executor (:mod:`oms.streams.execution`) only talks to an :class:`Exchange`; every answer
comes back as our :class:`~oms.schemas.ExecutionReport`, every failure as one of the typed
errors of :mod:`oms.exchange.errors` (``retryable``, ``outcome_unknown``). Deribit and the
paper exchange are the implementations (:mod:`oms.exchange.deribit.venue`); adding an
exchange means one more class and one line in :data:`VENUES`, never a change to the streams.

Contract every implementation keeps:

* our order id is the exchange's client order id (Deribit ``label``), so :meth:`find` can
  always tell whether an order reached the exchange;
* :meth:`cancel` and :meth:`amend` are idempotent (by label, absolute amount and price) and
  act by label, so a stale exchange order id never touches another order;
* whatever is looked up by the exchange's order id (:meth:`refresh`, :meth:`fills`) is checked
  to carry our label (:class:`~oms.exchange.errors.LabelMismatch` otherwise);
* after a reconnect the implementation calls ``on_reconnect(account_id)`` and
  :meth:`settled` holds commands back until that reconciliation is done.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from oms.schemas import ExecutionReport, Fill, OrderRecord
from oms.secrets import SecretStore
from oms.settings import Settings


@runtime_checkable
class Exchange(Protocol):
    """One trading venue, for every account the worker trades."""

    name: str
    on_reconnect: Callable[[str], Awaitable[None]] | None

    async def place(self, order: OrderRecord, *, prepaid: bool = False) -> ExecutionReport:
        """Send a new order; the report of the exchange's answer (source ``rpc``).
        ``prepaid``: the caller already reserved the account's rate-limit credit."""
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

    async def settled(self, account_id: str) -> None:
        """Wait until the account's session is up and reconciled since its last reconnect."""
        ...


VenueFactory = Callable[[Settings, SecretStore, Callable[[str], str]], Exchange]


def _deribit(
    settings: Settings, secrets: SecretStore, currency_of: Callable[[str], str]
) -> Exchange:
    from oms.exchange.deribit.venue import DeribitVenue

    return DeribitVenue(settings, secrets, currency_of)


def _paper(settings: Settings, secrets: SecretStore, currency_of: Callable[[str], str]) -> Exchange:
    from oms.exchange.paper.venue import PaperVenue

    return PaperVenue(settings, secrets, currency_of)


# Venue name -> factory. A new exchange registers here (and nowhere in oms.streams).
VENUES: dict[str, VenueFactory] = {"deribit": _deribit, "paper": _paper}


def create_exchange(
    name: str, settings: Settings, secrets: SecretStore, currency_of: Callable[[str], str]
) -> Exchange:
    """The implementation registered under ``name``."""
    try:
        factory = VENUES[name]
    except KeyError:
        raise ValueError(f"unknown exchange {name!r}; known: {', '.join(sorted(VENUES))}") from None
    return factory(settings, secrets, currency_of)
