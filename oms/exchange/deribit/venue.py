"""Deribit as an :class:`~oms.exchange.interface.Exchange`: JSON-RPC over WebSocket, one
authenticated session per account, our order id as the Deribit ``label``.

Everything Deribit-specific of a worker lives behind this class: method names, the client,
its rate limiter (order entry draws on the matching-engine pool of the sub-account), the
``currency`` parameter of private calls, and where the instruments come from."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import structlog

from oms.component import Component
from oms.exchange.deribit.accounts import DeribitAccounts
from oms.exchange.deribit.client import DeribitClient
from oms.exchange.deribit.feed import DeribitFeed
from oms.exchange.deribit.instruments import deribit_catalog
from oms.exchange.deribit.translate import fill_from_trade, report_from_order
from oms.exchange.errors import CONNECTION_LOST, LABEL_MISMATCH, ConnectionLost, LabelMismatch
from oms.exchange.instruments import InstrumentCatalog
from oms.exchange.interface import Reconnect, Venue
from oms.exchange.sessions import AccountSessions
from oms.orders.routing import BookSnapshot
from oms.schemas import (
    CommandType,
    Direction,
    ExecutionReport,
    Fill,
    OrderRecord,
    OrderType,
    ReportSource,
)
from oms.secrets import SecretStore
from oms.settings import Settings

log = structlog.get_logger(__name__)

# Order types that carry a trigger at Deribit.
_TRIGGERED = frozenset(
    {OrderType.STOP_LIMIT, OrderType.STOP_MARKET, OrderType.TAKE_LIMIT, OrderType.TAKE_MARKET}
)
# Buy and sell draw on the same matching-engine pool: what a new order's credit is metered as.
_ORDER_ENTRY = "private/buy"


class ExchangeSessions:
    """One authenticated Deribit connection per account, opened on first use.

    After a reconnect (the client resubscribes on its own) the account is handed out by
    :meth:`next_reconnect`; until the owner calls :meth:`reconciled` with it, :meth:`settled`
    holds back edits and cancels of that account so they never race the reconciliation.
    """

    def __init__(self, settings: Settings, secrets: SecretStore) -> None:
        self._settings = settings
        self._secrets = secrets
        self._clients: AccountSessions[DeribitClient] = AccountSessions(self._connect)
        # Per account: the client's reconnect count the last finished reconciliation covered.
        self._reconciled: dict[str, int] = {}
        self._reconnects: asyncio.Queue[Reconnect] = asyncio.Queue()

    async def client(self, account_id: str) -> DeribitClient:
        """The connected client of an account (connects on first call; never once closed)."""
        return await self._clients.get(account_id)

    async def _connect(self, account_id: str) -> DeribitClient:
        """A new session of the account, connected and authenticated (the clients' factory)."""
        credentials = self._secrets.credentials(account_id)
        if credentials is None:
            raise KeyError(f"no exchange credentials for account {account_id!r}")
        client = DeribitClient(
            self._settings.exchange.url,
            credentials,
            settings=self._settings.exchange,
            name=f"exec:{account_id}",
            on_reconnect=partial(self._after_reconnect, account_id),
            cancel_on_disconnect=(
                account_id in self._settings.lifecycle.cancel_on_disconnect_accounts
            ),
        )
        try:
            await client.connect()
        except (OSError, TimeoutError) as exc:
            # Nothing was sent: a plain retryable failure, not an unknown outcome.
            error = ConnectionLost(CONNECTION_LOST, f"cannot connect: {exc}")
            error.outcome_unknown = False
            raise error from exc
        return client

    async def settled(self, account_id: str) -> None:
        """Wait (bounded) until the account's session is up and reconciled since its last
        reconnect."""
        client = await self.client(account_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3 * self._settings.exchange.request_timeout
        while not (
            client.connected.is_set()
            and self._reconciled.get(account_id, 0) >= client.stats.reconnects
        ):
            if loop.time() > deadline:
                log.warning("exchange.reconciliation_wait_timeout", account_id=account_id)
                return
            await asyncio.sleep(0.05)

    async def next_reconnect(self) -> Reconnect:
        """Wait for the next account whose session came back after a drop."""
        return await self._reconnects.get()

    def reconciled(self, reconnect: Reconnect) -> None:
        """The account's orders were looked up after ``reconnect``."""
        account_id = reconnect.account_id
        self._reconciled[account_id] = max(self._reconciled.get(account_id, 0), reconnect.session)

    async def close(self) -> None:
        """Close every session (for good)."""
        await self._clients.close_all()

    async def _after_reconnect(self, account_id: str) -> None:
        client = self._clients.current(account_id)
        session = client.stats.reconnects if client is not None else 0
        self._reconnects.put_nowait(Reconnect(account_id, session))


class DeribitVenue(Component):
    """:class:`~oms.exchange.interface.Exchange` over Deribit API v2."""

    name = "deribit"

    def __init__(self, settings: Settings, secrets: SecretStore) -> None:
        super().__init__(self.name)  # the venue's name names the component too
        self._sessions = ExchangeSessions(settings, secrets)
        self._instruments = deribit_catalog(settings)

    @property
    def instruments(self) -> InstrumentCatalog:
        return self._instruments

    async def on_start(self) -> None:
        await self._instruments.start()

    async def on_stop(self) -> None:
        await self._instruments.stop()
        await self._sessions.close()

    async def _call(
        self, account_id: str, method: str, params: dict[str, Any], *, prepaid: bool = False
    ) -> Any:
        client = await self._sessions.client(account_id)
        return await client.call(method, params, prepaid=prepaid)

    async def order_book(self, account_id: str, instrument_name: str, depth: int) -> BookSnapshot:
        """The top ``depth`` levels of the instrument's book (``public/get_order_book``, on
        the account's session: it is the venue as that account sees it)."""
        book = await self._call(
            account_id,
            "public/get_order_book",
            {"instrument_name": instrument_name, "depth": depth},
        )
        return BookSnapshot.from_pairs(book.get("bids") or [], book.get("asks") or [])

    def _currency(self, order: OrderRecord) -> str:
        """Deribit's ``currency`` parameter of an order's private calls."""
        return self._instruments.currency_of(order.instrument_name)

    async def place(self, order: OrderRecord, *, prepaid: bool = False) -> ExecutionReport:
        method = "private/buy" if order.direction is Direction.BUY else "private/sell"
        result = await self._call(order.account_id, method, submit_params(order), prepaid=prepaid)
        return _reply_report(result, order, CommandType.SUBMIT, request_id=order.request_id)

    async def find(self, order: OrderRecord) -> ExecutionReport | None:
        orders = await self._call(
            order.account_id,
            "private/get_order_state_by_label",
            {"currency": self._currency(order), "label": order.order_id},
        )
        # Only ever our label: a report is keyed by the label it carries.
        orders = [o for o in orders or () if o.get("label") == order.order_id]
        if not orders:
            return None
        if len(orders) > 1:
            log.error("exchange.duplicate_label", order_id=order.order_id, count=len(orders))
        # The most recently updated order is the one whose state matters.
        latest: dict[str, Any] = max(orders, key=lambda o: o.get("last_update_timestamp", 0))
        return report_from_order(latest, account_id=order.account_id, source=ReportSource.RECONCILE)

    async def refresh(self, order: OrderRecord) -> ExecutionReport:
        method = "private/get_order_state"
        found = await self._call(order.account_id, method, {"order_id": order.exchange_order_id})
        _check_label(found, order, method)
        return report_from_order(found, account_id=order.account_id, source=ReportSource.RECONCILE)

    async def fills(self, order: OrderRecord, exchange_order_id: str) -> list[Fill]:
        method = "private/get_user_trades_by_order"
        result = await self._call(order.account_id, method, {"order_id": exchange_order_id})
        # A list per the spec; some API versions wrap it as {"trades": [...]}.
        trades = result.get("trades", []) if isinstance(result, dict) else result or []
        for trade in trades:
            # Deribit omits the label of a trade whose order had none; any other label means
            # the id names someone else's order.
            if trade.get("label") not in (None, "", order.order_id):
                _check_label(trade, order, method)
        return [fill_from_trade(t) for t in trades]

    async def open_orders(self, account_id: str, currency: str) -> list[ExecutionReport]:
        orders = await self._call(
            account_id, "private/get_open_orders_by_currency", {"currency": currency}
        )
        return [
            report_from_order(o, account_id=account_id, source=ReportSource.RECONCILE)
            for o in orders or ()
            if o.get("label")
        ]

    async def cancel(self, order: OrderRecord) -> None:
        await self._call(
            order.account_id,
            "private/cancel_by_label",
            {"label": order.order_id, "currency": self._currency(order)},
        )

    async def amend(
        self, order: OrderRecord, amount: float, price: float | None
    ) -> ExecutionReport:
        # Always by label: an exchange order id may name another order once the exchange has
        # lost its orders and handed the id out again (ids restart after a reset).
        params: dict[str, Any] = {
            "label": order.order_id,
            "instrument_name": order.instrument_name,
            "amount": amount,
        }
        if price is not None:
            params["price"] = price
        method = "private/edit_by_label"
        result = await self._call(order.account_id, method, params)
        _check_label(result["order"], order, method)
        return _reply_report(result, order, CommandType.AMEND)

    async def order_entry_delay(self, account_id: str) -> float:
        client = await self._sessions.client(account_id)
        return client.rate_limiter.delay_for(_ORDER_ENTRY)

    async def reserve_order_entry(self, account_id: str) -> None:
        client = await self._sessions.client(account_id)
        await client.rate_limiter.acquire(_ORDER_ENTRY)

    async def settled(self, account_id: str) -> None:
        await self._sessions.settled(account_id)

    async def next_reconnect(self) -> Reconnect:
        return await self._sessions.next_reconnect()

    def reconciled(self, reconnect: Reconnect) -> None:
        self._sessions.reconciled(reconnect)


# Deribit for every process: orders, account views, live streams, instruments.
DERIBIT = Venue(
    exchange=DeribitVenue,
    accounts=DeribitAccounts,
    feed=DeribitFeed,
    instruments=deribit_catalog,
)


def _reply_report(
    result: dict[str, Any],
    order: OrderRecord,
    command: CommandType,
    request_id: str | None = None,
) -> ExecutionReport:
    """The report of the reply (``{order, trades}``) to an order-entry request."""
    return report_from_order(
        result["order"],
        account_id=order.account_id,
        source=ReportSource.RPC,
        trades=result.get("trades") or (),
        command=command,
        request_id=request_id,
    )


def _check_label(found: dict[str, Any], order: OrderRecord, method: str) -> None:
    """Raise :class:`LabelMismatch` unless the exchange's order (or trade) carries our label."""
    label = found.get("label")
    if label == order.order_id:
        return
    log.error(
        "exchange.label_mismatch",
        order_id=order.order_id,
        exchange_order_id=found.get("order_id"),
        exchange_label=label,
        method=method,
    )
    raise LabelMismatch(
        LABEL_MISMATCH,
        f"exchange order {found.get('order_id')} has label {label!r}, not {order.order_id!r}",
        method=method,
    )


def submit_params(order: OrderRecord) -> dict[str, Any]:
    """``private/buy`` / ``private/sell`` parameters of an order."""
    params: dict[str, Any] = {
        "instrument_name": order.instrument_name,
        "amount": order.amount,
        "type": order.order_type.value,
        "label": order.order_id,
        "time_in_force": order.time_in_force.value,
    }
    if order.price is not None and order.order_type is not OrderType.MARKET:
        params["price"] = order.price
    if order.post_only:
        params["post_only"] = True
    if order.reduce_only:
        params["reduce_only"] = True
    if order.order_type in _TRIGGERED and order.trigger_price is not None:
        params["trigger_price"] = order.trigger_price
        params["trigger"] = str(order.metadata.get("trigger") or "last_price")
    return params
