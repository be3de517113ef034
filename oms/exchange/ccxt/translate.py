"""ccxt's unified structures and errors as ours: orders and trades as ExecutionReports and
Fills, ccxt exceptions as the typed errors of :mod:`oms.exchange.errors`.

What cannot be mapped faithfully raises :class:`~oms.exchange.errors.NotSupported` rather
than being guessed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ccxt.async_support as ccxt

from oms.exchange.errors import (
    NOT_SUPPORTED,
    ConnectionLost,
    ExchangeBusy,
    ExchangeError,
    InvalidParams,
    NotEnoughFunds,
    NotSupported,
    OrderNotFound,
    OrderRejected,
    RateLimited,
    RequestTimeout,
    Unauthorized,
    error_class,
    reason_for,
)
from oms.exchange.interface import VenuePosition
from oms.schemas import (
    CommandType,
    Direction,
    ExchangeOrderState,
    ExecutionReport,
    Fill,
    InstrumentSpec,
    ReportSource,
)

# ccxt's unified order status -> the exchange order state our state machine knows. ccxt's
# "closed" is "fully filled" (a cancelled order is "canceled", even when partly filled).
_STATES: dict[str, ExchangeOrderState] = {
    "open": ExchangeOrderState.OPEN,
    "closed": ExchangeOrderState.FILLED,
    "canceled": ExchangeOrderState.CANCELLED,
    "rejected": ExchangeOrderState.REJECTED,
}

# A venue's own error code in the body ccxt puts in its message (Deribit's JSON-RPC error).
_CODE = re.compile(r'"code"\s*:\s*(-?\d+)')

# ccxt exception -> ours, most specific first. Whatever may have reached the venue and has
# no answer (network trouble, an unreadable reply) is an unknown outcome: the order is
# looked up by label before anything is sent again.
_ERRORS: tuple[tuple[type[Exception], type[ExchangeError]], ...] = (
    (ccxt.RequestTimeout, RequestTimeout),
    (ccxt.RateLimitExceeded, RateLimited),
    (ccxt.DDoSProtection, RateLimited),
    (ccxt.OnMaintenance, ExchangeBusy),
    (ccxt.InvalidNonce, ExchangeBusy),
    (ccxt.CancelPending, ExchangeBusy),
    (ccxt.NetworkError, ConnectionLost),
    (ccxt.BadResponse, ConnectionLost),
    (ccxt.OperationFailed, ConnectionLost),
    (ccxt.InsufficientFunds, NotEnoughFunds),
    (ccxt.OrderNotFound, OrderNotFound),
    (ccxt.AuthenticationError, Unauthorized),
    (ccxt.NotSupported, NotSupported),
    (ccxt.InvalidOrder, InvalidParams),
    (ccxt.BadRequest, InvalidParams),
    (ccxt.ArgumentsRequired, InvalidParams),
    (ccxt.OperationRejected, OrderRejected),
)


def error_from_ccxt(exc: Exception, *, method: str) -> ExchangeError:
    """The typed error of a ccxt exception. A venue code found in the message (Deribit's, when
    ccxt talks to Deribit) picks the class from :mod:`oms.exchange.errors`' table, so the
    same failure reads the same through either adapter; otherwise ccxt's class decides."""
    message = str(exc)[:500]
    match = _CODE.search(message)
    code = int(match.group(1)) if match else 0
    if code and reason_for(code) is not None:
        return error_class(code)(code, message, method=method)
    for ccxt_class, ours in _ERRORS:
        if isinstance(exc, ccxt_class):
            return ours(code, message, method=method, reason=_snake(type(exc).__name__))
    return ExchangeError(code, message, method=method, reason=_snake(type(exc).__name__))


def not_supported(message: str, *, method: str) -> NotSupported:
    """The error of a request the adapter does not express at the venue."""
    return NotSupported(NOT_SUPPORTED, message, method=method)


def label_of(item: Mapping[str, Any]) -> str | None:
    """Our order id on a ccxt order or trade: ccxt's ``clientOrderId``, or Deribit's
    ``label`` in the raw ``info`` (ccxt's deribit leaves ``clientOrderId`` empty)."""
    client_id = item.get("clientOrderId")
    if client_id:
        return str(client_id)
    info = item.get("info") or {}
    label = info.get("label") if isinstance(info, Mapping) else None
    return str(label) if label else None


def fill_from_trade(trade: Mapping[str, Any]) -> Fill:
    """A ccxt unified trade as a Fill (amounts in the venue's own units, as ccxt gives them)."""
    fee = trade.get("fee") or {}
    taker_or_maker = trade.get("takerOrMaker")
    side = trade.get("side")
    return Fill(
        trade_id=str(trade["id"]),
        amount=float(trade["amount"]),
        price=float(trade["price"]),
        fee=float(fee.get("cost") or 0.0),
        fee_currency=fee.get("currency"),
        liquidity={"maker": "M", "taker": "T"}.get(str(taker_or_maker)),
        timestamp=int(trade.get("timestamp") or 0),
        direction=Direction(side) if side in ("buy", "sell") else None,
    )


def report_from_order(
    order: Mapping[str, Any],
    *,
    account_id: str,
    order_id: str,
    instrument_name: str,
    source: ReportSource,
    trades: Iterable[Mapping[str, Any]] = (),
    command: CommandType | None = None,
    request_id: str | None = None,
) -> ExecutionReport:
    """A ccxt unified order as an ExecutionReport of our order ``order_id``."""
    status = order.get("status")
    state = _STATES.get(str(status))
    if state is None:
        raise not_supported(
            f"ccxt order status {status!r} of {order.get('id')} has no meaning here",
            method="parse_order",
        )
    side = order.get("side")
    filled = float(order.get("filled") or 0.0)
    updated = int(
        order.get("lastUpdateTimestamp")
        or order.get("lastTradeTimestamp")
        or order.get("timestamp")
        or 0
    )
    fills = [fill_from_trade(t) for t in trades]
    exchange_id = str(order.get("id") or "")
    average = order.get("average")
    price = order.get("price")
    amount = order.get("amount")
    return ExecutionReport(
        report_id=f"{source.value}:{exchange_id}:{updated}:{filled}:{len(fills)}",
        order_id=order_id,
        account_id=account_id,
        source=source,
        command=command,
        request_id=request_id,
        instrument_name=instrument_name,
        exchange_order_id=exchange_id or None,
        order_state=state,
        direction=Direction(side) if side in ("buy", "sell") else None,
        amount=float(amount) if amount is not None else None,
        price=float(price) if price else None,
        filled_amount=filled,
        average_price=float(average) if average else None,
        exchange_timestamp=updated,
        fills=fills,
    )


def report_from_trades(
    trades: Sequence[Mapping[str, Any]],
    *,
    account_id: str,
    order_id: str,
    instrument_name: str,
    source: ReportSource,
) -> ExecutionReport:
    """Trades of one order of ours (``order_id``) as a fills-only report."""
    fills = [fill_from_trade(t) for t in trades]
    ids = ",".join(f.trade_id for f in fills)
    exchange_id = str(trades[0].get("order") or "")
    return ExecutionReport(
        report_id=f"{source.value}:trades:{ids}"[:200],
        order_id=order_id,
        account_id=account_id,
        source=source,
        instrument_name=instrument_name,
        exchange_order_id=exchange_id or None,
        order_state=None,
        exchange_timestamp=max(int(t.get("timestamp") or 0) for t in trades),
        fills=fills,
    )


def market_id_of(item: Mapping[str, Any], markets: Mapping[str, Any] | None) -> str:
    """The venue's own instrument name of a ccxt order, trade or position (its market's id;
    Deribit's ``instrument_name`` in the raw ``info`` when the symbol is not a known market)."""
    market = (markets or {}).get(str(item.get("symbol")))
    if market and market.get("id"):
        return str(market["id"])
    info = item.get("info") or {}
    name = info.get("instrument_name") if isinstance(info, Mapping) else None
    if not name:
        raise not_supported(f"no instrument of {item.get('symbol')!r}", method="market")
    return str(name)


def position_from_ccxt(position: Mapping[str, Any], instrument_name: str) -> VenuePosition:
    """A ccxt unified position as a VenuePosition: ``contracts`` signed by ``side``, in the
    venue's units of amounts as ccxt gives them (what its trades' amounts are in, so the
    keeper's sizes from fills compare)."""
    contracts = abs(float(position.get("contracts") or 0.0))
    size = -contracts if position.get("side") == "short" else contracts
    return VenuePosition(
        instrument_name=instrument_name,
        size=size,
        average_price=float(position.get("entryPrice") or 0.0),
        mark_price=_number(position.get("markPrice")),
        floating_pnl=_number(position.get("unrealizedPnl")),
        realized_pnl=_number(position.get("realizedPnl")),
    )


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def spec_from_market(market: Mapping[str, Any], *, tick_size: float) -> InstrumentSpec:
    """A ccxt market as our instrument specification (``tick_size`` already in price units)."""
    info = market.get("info") or {}
    kind = info.get("kind") or {"swap": "future", "future": "future"}.get(
        str(market.get("type")), str(market.get("type"))
    )
    limits = (market.get("limits") or {}).get("amount") or {}
    minimum = limits.get("min") or (market.get("precision") or {}).get("amount")
    if not minimum:
        raise not_supported(f"market {market.get('id')} has no minimum amount", method="markets")
    return InstrumentSpec(
        instrument_name=str(market["id"]),
        kind=str(kind),
        base_currency=str(market.get("base")),
        quote_currency=str(market.get("quote")),
        settlement_currency=market.get("settle"),
        tick_size=tick_size,
        contract_size=float(market.get("contractSize") or 1.0),
        min_trade_amount=float(minimum),
        is_active=market.get("active") is not False,
        instrument_type=info.get("instrument_type")
        or ("reversed" if market.get("inverse") else "linear"),
        expiration_timestamp=market.get("expiry"),
        option_type=market.get("optionType"),
        strike=market.get("strike"),
    )


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
