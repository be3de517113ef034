"""Translate Deribit payloads (order and user_trade objects) into our ExecutionReports.

The venue's job towards the rest of the OMS: everything outside ``oms.exchange.deribit``
speaks our schemas, never Deribit's dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from oms.schemas import (
    CommandType,
    Direction,
    ExchangeOrderState,
    ExecutionReport,
    Fill,
    ReportSource,
)


def fill_from_trade(trade: Mapping[str, Any]) -> Fill:
    """A Deribit ``user_trade`` object as a Fill."""
    return Fill(
        trade_id=str(trade["trade_id"]),
        amount=float(trade["amount"]),
        price=float(trade["price"]),
        fee=float(trade.get("fee") or 0.0),
        fee_currency=trade.get("fee_currency"),
        liquidity=trade.get("liquidity"),
        timestamp=int(trade.get("timestamp") or 0),
        direction=Direction(trade["direction"]) if trade.get("direction") else None,
    )


def report_from_order(
    order: Mapping[str, Any],
    *,
    account_id: str,
    source: ReportSource,
    trades: Iterable[Mapping[str, Any]] = (),
    command: CommandType | None = None,
    request_id: str | None = None,
    order_id: str | None = None,
) -> ExecutionReport:
    """A Deribit ``order`` object (plus optional trades) as an ExecutionReport.

    ``order_id`` defaults to the order's ``label``, which is our order id.
    """
    ours = order_id or order.get("label") or ""
    fills = [fill_from_trade(t) for t in trades]
    state = order.get("order_state")
    updated = int(order.get("last_update_timestamp") or 0)
    filled = float(order.get("filled_amount") or 0.0)
    exchange_id = str(order.get("order_id") or "")
    average = order.get("average_price")
    return ExecutionReport(
        report_id=f"{source.value}:{exchange_id}:{updated}:{filled}:{len(fills)}",
        order_id=ours,
        account_id=account_id,
        source=source,
        command=command,
        request_id=request_id,
        instrument_name=str(order.get("instrument_name") or ""),
        exchange_order_id=exchange_id or None,
        order_state=ExchangeOrderState(state) if state else None,
        direction=Direction(order["direction"]) if order.get("direction") else None,
        amount=float(order["amount"]) if order.get("amount") is not None else None,
        price=_price(order.get("price")),
        filled_amount=filled,
        average_price=float(average) if average else None,
        exchange_timestamp=updated,
        fills=fills,
    )


def report_from_trades(
    trades: Sequence[Mapping[str, Any]], *, account_id: str, source: ReportSource
) -> ExecutionReport:
    """Trades of one order (from ``user.trades``) as a fills-only report."""
    first = trades[0]
    fills = [fill_from_trade(t) for t in trades]
    ids = ",".join(f.trade_id for f in fills)
    return ExecutionReport(
        report_id=f"{source.value}:trades:{ids}"[:200],
        order_id=str(first.get("label") or ""),
        account_id=account_id,
        source=source,
        instrument_name=str(first.get("instrument_name") or ""),
        exchange_order_id=str(first.get("order_id") or "") or None,
        order_state=None,
        exchange_timestamp=max(int(t.get("timestamp") or 0) for t in trades),
        fills=fills,
    )


def _price(value: Any) -> float | None:
    # Deribit reports market orders with price "market_price".
    if value is None or isinstance(value, str):
        return None
    return float(value)
