"""Position records, on ``oms.positions`` keyed by account+instrument."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from oms.schemas.base import DEFAULT_VENUE, Record, now_ms
from oms.schemas.enums import ReasonCode


class PositionRecordType(StrEnum):
    EXECUTION = "execution"
    ADJUSTMENT = "adjustment"
    CORRECTION = "correction"


class PositionRecord(Record):
    """One change to a position, with the state before and after (append-only audit)."""

    record_id: str
    account_id: str
    instrument_name: str
    # Positions are kept per venue: the same instrument at two venues is two positions.
    venue: str = DEFAULT_VENUE
    record_type: PositionRecordType = PositionRecordType.EXECUTION
    size: float
    size_before: float = 0.0
    average_price: float | None = None
    average_price_before: float | None = None
    realized_pnl: float = 0.0
    unrealized_pnl: float | None = None
    fee: float = 0.0
    order_id: str | None = None
    trade_id: str | None = None
    direction: str | None = None
    trade_amount: float | None = None
    trade_price: float | None = None
    actor: str = "oms"
    timestamp: int = Field(default_factory=now_ms)
    # Set by the position keeper; all optional so older records still parse.
    # realized_pnl and fees_total are cumulative (Deribit's realized_profit_loss); this
    # change's part is realized_pnl_change. version counts the position's changes.
    kind: str | None = Field(None, description="inverse | linear | option")
    realized_pnl_change: float = 0.0
    fees_total: float = 0.0
    version: int = 0
    mark_price: float | None = None
    reason_code: ReasonCode | None = None
    message: str | None = None
    needs_review: bool = False
    exchange_size: float | None = None
    # Cumulative counters (fills, traded notional: USD for inverse, USDC for linear, coin for
    # options): statistics take differences of these, which replays cannot double count.
    fills_total: int = 0
    turnover_total: float = 0.0
    trade_notional: float = 0.0
    exchange_average_price: float | None = None

    @property
    def key(self) -> str:
        return position_key(self.account_id, self.instrument_name, self.venue)


def position_key(account_id: str, instrument_name: str, venue: str = DEFAULT_VENUE) -> str:
    """Kafka key of a position: everything about one account+instrument at one venue in one
    partition. The default venue's keys are ``account|instrument``, as before venues
    existed; another venue's are ``account|instrument@venue``."""
    if venue == DEFAULT_VENUE:
        return f"{account_id}|{instrument_name}"
    return f"{account_id}|{instrument_name}@{venue}"
