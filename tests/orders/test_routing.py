"""The pure split of a routed order across venues."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from oms.orders.params import SorParams
from oms.orders.routing import (
    DERIBIT_TAKER_FEE,
    PARENT_KEY,
    BookSnapshot,
    Level,
    VenueBook,
    child_request_id,
    child_requests,
    decision_details,
    net_price,
    next_step,
    routing_event,
    split,
    venue_book,
)
from oms.schemas import InstrumentSpec, OrderEvent, OrderEventType, OrderRecord, TimeInForce


def book(venue: str, *levels: tuple[float, float], **kw: float) -> VenueBook:
    return VenueBook(venue, tuple(Level(p, a) for p, a in levels), **kw)


def test_better_venue_is_filled_first() -> None:
    plan = split("buy", 30, [book("a", (101.0, 100)), book("b", (100.0, 100))])
    assert [(a.venue, a.amount, a.price) for a in plan.allocations] == [("b", 30, 100.0)]
    assert plan.unallocated == 0
    assert plan.skipped == {"a": "better venues took the amount"}


def test_spills_to_the_next_venue_within_depth() -> None:
    plan = split(
        "buy",
        50,
        [book("a", (101.0, 100)), book("b", (100.0, 20), (100.5, 10), (102.0, 100))],
    )
    # b's first two levels (30) beat a; the rest (20) at a, before b's third level.
    assert [(a.venue, a.amount, a.price) for a in plan.allocations] == [
        ("b", 30, 100.5),
        ("a", 20, 101.0),
    ]
    assert plan.allocations[0].average_price == pytest.approx((20 * 100 + 10 * 100.5) / 30)
    assert plan.allocated == 50


def test_depth_is_respected_and_the_rest_left_unallocated() -> None:
    plan = split("buy", 100, [book("a", (101.0, 10)), book("b", (100.0, 20))])
    assert {a.venue: a.amount for a in plan.allocations} == {"a": 10, "b": 20}
    assert plan.unallocated == 70


def test_sell_takes_the_highest_bid_first() -> None:
    plan = split("sell", 15, [book("a", (99.0, 10)), book("b", (100.0, 10))])
    assert [(a.venue, a.amount, a.price) for a in plan.allocations] == [
        ("b", 10, 100.0),
        ("a", 5, 99.0),
    ]


def test_fees_change_the_ranking() -> None:
    books = [book("a", (100.0, 10), taker_fee=0.002), book("b", (100.1, 10), taker_fee=0.0)]
    assert [a.venue for a in split("buy", 10, books).allocations] == ["b"]
    cheap = [book("a", (100.0, 10), taker_fee=0.0), book("b", (100.1, 10), taker_fee=0.0)]
    assert [a.venue for a in split("buy", 10, cheap).allocations] == ["a"]
    only_b = split("buy", 10, books).allocations[0]
    assert only_b.net_price == pytest.approx(net_price(100.1, 0.0, "buy"))
    # Sells lose the fee: the higher bid with the higher fee can be the worse one.
    sells = [book("a", (100.1, 10), taker_fee=0.002), book("b", (100.0, 10), taker_fee=0.0)]
    assert [a.venue for a in split("sell", 10, sells).allocations] == ["b"]


def test_default_fee_is_deribits() -> None:
    assert VenueBook("a", ()).taker_fee == DERIBIT_TAKER_FEE == 0.0005


def test_nothing_beyond_the_order_amount() -> None:
    books = [book("a", (100.0, 1000), (100.5, 1000)), book("b", (100.2, 1000))]
    for amount in (0, 10, 1500, 2999, 3000):
        plan = split("buy", amount, books)
        assert plan.allocated + plan.unallocated == pytest.approx(amount)
        assert plan.allocated <= amount


def test_lots_per_venue() -> None:
    # a trades in lots of 10 (its 25 shows as 20), b in lots of 1.
    plan = split("buy", 37, [book("a", (100.0, 25), lot=10), book("b", (100.5, 100), lot=1)])
    assert {a.venue: a.amount for a in plan.allocations} == {"a": 20, "b": 17}
    # What no venue's lot can take is left over, not rounded up.
    plan = split("buy", 7, [book("a", (100.0, 100), lot=10)])
    assert plan.allocations == () and plan.unallocated == 7
    # A fraction of a lot on one level completes with the next level of the same venue.
    plan = split("buy", 30, [book("a", (100.0, 15), (100.5, 15), lot=10)])
    assert [(a.amount, a.price) for a in plan.allocations] == [(30, 100.5)]


def test_fractional_lots_stay_exact() -> None:
    plan = split("buy", 0.3, [book("a", (0.05, 0.1), (0.06, 0.1), (0.07, 5), lot=0.1, tick=0.0005)])
    [child] = plan.allocations
    assert child.amount == 0.3
    assert child.price == 0.07


def test_prices_on_each_venues_tick() -> None:
    plan = split("buy", 20, [book("a", (100.3, 10), tick=0.5), book("b", (100.4, 10), tick=0.25)])
    assert {a.venue: a.price for a in plan.allocations} == {"a": 100.5, "b": 100.5}
    sell = split("sell", 10, [book("a", (100.3, 10), tick=0.5)])
    assert sell.allocations[0].price == 100.0


def test_limit_price_bounds_the_levels() -> None:
    plan = split(
        "buy",
        50,
        [book("a", (100.0, 10), (101.0, 100)), book("b", (102.0, 100))],
        limit_price=100.5,
    )
    assert {a.venue: a.amount for a in plan.allocations} == {"a": 10}
    assert plan.unallocated == 40
    assert plan.skipped == {"b": "no depth within the limit"}


def test_rate_budget_leaves_a_venue_out() -> None:
    books = [book("a", (100.0, 10), entry_delay_s=0.5), book("b", (101.0, 100))]
    plan = split("buy", 20, books)
    assert {a.venue: a.amount for a in plan.allocations} == {"b": 20}
    assert "rate budget" in plan.skipped["a"]
    assert {a.venue for a in split("buy", 20, books, max_entry_delay_s=1).allocations} == {
        "a",
        "b",
    }


def test_reroute_of_a_remainder_excludes_what_filled() -> None:
    first = split("buy", 50, [book("a", (100.0, 30)), book("b", (101.0, 100))])
    assert {a.venue: a.amount for a in first.allocations} == {"a": 30, "b": 20}
    # a filled only 10 of its 30: the 20 left is routed again on fresh books.
    again = split("buy", 20, [book("a", (100.5, 5)), book("b", (101.0, 80))])
    assert {a.venue: a.amount for a in again.allocations} == {"a": 5, "b": 15}


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        split("buy", -1, [])
    with pytest.raises(ValueError):
        split("buy", 1, [book("a", (1.0, 1), lot=0)])


def test_decision_details_carry_books_and_allocation() -> None:
    books = [book("a", *[(100.0 + i, 1) for i in range(8)]), book("b", (100.5, 100))]
    plan = split("buy", 5, books)
    details = decision_details("buy", 5, books, plan, attempt=1)
    json.dumps(details)  # goes on the wire as is
    routing = details["routing"]
    assert len(routing["books"]["a"]["levels"]) == 5  # top levels only
    assert routing["books"]["b"]["levels"] == [[100.5, 100]]
    assert routing["allocations"][0]["venue"] == "a"
    assert sum(a["amount"] for a in routing["allocations"]) == 5
    assert routing["attempt"] == 1 and routing["unallocated"] == 0


def test_sor_params_from_metadata() -> None:
    params = SorParams.from_metadata({"algo": "sor", "sor_venues": "deribit, paper2,deribit"})
    assert params.venues == ("deribit", "paper2")
    assert params.to_metadata()["sor_venues"] == "deribit,paper2"
    with pytest.raises(ValidationError):
        SorParams.from_metadata({"sor_venues": " , "})
    with pytest.raises(ValidationError):
        SorParams.from_metadata({"sor_venues": 3})


def _parent() -> OrderRecord:
    return OrderRecord.model_validate(
        {
            "order_id": "p-1",
            "request_id": "r-p-1",
            "account_id": "acct",
            "instrument_name": "BTC-PERPETUAL",
            "direction": "buy",
            "order_type": "limit",
            "amount": 50.0,
            "price": 101.0,
            "metadata": {"algo": "sor", "sor_venues": "a,b"},
        }
    )


def test_children_name_one_venue_each_with_deterministic_ids() -> None:
    parent = _parent()
    books = [book("a", (100.0, 30)), book("b", (101.0, 100))]
    plan = split("buy", parent.amount, books, limit_price=parent.price)
    children = child_requests(parent, plan, attempt=0)
    assert [(c.venue, c.amount, c.price) for c in children] == [("a", 30, 100.0), ("b", 20, 101.0)]
    assert all(c.time_in_force is TimeInForce.IMMEDIATE_OR_CANCEL for c in children)
    assert all(c.metadata[PARENT_KEY] == "p-1" for c in children)
    assert [c.request_id for c in children] == [
        child_request_id("p-1", 0, "a"),
        child_request_id("p-1", 0, "b"),
    ]
    # Published again, the same decision makes the same ids (a duplicate at intake).
    assert [c.request_id for c in child_requests(parent, plan, 0)] == [
        c.request_id for c in children
    ]
    assert child_request_id("p-1", 1, "a") != child_request_id("p-1", 0, "a")


def test_routing_event_carries_books_and_allocation() -> None:
    parent = _parent()
    books = [book("a", (100.0, 30)), book("b", (101.0, 100))]
    plan = split("buy", 50, books)
    event = routing_event(parent, books, plan, attempt=2, amount=50)
    assert event.event_type is OrderEventType.ROUTED
    assert event.event_id == "p-1:routed:2"
    routing = event.details["routing"]
    assert routing["attempt"] == 2
    assert set(routing["books"]) == {"a", "b"}
    assert [a["venue"] for a in routing["allocations"]] == ["a", "b"]
    # It goes on the wire as any event does.
    assert OrderEvent.model_validate_json(event.model_dump_json()) == event


def test_child_price_never_beyond_the_orders_limit() -> None:
    # A level off this venue's tick would round up past the limit: the limit bounds it.
    plan = split("buy", 10, [book("a", (100.2, 10), tick=0.5)], limit_price=100.3)
    assert plan.allocations[0].price == 100.0
    plan = split("sell", 10, [book("a", (100.2, 10), tick=0.5)], limit_price=100.1)
    assert plan.allocations[0].price == 100.5


def test_venue_book_from_a_snapshot_and_the_venues_instrument() -> None:
    snapshot = BookSnapshot.from_pairs([[99.5, 10], [99.0, 0]], [[100.0, 5], ["100.5", "7"]])
    assert snapshot.bids == (Level(99.5, 10),)  # empty levels dropped
    spec = InstrumentSpec(
        instrument_name="BTC-PERPETUAL", kind="future", base_currency="BTC",
        quote_currency="USD", tick_size=0.5, contract_size=10, min_trade_amount=10,
    )  # fmt: skip
    terms = {"lot": spec.min_trade_amount, "tick": spec.tick_size}
    built = venue_book("b", snapshot, "buy", **terms, taker_fee=0.0002, entry_delay_s=0.1)
    assert built == VenueBook(
        "b", (Level(100.0, 5), Level(100.5, 7)), taker_fee=0.0002, lot=10, tick=0.5,
        entry_delay_s=0.1,
    )  # fmt: skip
    assert venue_book("b", snapshot, "sell", **terms).levels == snapshot.bids


def test_next_step_waits_reroutes_and_ends() -> None:
    live = {"c1": [10.0, 100.0, 1.0], "c2": [0.0, 0.0, 0.0]}
    assert next_step(50, live, attempts=1, max_attempts=3) == ("wait", 0.0)
    partial = {"c1": [10.0, 100.0, 1.0], "c2": [15.0, 101.0, 1.0]}
    assert next_step(50, partial, attempts=1, max_attempts=3) == ("route", 25.0)
    assert next_step(50, partial, attempts=3, max_attempts=3) == ("done", 25.0)
    filled = {"c1": [30.0, 100.0, 1.0], "c2": [20.0, 101.0, 1.0]}
    assert next_step(50, filled, attempts=1, max_attempts=3) == ("done", 0.0)
    assert next_step(50, {}, attempts=0, max_attempts=3) == ("route", 50.0)


def test_children_point_at_their_parent_by_twaps_key() -> None:
    from oms.algos import twap

    assert PARENT_KEY == twap.PARENT_KEY
