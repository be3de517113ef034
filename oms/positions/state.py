"""The keeper's table values and its internal repartition message (JSON, like every topic)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from oms.kafka.codecs import RecordCodec
from oms.positions.math import Book, PositionKind
from oms.schemas import DEFAULT_VENUE, ExecutionReport, PositionRecord, Record, now_ms

# A fill in a position's reorder window: (timestamp, trade seq, trade_id, buy, amount, price,
# fee). Tuples sort in exchange order as they are and are compact in the changelog.
RecentFill = tuple[int, int, str, bool, float, float, float]


class PositionState(Record):
    """Current position of one account in one instrument (the ``positions`` table value)."""

    account_id: str
    instrument_name: str
    venue: str = DEFAULT_VENUE
    kind: PositionKind
    size: float = 0.0
    average_price: float = 0.0
    realized_pnl: float = 0.0
    fees: float = 0.0
    fills: int = 0
    turnover: float = 0.0
    version: int = 0
    last_trade_id: str | None = None
    last_order_id: str | None = None
    updated_at: int = Field(default_factory=now_ms)
    # Set by a reconciliation mismatch or an inconsistent fill; cleared by `oms positions ack`.
    needs_review: bool = False
    review_reason: str | None = None
    # Reports of different orders travel on different partitions, so fills can arrive out of
    # exchange order, and average price and realized PnL depend on the order. The last
    # REORDER_WINDOW fills are kept with the book before them (the checkpoint): a fill older
    # than the newest one is put in its place and the window replayed.
    checkpoint: Book = Book()
    recent: list[RecentFill] = Field(default_factory=list)

    @property
    def book(self) -> Book:
        return Book(self.size, self.average_price, self.realized_pnl, self.fees)


class ReportBundle(Record):
    """Execution reports of one position, forwarded on the keeper's internal topic
    (``<prefix>positions-fills``, keyed by ``position_key``) so a single agent instance
    writes each position. A bundle may also carry a control command (ack, adjustment)."""

    reports: list[ExecutionReport] = Field(default_factory=list)
    command: dict[str, Any] | None = None


class _Value:
    """Faust ``value_type`` adapter for a pydantic Record (see oms.kafka.codecs)."""

    model: type[Record]

    @classmethod
    def from_data(cls, data: Any, preferred_type: Any = None) -> Any:
        return data


class PositionStateValue(_Value):
    class _options:
        serializer = RecordCodec(PositionState)


class CompactRecordCodec(RecordCodec):
    """A record as JSON without its None fields (they parse back as their None default):
    the seen-trades changelog gets one per fill."""

    def _dumps(self, s: Any) -> bytes:
        return compact_json(s)


def compact_json(record: Record) -> bytes:
    """``record`` as JSON, None fields left out."""
    data: bytes = record.__pydantic_serializer__.to_json(record, exclude_none=True)
    return data


class PositionRecordValue(_Value):
    class _options:
        serializer = CompactRecordCodec(PositionRecord)
