"""Execution reports: what the exchange said about an order, on ``oms.execution-reports``."""

from __future__ import annotations

from pydantic import Field

from oms.schemas.base import DEFAULT_VENUE, Record, now_ms
from oms.schemas.enums import CommandType, Direction, ExchangeOrderState, ReportSource

# Error codes of the OMS's own, carried in ``ExecutionReport.error_code`` next to Deribit's.
# Client-side failures, outside Deribit's ranges, so every error has an int code for metrics.
CONNECTION_LOST = -1001
REQUEST_TIMEOUT = -1002
CLIENT_RATE_LIMITED = -1003
# Outcomes of the error strategies, reported like exchange errors so the state machine has one
# path for "a submit did not make it".
RETRIES_EXHAUSTED = -1004
NEEDS_REVIEW = -1005
# Reconciliation (oms.lifecycle.reconcile): an acknowledged order the exchange did not know
# after every check, and an answer about an order that is not the one we asked for.
LOST_AT_VENUE = -1006
LABEL_MISMATCH = -1007
# A request the venue's adapter cannot express at that venue (e.g. an order type ccxt has no
# unified form for): refused before anything is sent.
NOT_SUPPORTED = -1008


class Fill(Record):
    """One trade of an order (Deribit ``user.trades`` item, trimmed)."""

    trade_id: str
    amount: float
    price: float
    fee: float = 0.0
    fee_currency: str | None = None
    liquidity: str | None = None  # "M" maker / "T" taker
    timestamp: int = 0
    # The trade's own side (Deribit user_trade ``direction``): fills-only reports from
    # user.trades carry no order direction, and positions need the side of every fill.
    direction: Direction | None = None


class ExecutionReport(Record):
    """A snapshot of an order at the exchange, keyed by our order id (the Deribit label).

    Reports may arrive twice and out of order (RPC reply vs ``user.orders``); the order
    state machine applies only those that move the order forward.
    """

    report_id: str
    order_id: str
    account_id: str
    # The venue that reported it (positions are kept per venue).
    venue: str = DEFAULT_VENUE
    source: ReportSource
    # The command this report answers (RPC replies only): a failed cancel or amend leaves the
    # order as it was, while a failed submit rejects it.
    command: CommandType | None = None
    request_id: str | None = None
    instrument_name: str
    exchange_order_id: str | None = None
    order_state: ExchangeOrderState | None = None
    direction: Direction | None = None
    amount: float | None = None
    price: float | None = None
    filled_amount: float = 0.0
    average_price: float | None = None
    exchange_timestamp: int = 0
    fills: list[Fill] = Field(default_factory=list)
    error_code: int | None = None
    error_message: str | None = None
    received_at: int = Field(default_factory=now_ms)
