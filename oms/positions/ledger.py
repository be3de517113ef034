"""Applying fills to positions: dedupe by trade id, checks, and the records they produce.

Pure logic over two mappings (the keeper passes its Faust tables): ``positions`` keyed by
``position_key`` and ``seen`` keyed by ``trade_id`` holding the record each trade produced.
Every trade is counted once, whichever report (RPC reply, subscription, reconcile lookup)
brings it first; a repeat with the same figures is a duplicate (counted, nothing else); a
repeat with different figures, a non-positive amount or price, or a fill without a side is
inconsistent: not applied, and the position is flagged for review. With a retention, ``seen``
keeps only recent trades (the keeper prunes older ones), so a fill older than the retention
that is not among the position's recent fills is refused as ``stale_fill`` and flagged: it
may have been counted before its entry was pruned.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field

from oms.positions.math import Book, PositionKind, apply_fill, close_enough, notional
from oms.positions.state import PositionState, RecentFill
from oms.schemas import (
    DEFAULT_VENUE,
    Direction,
    ExecutionReport,
    Fill,
    PositionRecord,
    PositionRecordType,
    ReasonCode,
    now_ms,
    position_key,
)

# Our order ids (derive_order_id); anything else was placed outside the OMS.
OMS_ORDER_PREFIX = "o-"
# Fills kept per position to put late arrivals in exchange order (see PositionState.recent).
REORDER_WINDOW = 64


def trade_seq(trade_id: str) -> int:
    """The numeric part of a Deribit trade id (``BTC-123456`` -> 123456), 0 if none: orders
    fills of the same millisecond."""
    tail = trade_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def replay(start: Book, kind: PositionKind, fills: list[RecentFill]) -> Book:
    """The book after applying ``fills`` in order to ``start``."""
    book = start
    for _ts, _seq, _id, buy, amount, price, fee in fills:
        book, _ = apply_fill(book, kind, buy, amount, price, fee)
    return book


@dataclass(frozen=True)
class FillProblem:
    """A fill that was not applied, with why."""

    reason_code: ReasonCode
    message: str
    report: ExecutionReport
    fill: Fill


@dataclass
class LedgerCounters:
    applied: int = 0
    duplicates: int = 0
    inconsistent: int = 0
    unknown_orders: int = 0
    reannounced: int = 0
    reordered: int = 0
    stale: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Applied:
    """What applying reports produced: records to publish and problems to announce."""

    records: list[PositionRecord] = field(default_factory=list)
    problems: list[FillProblem] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)


def seen_key(venue: str, trade_id: str) -> str:
    """The seen-trades key of a venue's trade: trade ids are unique only within a venue. The
    default venue's keys are the bare trade ids, as before venues existed."""
    return trade_id if venue == DEFAULT_VENUE else f"{venue}:{trade_id}"


def record_id_for_trade(key: str, trade_id: str) -> str:
    return f"{key}:trade:{trade_id}"


class Ledger:
    """Applies execution reports to the position and seen-trade mappings."""

    def __init__(
        self,
        positions: MutableMapping[str, PositionState | None],
        seen: MutableMapping[str, PositionRecord | None],
        kind_of: Callable[[str], PositionKind],
        retention_ms: int | None = None,
    ) -> None:
        self.positions = positions
        self.seen = seen
        self.kind_of = kind_of
        # Fills older than this are refused unless known (None: ``seen`` keeps every trade).
        self.retention_ms = retention_ms
        self._stale_before = 0
        self.counters = LedgerCounters()
        self._unsettled: set[str] = set()

    def state(
        self, account_id: str, instrument_name: str, venue: str = DEFAULT_VENUE
    ) -> PositionState:
        key = position_key(account_id, instrument_name, venue)
        current = self.positions.get(key)
        if current is None:
            current = PositionState(
                account_id=account_id,
                instrument_name=instrument_name,
                venue=venue,
                kind=self.kind_of(instrument_name),
                updated_at=0,
            )
        return current

    def apply_reports(self, reports: list[ExecutionReport], *, replayed: bool = False) -> Applied:
        """Apply every fill of ``reports`` once; writes each touched position once.

        ``replayed``: the input may have been processed before a crash, so a duplicate
        re-announces the record stored for its trade (same record id: consumers drop it).
        """
        out = Applied()
        states: dict[str, PositionState] = {}
        # In exchange order within the batch: reports of different orders come from
        # different partitions, and a fill older than the last applied one costs a replay.
        pairs = sorted(
            ((r, f) for r in reports for f in r.fills),
            key=lambda rf: (
                rf[1].timestamp or rf[0].exchange_timestamp,
                trade_seq(rf[1].trade_id),
                rf[1].trade_id,
            ),
        )
        self._unsettled = set()
        # Once per batch: the keeper prunes seen trades older than now - retention, so any
        # fill older than that may have lost its entry.
        if self.retention_ms is not None:
            self._stale_before = now_ms() - self.retention_ms
        for report, fill in pairs:
            key = position_key(report.account_id, report.instrument_name, report.venue)
            state = states.get(key)
            if state is None:
                # One copy per position and batch; the fills of the batch update it in place
                # (the table's object is replaced, never changed, when the batch ends).
                state = self.state(
                    report.account_id, report.instrument_name, report.venue
                ).model_copy()
            states[key] = self._apply_fill(state, key, report, fill, out, replayed)
        for key in self._unsettled:
            states[key] = self._settle(states[key], key, out)
        for key in out.touched:
            self.positions[key] = states[key]
        return out

    def _settle(self, state: PositionState, key: str, out: Applied) -> PositionState:
        """Average price and realized PnL of a position that took a late fill: replay the
        window in exchange order once per batch. Size, fees, fills and turnover do not depend
        on the order; the batch's last record of the position carries the replayed figures
        (its realized change absorbs the difference, so cumulative sums stay exact)."""
        exact = replay(state.checkpoint, state.kind, state.recent)
        for i in range(len(out.records) - 1, -1, -1):
            record = out.records[i]
            if record.key == key and record.record_type is PositionRecordType.EXECUTION:
                if record.version == state.version:
                    fixed = record.model_copy(
                        update={
                            "average_price": exact.average_price,
                            "realized_pnl": exact.realized_pnl,
                            "realized_pnl_change": record.realized_pnl_change
                            + exact.realized_pnl
                            - record.realized_pnl,
                        }
                    )
                    out.records[i] = fixed
                    if fixed.trade_id:
                        self.seen[seen_key(fixed.venue, fixed.trade_id)] = fixed
                break
        return _update(
            state, {"average_price": exact.average_price, "realized_pnl": exact.realized_pnl}
        )

    def _apply_fill(
        self,
        state: PositionState,
        key: str,
        report: ExecutionReport,
        fill: Fill,
        out: Applied,
        replayed: bool,
    ) -> PositionState:
        direction = fill.direction or report.direction
        previous = self.seen.get(seen_key(report.venue, fill.trade_id))
        if previous is not None:
            same = (
                previous.account_id == report.account_id
                and previous.venue == report.venue
                and previous.instrument_name == report.instrument_name
                and previous.direction == (direction.value if direction else None)
                and close_enough(previous.trade_amount or 0.0, fill.amount)
                and close_enough(previous.trade_price or 0.0, fill.price)
            )
            if same:
                self.counters.duplicates += 1
                if replayed:
                    self.counters.reannounced += 1
                    out.records.append(previous)
                return state
            return self._problem(
                state, key, report, fill, out, ReasonCode.INCONSISTENT_FILL,
                f"trade {fill.trade_id} seen before as {previous.direction} "
                f"{previous.trade_amount} @ {previous.trade_price} of {previous.instrument_name}",
            )  # fmt: skip
        if direction is None:
            return self._problem(
                state, key, report, fill, out, ReasonCode.INCONSISTENT_FILL,
                f"trade {fill.trade_id} has no direction",
            )  # fmt: skip
        timestamp = fill.timestamp or report.exchange_timestamp or now_ms()
        buy = direction is Direction.BUY
        if timestamp < self._stale_before:
            return self._stale(state, key, report, fill, out, timestamp, buy)
        entry: RecentFill = (
            timestamp, trade_seq(fill.trade_id), fill.trade_id, buy, fill.amount, fill.price,
            fill.fee,
        )  # fmt: skip
        try:
            book, _ = apply_fill(state.book, state.kind, buy, fill.amount, fill.price, fill.fee)
        except ValueError as exc:
            return self._problem(
                state, key, report, fill, out, ReasonCode.INCONSISTENT_FILL, str(exc)
            )
        recent = list(state.recent)
        if recent and entry < recent[-1]:
            # Arrived after a later fill: it takes its place in the window, and the batch's
            # last record of this position gets the replayed figures (see _settle).
            insort(recent, entry)
            self._unsettled.add(key)
            self.counters.reordered += 1
        else:
            recent.append(entry)
        checkpoint = state.checkpoint
        if len(recent) > REORDER_WINDOW:
            fold = len(recent) - REORDER_WINDOW
            checkpoint = replay(checkpoint, state.kind, recent[:fold])
            recent = recent[fold:]
        realized = book.realized_pnl - state.realized_pnl
        unknown = not report.order_id.startswith(OMS_ORDER_PREFIX)
        if unknown:
            self.counters.unknown_orders += 1
        version = state.version + 1
        traded = notional(state.kind, fill.amount, fill.price)
        record = PositionRecord(
            record_id=record_id_for_trade(key, fill.trade_id),
            account_id=state.account_id,
            instrument_name=state.instrument_name,
            venue=state.venue,
            record_type=PositionRecordType.EXECUTION,
            size=book.size,
            size_before=state.size,
            average_price=book.average_price,
            average_price_before=state.average_price,
            realized_pnl=book.realized_pnl,
            realized_pnl_change=realized,
            fee=fill.fee,
            fees_total=book.fees,
            order_id=report.order_id or None,
            trade_id=fill.trade_id,
            direction=direction.value,
            trade_amount=fill.amount,
            trade_price=fill.price,
            actor="oms",
            timestamp=timestamp,
            kind=state.kind.value,
            version=version,
            fills_total=state.fills + 1,
            turnover_total=state.turnover + traded,
            trade_notional=traded,
            # A fill of an order placed outside the OMS still moves the exchange position,
            # so it is counted; the record says where it came from.
            reason_code=ReasonCode.UNKNOWN_ORDER if unknown else None,
            message="fill of an order not placed through the OMS" if unknown else None,
        )
        self.seen[seen_key(report.venue, fill.trade_id)] = record
        self.counters.applied += 1
        out.records.append(record)
        out.touched.add(key)
        return _update(
            state,
            {
                "size": book.size,
                "average_price": book.average_price,
                "realized_pnl": book.realized_pnl,
                "fees": book.fees,
                "fills": state.fills + 1,
                "turnover": state.turnover + traded,
                "version": version,
                "last_trade_id": fill.trade_id,
                "last_order_id": report.order_id or None,
                "updated_at": timestamp,
                "checkpoint": checkpoint,
                "recent": recent,
            },
        )

    def _stale(
        self,
        state: PositionState,
        key: str,
        report: ExecutionReport,
        fill: Fill,
        out: Applied,
        timestamp: int,
        buy: bool,
    ) -> PositionState:
        """A fill older than the retention: a duplicate if still in the position's reorder
        window, else refused and flagged (counting it twice is worse than asking a human)."""
        for _ts, _seq, trade_id, was_buy, amount, price, _fee in state.recent:
            if (
                trade_id == fill.trade_id
                and was_buy == buy
                and close_enough(amount, fill.amount)
                and close_enough(price, fill.price)
            ):
                self.counters.duplicates += 1
                return state
        self.counters.stale += 1
        return self._problem(
            state, key, report, fill, out, ReasonCode.STALE_FILL,
            f"trade {fill.trade_id} at {timestamp} is older than the seen-trades retention "
            f"({self.retention_ms} ms): it may have been counted already",
            inconsistent=False,
        )  # fmt: skip

    def _problem(
        self,
        state: PositionState,
        key: str,
        report: ExecutionReport,
        fill: Fill,
        out: Applied,
        code: ReasonCode,
        message: str,
        *,
        inconsistent: bool = True,
    ) -> PositionState:
        if inconsistent:  # stale fills have their own counter
            self.counters.inconsistent += 1
        out.problems.append(FillProblem(code, message, report, fill))
        out.touched.add(key)
        return _update(state, {"needs_review": True, "review_reason": message[:300]})


def _update(state: PositionState, values: dict[str, object]) -> PositionState:
    """Set fields of the batch's own copy of a state (values are already of the right type;
    pydantic's __setattr__ per field or a model_copy per fill was a tenth of the keeper's CPU)."""
    state.__dict__.update(values)
    return state
