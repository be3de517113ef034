"""The ledger on plain dicts: dedupe, refusals, and fills arriving out of exchange order."""

from __future__ import annotations

import itertools

import pytest

from oms.positions.ledger import Ledger
from oms.positions.math import Book, PositionKind, apply_fill
from oms.schemas import Direction, ExecutionReport, Fill, ReasonCode, ReportSource

FILLS = [  # (trade seq, side, amount, price): add, add, reduce, flip, add to the short
    (1, "buy", 100, 50_000.0),
    (2, "buy", 200, 40_000.0),
    (3, "sell", 150, 45_000.0),
    (4, "sell", 400, 47_000.0),
    (5, "sell", 50, 46_000.0),
]


def report(seq: int, side: str, amount: float, price: float, order: str = "o-1") -> ExecutionReport:
    return ExecutionReport(
        report_id=f"r{seq}",
        order_id=order,
        account_id="a",
        source=ReportSource.RPC,
        instrument_name="BTC-PERPETUAL",
        direction=Direction(side),
        fills=[Fill(trade_id=f"BTC-{seq}", amount=amount, price=price, timestamp=1000 + seq)],
    )


def ledger() -> Ledger:
    return Ledger({}, {}, lambda name: PositionKind.INVERSE)


def expected() -> Book:
    book = Book()
    for _, side, amount, price in FILLS:
        book, _ = apply_fill(book, PositionKind.INVERSE, side == "buy", amount, price)
    return book


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(FILLS))))[::17])
def test_any_arrival_order_gives_the_exchange_order_result(order: tuple[int, ...]) -> None:
    led = ledger()
    for i in order:
        led.apply_reports([report(*FILLS[i])])
    state = led.state("a", "BTC-PERPETUAL")
    want = expected()
    assert state.size == want.size
    assert state.average_price == pytest.approx(want.average_price)
    assert state.realized_pnl == pytest.approx(want.realized_pnl)


def test_duplicates_count_once_and_mismatched_copies_are_refused() -> None:
    led = ledger()
    first = led.apply_reports([report(*FILLS[0])])
    assert len(first.records) == 1 and first.records[0].size == 100
    again = led.apply_reports([report(*FILLS[0]), report(*FILLS[0])])
    assert again.records == [] and led.counters.duplicates == 2
    replayed = led.apply_reports([report(*FILLS[0])], replayed=True)
    assert [r.record_id for r in replayed.records] == [first.records[0].record_id]
    bad = led.apply_reports([report(1, "buy", 999, 50_000.0)])
    assert [p.reason_code for p in bad.problems] == [ReasonCode.INCONSISTENT_FILL]
    state = led.state("a", "BTC-PERPETUAL")
    assert state.size == 100 and state.fills == 1 and state.needs_review


def test_fill_of_an_order_placed_outside_the_oms_is_counted_and_marked() -> None:
    led = ledger()
    out = led.apply_reports([report(1, "sell", 10, 50_000.0, order="")])
    assert out.records[0].size == -10
    assert out.records[0].reason_code is ReasonCode.UNKNOWN_ORDER


def test_positions_and_trade_ids_are_per_venue() -> None:
    led = ledger()
    native = report(1, "buy", 100, 50_000.0)
    # The same trade id at another venue is another trade, of another position.
    elsewhere = report(1, "sell", 30, 51_000.0).model_copy(update={"venue": "second"})
    applied = led.apply_reports([native, elsewhere])
    assert len(applied.records) == 2
    assert led.state("a", "BTC-PERPETUAL").size == 100
    other = led.state("a", "BTC-PERPETUAL", "second")
    assert other.size == -30 and other.venue == "second"
    by_venue = {r.venue: r for r in applied.records}
    assert by_venue["second"].key == "a|BTC-PERPETUAL@second"
    assert by_venue["deribit"].key == "a|BTC-PERPETUAL"  # as before venues existed
    # Each is still counted once at its own venue.
    assert led.apply_reports([elsewhere]).records == []
    assert led.state("a", "BTC-PERPETUAL", "second").size == -30
