"""One class for any exchange ccxt knows: :class:`CcxtExchange`, configured by the ccxt
exchange id of its venue (``exchange.venues.<name>.ccxt_id``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import ccxt.async_support as ccxt
import structlog

from oms.component import Component
from oms.exchange.ccxt.clients import new_client
from oms.exchange.ccxt.translate import (
    error_from_ccxt,
    fill_from_trade,
    label_of,
    not_supported,
    report_from_order,
    spec_from_market,
)
from oms.exchange.deribit.client import reconnect_backoff
from oms.exchange.errors import (
    CONNECTION_LOST,
    LABEL_MISMATCH,
    ConnectionLost,
    InvalidParams,
    LabelMismatch,
    NotOpenOrder,
    OrderNotFound,
)
from oms.exchange.instruments import InstrumentCatalog
from oms.exchange.interface import Reconnect
from oms.exchange.sessions import AccountSessions
from oms.orders.routing import BookSnapshot
from oms.schemas import (
    CommandType,
    ExecutionReport,
    Fill,
    InstrumentSpec,
    OrderRecord,
    OrderType,
    ReportSource,
    TimeInForce,
)
from oms.secrets import SecretStore
from oms.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Deribit's codes for the same facts, so both adapters report them alike.
_INVALID_INSTRUMENT = 10020
_NOT_OPEN_ORDER = 11044
_ORDER_NOT_FOUND = 10004
_INVALID_AMOUNT = 10021
_PRICE_WRONG_TICK = 10043

# Our time in force -> ccxt's unified one (good_til_day has none).
_TIME_IN_FORCE = {
    TimeInForce.GOOD_TIL_CANCELLED: "GTC",
    TimeInForce.IMMEDIATE_OR_CANCEL: "IOC",
    TimeInForce.FILL_OR_KILL: "FOK",
}

# Exchanges whose orders carry our id as Deribit's ``label`` rather than ccxt's unified
# ``clientOrderId`` (ccxt's deribit neither sends nor parses ``clientOrderId``).
_LABEL_EXCHANGES = frozenset({"deribit"})


class CcxtExchange(Component):
    """:class:`~oms.exchange.interface.Exchange` over ccxt (``ccxt.async_support``).

    Our order id travels as the exchange's client order id: as Deribit's ``label`` when the
    ccxt exchange is ``deribit`` (ccxt's deribit has no ``clientOrderId``; the label comes
    back in the raw order, ``info.label``), and as ccxt's unified ``clientOrderId`` for
    every other exchange (which must then accept our 26-character ids). Lookups by our id go
    through the open and closed orders of the instrument; cancels and amends find the open
    order by our id first, so they are idempotent and never touch another order.

    What this first version does not map raises
    :class:`~oms.exchange.errors.NotSupported` before anything is sent: order types other
    than limit and market, ``good_til_day``, and exchanges whose markets are not quoted in
    tick sizes. Amounts and prices are passed in the venue's own units, as ccxt takes them
    (for Deribit: USD for inverse contracts, as the native adapter). Rate limits are ccxt's
    own throttle (``enableRateLimit``): order entry never waits here. ccxt talks REST, so
    there are no sessions to drop: no reconnects are reported.
    """

    def __init__(self, settings: Settings, secrets: SecretStore) -> None:
        # The venue settings hold this venue alone (oms.exchange.venues.venue_settings).
        ((venue, config),) = settings.exchange.venues.items()
        super().__init__(venue)
        self.name = venue
        if not config.ccxt_id or config.ccxt_id not in ccxt.exchanges:
            raise ValueError(f"venue {venue!r}: {config.ccxt_id!r} is not a ccxt exchange id")
        self._ccxt_id = config.ccxt_id
        self._config = config
        self._secrets = secrets
        self._uses_label = self._ccxt_id in _LABEL_EXCHANGES
        self._sessions: AccountSessions[Any] = AccountSessions(self._open_client)
        self._public = self._new_client(None)
        self._instruments = InstrumentCatalog(
            self._fetch_instruments, reconnect_backoff(settings.exchange)
        )
        # REST has no sessions: nothing ever comes back after a drop.
        self._never: asyncio.Event = asyncio.Event()

    # -- clients --------------------------------------------------------------------------

    def _new_client(self, credentials: Any) -> Any:
        return new_client(ccxt, self._config, credentials)

    async def _open_client(self, account_id: str) -> Any:
        """A new client of the account, its markets loaded (the sessions' factory)."""
        credentials = self._secrets.credentials(account_id)
        if credentials is None:
            raise KeyError(f"no exchange credentials for account {account_id!r}")
        client = self._new_client(credentials)
        try:
            await client.load_markets()
        except Exception as exc:
            await client.close()
            failure = error_from_ccxt(exc, method="load_markets")
            failure.outcome_unknown = False  # nothing was sent yet
            raise failure from exc
        return client

    async def _call(
        self, account_id: str, method: str, call: Callable[[Any], Awaitable[T]]
    ) -> T:
        client = await self._sessions.get(account_id)
        try:
            return await call(client)
        except ccxt.BaseError as exc:
            raise error_from_ccxt(exc, method=method) from exc
        except (OSError, TimeoutError) as exc:
            raise ConnectionLost(CONNECTION_LOST, str(exc), method=method) from exc

    def _symbol(self, client: Any, instrument_name: str) -> str:
        markets = client.markets_by_id.get(instrument_name) if client.markets_by_id else None
        if not markets:
            raise InvalidParams(
                _INVALID_INSTRUMENT,
                f"{instrument_name} is not a market of {self._ccxt_id}",
                method="market",
            )
        return str(markets[0]["symbol"])

    def _check_precision(
        self, client: Any, symbol: str, amount: float, price: float | None
    ) -> None:
        """Refuse what ccxt would silently round (it truncates amounts and rounds prices to
        the market's precision): an order is sent as asked or not at all."""
        if float(client.amount_to_precision(symbol, amount)) != amount:
            raise InvalidParams(
                _INVALID_AMOUNT, f"amount {amount} is not a multiple of {symbol}'s step"
            )
        if price is not None and float(client.price_to_precision(symbol, price)) != price:
            raise InvalidParams(
                _PRICE_WRONG_TICK, f"price {price} is not a multiple of {symbol}'s tick"
            )

    async def _fetch_instruments(self) -> list[InstrumentSpec]:
        try:
            markets = await self._public.load_markets(reload=True)
        except ccxt.BaseError as exc:
            raise error_from_ccxt(exc, method="load_markets") from exc
        if self._public.precisionMode != ccxt.TICK_SIZE:
            raise not_supported(
                f"ccxt {self._ccxt_id} quotes precision in decimal places, not tick sizes",
                method="load_markets",
            )
        specs = []
        for market in markets.values():
            tick = (market.get("precision") or {}).get("price")
            if not tick:
                continue  # no price rule known: not tradable through the OMS
            specs.append(spec_from_market(market, tick_size=float(tick)))
        return specs

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def instruments(self) -> InstrumentCatalog:
        return self._instruments

    async def on_start(self) -> None:
        await self._instruments.start()

    async def on_stop(self) -> None:
        # The account clients first: no order call opens one while the catalog stops.
        await self._sessions.close_all()
        await self._instruments.stop()
        await self._public.close()

    # -- orders -----------------------------------------------------------------------------

    def _params(self, order: OrderRecord) -> dict[str, Any]:
        params: dict[str, Any] = {"label" if self._uses_label else "clientOrderId": order.order_id}
        tif = _TIME_IN_FORCE.get(order.time_in_force)
        if tif is None:
            raise not_supported(
                f"time in force {order.time_in_force.value} has no ccxt form", method="place"
            )
        if tif != "GTC":
            params["timeInForce"] = tif
        if order.post_only:
            params["postOnly"] = True
        if order.reduce_only:
            params["reduceOnly"] = True
        return params

    def _report(
        self,
        found: dict[str, Any],
        order: OrderRecord,
        source: ReportSource,
        *,
        command: CommandType | None = None,
        request_id: str | None = None,
    ) -> ExecutionReport:
        return report_from_order(
            found,
            account_id=order.account_id,
            order_id=order.order_id,
            instrument_name=order.instrument_name,
            source=source,
            trades=found.get("trades") or (),
            command=command,
            request_id=request_id,
        )

    def _check_label(self, found: dict[str, Any], order: OrderRecord, method: str) -> None:
        label = label_of(found)
        if label == order.order_id:
            return
        log.error(
            "exchange.label_mismatch",
            venue=self.name,
            order_id=order.order_id,
            exchange_order_id=found.get("id"),
            exchange_label=label,
            method=method,
        )
        raise LabelMismatch(
            LABEL_MISMATCH,
            f"exchange order {found.get('id')} has label {label!r}, not {order.order_id!r}",
            method=method,
        )

    async def place(self, order: OrderRecord, *, prepaid: bool = False) -> ExecutionReport:
        if order.order_type not in (OrderType.LIMIT, OrderType.MARKET):
            raise not_supported(
                f"order type {order.order_type.value} is not mapped to ccxt yet", method="place"
            )
        params = self._params(order)
        price = order.price if order.order_type is OrderType.LIMIT else None

        async def create(client: Any) -> dict[str, Any]:
            symbol = self._symbol(client, order.instrument_name)
            self._check_precision(client, symbol, order.amount, price)
            placed: dict[str, Any] = await client.create_order(
                symbol, order.order_type.value, order.direction.value, order.amount, price, params
            )
            return placed

        placed = await self._call(order.account_id, "create_order", create)
        self._check_label(placed, order, "create_order")
        return self._report(
            placed, order, ReportSource.RPC, command=CommandType.SUBMIT, request_id=order.request_id
        )

    async def _labelled(self, order: OrderRecord, *, closed: bool) -> list[dict[str, Any]]:
        """The venue's orders of the instrument that carry our order id (open ones, and the
        closed ones too if ``closed``)."""

        async def lookup(client: Any) -> list[dict[str, Any]]:
            symbol = self._symbol(client, order.instrument_name)
            found: list[dict[str, Any]] = list(await client.fetch_open_orders(symbol))
            if closed:
                found += await client.fetch_closed_orders(symbol)
            return [o for o in found if label_of(o) == order.order_id]

        return await self._call(order.account_id, "fetch_orders", lookup)

    async def find(self, order: OrderRecord) -> ExecutionReport | None:
        orders = await self._labelled(order, closed=True)
        if not orders:
            return None
        if len({o.get("id") for o in orders}) > 1:
            log.error("exchange.duplicate_label", venue=self.name, order_id=order.order_id)

        def updated(o: dict[str, Any]) -> int:
            return int(o.get("lastUpdateTimestamp") or o.get("timestamp") or 0)

        return self._report(max(orders, key=updated), order, ReportSource.RECONCILE)

    async def refresh(self, order: OrderRecord) -> ExecutionReport:
        if not order.exchange_order_id:
            raise OrderNotFound(_ORDER_NOT_FOUND, f"{order.order_id} has no exchange order id")
        exchange_id = order.exchange_order_id

        async def fetch(client: Any) -> dict[str, Any]:
            symbol = self._symbol(client, order.instrument_name)
            found: dict[str, Any] = await client.fetch_order(exchange_id, symbol)
            return found

        found = await self._call(order.account_id, "fetch_order", fetch)
        self._check_label(found, order, "fetch_order")
        return self._report(found, order, ReportSource.RECONCILE)

    async def fills(self, order: OrderRecord, exchange_order_id: str) -> list[Fill]:
        async def fetch(client: Any) -> list[dict[str, Any]]:
            symbol = self._symbol(client, order.instrument_name)
            return list(await client.fetch_order_trades(exchange_order_id, symbol))

        trades = await self._call(order.account_id, "fetch_order_trades", fetch)
        for trade in trades:
            # A trade without a label is one whose order had none; another label means the
            # id names someone else's order.
            if label_of(trade) not in (None, order.order_id):
                self._check_label(trade, order, "fetch_order_trades")
        return [fill_from_trade(t) for t in trades]

    async def open_orders(self, account_id: str, currency: str) -> list[ExecutionReport]:
        if not self._uses_label:
            # Our instrument is not known here, and listing every market's orders by
            # currency is not a unified ccxt call: the label lookups per order will do.
            raise not_supported(
                f"ccxt {self._ccxt_id}: listing open orders by currency", method="open_orders"
            )

        async def fetch(client: Any) -> list[dict[str, Any]]:
            return list(await client.fetch_open_orders(None, None, None, {"code": currency}))

        orders = await self._call(account_id, "fetch_open_orders", fetch)
        reports = []
        for found in orders:
            label = label_of(found)
            if not label:
                continue
            instrument = str((found.get("info") or {}).get("instrument_name") or "")
            reports.append(
                report_from_order(
                    found,
                    account_id=account_id,
                    order_id=label,
                    instrument_name=instrument,
                    source=ReportSource.RECONCILE,
                )
            )
        return reports

    async def cancel(self, order: OrderRecord) -> None:
        for found in await self._labelled(order, closed=False):
            exchange_id = found["id"]

            async def cancel(client: Any, exchange_id: str = exchange_id) -> None:
                symbol = self._symbol(client, order.instrument_name)
                try:
                    await client.cancel_order(exchange_id, symbol)
                except ccxt.OrderNotFound:
                    pass  # gone meanwhile: what a cancel wants

            try:
                await self._call(order.account_id, "cancel_order", cancel)
            except NotOpenOrder:
                continue  # filled or cancelled meanwhile: nothing left to cancel

    async def amend(
        self, order: OrderRecord, amount: float, price: float | None
    ) -> ExecutionReport:
        live = await self._labelled(order, closed=False)
        if not live:
            raise NotOpenOrder(
                _NOT_OPEN_ORDER, f"{order.order_id} has no open order at {self.name}"
            )
        exchange_id = str(live[0]["id"])

        async def edit(client: Any) -> dict[str, Any]:
            symbol = self._symbol(client, order.instrument_name)
            self._check_precision(client, symbol, amount, price)
            edited: dict[str, Any] = await client.edit_order(
                exchange_id,
                symbol,
                order.order_type.value,
                order.direction.value,
                amount,
                price if price is not None else order.price,
            )
            return edited

        edited = await self._call(order.account_id, "edit_order", edit)
        self._check_label(edited, order, "edit_order")
        return self._report(edited, order, ReportSource.RPC, command=CommandType.AMEND)

    # -- pacing and sessions --------------------------------------------------------------

    async def order_book(self, account_id: str, instrument_name: str, depth: int) -> BookSnapshot:
        """The top ``depth`` levels of the instrument's book (ccxt's ``fetch_order_book``)."""

        async def fetch(client: Any) -> Any:
            return await client.fetch_order_book(self._symbol(client, instrument_name), depth)

        book = await self._call(account_id, "fetch_order_book", fetch)
        return BookSnapshot.from_pairs(book.get("bids") or [], book.get("asks") or [])

    async def order_entry_delay(self, account_id: str) -> float:
        await self._sessions.get(account_id)  # raises when the account cannot trade here
        return 0.0

    async def reserve_order_entry(self, account_id: str) -> None:
        return None  # ccxt's throttle paces every request itself

    async def settled(self, account_id: str) -> None:
        return None

    async def next_reconnect(self) -> Reconnect:
        await self._never.wait()
        raise AssertionError("unreachable")  # pragma: no cover

    def reconciled(self, reconnect: Reconnect) -> None:
        return None
