"""Smart order routing as a strategy: its pure hooks (attempts from the parent's record, a
decision waited for until recorded, the remainder routed again, the end with a reason), the
scheduler fetching the venues' books for it (a failing and a slow venue) and sending its
decision to be recorded, and intake recording a routed parent."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from oms.algos.registry import StrategyRegistry
from oms.algos.scheduler import AlgoScheduler
from oms.algos.sor import (
    SorStrategy,
    attempts_made,
    child_order_id,
    params_of,
)
from oms.algos.strategy import Plan, StrategyContext, VenueQuote
from oms.algos.twap import apply_child_report, child_update
from oms.orders.decisions import DECISIONS_KEY, decision_key, digest, from_trigger
from oms.orders.params import CANCEL_REASON_KEY, SorParams, works_through_children
from oms.orders.routing import BookSnapshot, child_request_id
from oms.schemas import (
    CommandType,
    OrderEvent,
    OrderEventType,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    OrderType,
    ReasonCode,
    TimeInForce,
    now_ms,
)
from oms.schemas.commands import CommandOrigin, OrderCommand, OriginKind
from oms.schemas.conditions import OrderTrigger, TriggerKind
from oms.settings import QueueSettings
from oms.streams.intake import IntakeContext, apply_command
from oms.streams.order_table import ObservedOrders
from tests.orders.factories import BTC_PERPETUAL, order_record

META = {"algo": "sor", "sor_venues": "a,b", "sor_max_attempts": 2}
T0 = 1_700_000_000_000


def parent(**kw: Any) -> OrderRecord:
    base: dict[str, Any] = dict(
        order_id="p",
        amount=100.0,
        order_type=OrderType.MARKET,
        price=None,
        metadata=dict(META),
        created_at=T0,
        updated_at=T0,
    )
    base.update(kw)
    status = base.pop("status", OrderStatus.OPEN)
    return order_record(status, **base)


def ctx(
    order: OrderRecord,
    now: int = T0,
    sent: dict[str, int] | None = None,
    books: dict[str, VenueQuote] | None = None,
) -> StrategyContext:
    return StrategyContext(now, params_of(order), sent or {}, None, books)


def quote(venue: str, *asks: tuple[float, float], fee: float = 0.0005) -> VenueQuote:
    return VenueQuote(venue, BookSnapshot.from_pairs([], list(asks)), taker_fee=fee, lot=10)


BOOKS = {
    # a: cheaper but only 30 deep; b: the rest.
    "a": quote("a", (100.0, 30)),
    "b": quote("b", (101.0, 500)),
}


def test_a_new_parent_asks_for_its_venues_books_now() -> None:
    order = parent()
    plan = SorStrategy().on_order(order, ctx(order, now=T0 + 10))
    assert plan.books == ("a", "b") and plan.wake_at == T0 + 10
    assert plan.depth == SorParams.from_metadata(META).depth
    assert works_through_children(order.metadata)


def test_the_split_is_the_attempts_decision_with_its_event() -> None:
    order = parent()
    plan = SorStrategy().on_timer(order, ctx(order, books=BOOKS))
    # Nothing goes out directly: the decision is recorded on the parent first.
    assert plan.requests == () and plan.events == ()
    decision = plan.decision
    assert decision is not None and decision.step == 0
    [event] = decision.events
    assert event.event_type is OrderEventType.ROUTED and event.event_id == "p:routed:0"
    routing = event.details["routing"]
    assert set(routing["books"]) == {"a", "b"}
    assert routing["books"]["a"]["levels"] == [[100.0, 30.0]]
    assert [(r.request_id, r.venue, r.amount, r.price) for r in decision.requests] == [
        (child_request_id("p", 0, "a"), "a", 30.0, 100.0),
        (child_request_id("p", 0, "b"), "b", 70.0, 101.0),
    ]
    for request in decision.requests:
        assert request.time_in_force is TimeInForce.IMMEDIATE_OR_CANCEL
        assert request.metadata["parent_id"] == "p"
    assert plan.books == ()  # the write that records it wakes the parent


def test_a_decision_sent_and_not_recorded_yet_is_waited_for() -> None:
    order = parent()
    sent = {decision_key(0): T0}
    assert attempts_made(order, params_of(order)) == 0
    strategy = SorStrategy()
    assert strategy.on_report(order, ctx(order, sent=sent)) == Plan()  # no books, nothing
    # Books that came meanwhile decide nothing more.
    assert strategy.on_timer(order, ctx(order, sent=sent, books=BOOKS)) == Plan()


def test_recorded_children_are_waited_for_and_count_as_an_attempt() -> None:
    placeholders = {
        child_order_id(parent(), 0, "a"): [0.0, 0.0, 0.0],
        child_order_id(parent(), 0, "b"): [0.0, 0.0, 0.0],
    }
    order = parent(children=placeholders, metadata={**META, DECISIONS_KEY: "d0"})
    assert attempts_made(order, params_of(order)) == 1
    assert SorStrategy().on_report(order, ctx(order)) == Plan()  # waiting: no books


def test_a_remainder_is_routed_again_and_the_attempts_survive_a_restart() -> None:
    # Attempt 0's children are known to the parent only (nothing in memory: a new worker).
    children = {
        child_order_id(parent(), 0, "a"): [30.0, 100.0, 1.0],
        child_order_id(parent(), 0, "b"): [40.0, 101.0, 1.0],  # IOC left 30 unfilled
    }
    order = parent(children=children, filled_amount=70.0, status=OrderStatus.PARTIALLY_FILLED)
    assert attempts_made(order, params_of(order)) == 1
    strategy = SorStrategy()
    assert strategy.on_report(order, ctx(order)).books == ("a", "b")
    books = {"a": quote("a"), "b": quote("b", (102.0, 100))}  # b kept: it shows depth again
    decision = strategy.on_timer(order, ctx(order, books=books)).decision
    assert decision is not None and decision.step == 1
    assert [(r.request_id, r.amount) for r in decision.requests] == [
        (child_request_id("p", 1, "b"), 30.0)
    ]
    assert decision.events[0].details["routing"]["skipped"]["a"] == "empty book"


def test_attempts_used_up_end_the_parent_with_its_filled_part() -> None:
    children = {
        child_order_id(parent(), 0, "a"): [30.0, 100.0, 1.0],
        child_order_id(parent(), 1, "b"): [20.0, 101.0, 1.0],
    }
    order = parent(children=children, filled_amount=50.0, status=OrderStatus.PARTIALLY_FILLED)
    plan = SorStrategy().on_report(order, ctx(order))
    [cancel] = plan.requests
    assert cancel.command is CommandType.CANCEL and cancel.order_id == "p"
    assert cancel.metadata[CANCEL_REASON_KEY] == ReasonCode.ROUTE_EXHAUSTED.value


def test_nothing_allocable_ends_the_parent_and_says_why() -> None:
    order = parent(order_type=OrderType.LIMIT, price=99.0)  # below every ask
    failed = VenueQuote("b", error="book not received within 2s")
    plan = SorStrategy().on_timer(order, ctx(order, books={"a": BOOKS["a"], "b": failed}))
    [cancel] = plan.requests
    assert cancel.metadata[CANCEL_REASON_KEY] == ReasonCode.NO_LIQUIDITY.value
    skipped = plan.events[0].details["routing"]["skipped"]
    assert skipped == {"a": "no depth within the limit", "b": "book not received within 2s"}


def test_a_limit_parent_routes_within_its_limit() -> None:
    order = parent(order_type=OrderType.LIMIT, price=100.5)
    decision = SorStrategy().on_timer(order, ctx(order, books=BOOKS)).decision
    assert decision is not None
    assert [(r.venue, r.amount, r.price) for r in decision.requests] == [("a", 30.0, 100.0)]


def test_a_cancelled_parent_cancels_its_live_and_recorded_children() -> None:
    live = child_order_id(parent(), 0, "a")
    done = child_order_id(parent(), 0, "b")
    recorded = child_order_id(parent(), 1, "a")  # recorded, not heard of yet
    children = {live: [5.0, 100.0, 0.0], done: [10.0, 1.0, 1.0], recorded: [0.0, 0.0, 0.0]}
    order = parent(status=OrderStatus.CANCELLED, children=children)
    strategy = SorStrategy()
    assert strategy.on_report(order, ctx(order)).wake_at == order.updated_at
    plan = strategy.on_timer(order, ctx(order, now=T0 + 5))
    assert sorted(r.order_id or "" for r in plan.requests) == sorted([live, recorded])
    assert all(
        r.metadata[CANCEL_REASON_KEY] == ReasonCode.LINKED_ORDER_CANCELLED.value
        for r in plan.requests
    )


def test_after_a_restart_a_recorded_attempt_is_waited_for_then_the_next_one_routed() -> None:
    # A new worker (a fresh strategy, nothing in memory) takes over a parent whose attempt 0
    # was recorded a while ago but whose children's news has not come yet.
    first = child_order_id(parent(), 0, "a")
    second = child_order_id(parent(), 0, "b")
    meta = {**META, DECISIONS_KEY: "d0"}
    waiting = parent(metadata=meta, children={first: [0.0, 0.0, 0.0], second: [0.0, 0.0, 0.0]})
    strategy = SorStrategy()
    assert strategy.on_order(waiting, ctx(waiting, now=T0 + 60_000)) == Plan()
    # Books asked for before (by the old owner's plan) decide nothing either.
    assert strategy.on_timer(waiting, ctx(waiting, now=T0 + 60_000, books=BOOKS)) == Plan()
    # Their news: a filled 30, b left 40 of its 70 unfilled. The remainder is attempt 1.
    done = waiting.model_copy(
        update={
            "children": {first: [30.0, 100.0, 1.0], second: [30.0, 101.0, 1.0]},
            "filled_amount": 60.0,
            "status": OrderStatus.PARTIALLY_FILLED,
        }
    )
    assert strategy.on_report(done, ctx(done, now=T0 + 61_000)).books == ("a", "b")
    decision = strategy.on_timer(done, ctx(done, now=T0 + 61_000, books=BOOKS)).decision
    assert decision is not None and decision.step == 1
    assert sum(r.amount or 0.0 for r in decision.requests) == 40.0


def test_a_parent_seen_again_with_nothing_recorded_routes_at_once() -> None:
    order = parent()  # long quiet, no attempt recorded: no child can exist
    plan = SorStrategy().on_order(order, ctx(order, now=T0 + 60_000))
    assert plan.books == ("a", "b") and plan.wake_at == T0 + 60_000


def test_a_recorded_child_folds_into_the_parent_when_its_news_comes() -> None:
    order = parent(
        children={child_order_id(parent(), 0, "a"): [0.0, 0.0, 0.0]},
        metadata={**META, DECISIONS_KEY: "d0"},
    )
    child = order_record(
        OrderStatus.OPEN,
        order_id=child_order_id(order, 0, "a"),
        amount=30.0,
        metadata={"parent_id": "p"},
        version=1,
    )
    # Its first news (accepted, nothing filled) is what the parent recorded already.
    report = child_update(child, child, force=True)
    assert report is not None
    assert apply_child_report(order, report).order.children == order.children
    filled = child.model_copy(
        update={
            "status": OrderStatus.FILLED,
            "filled_amount": 30.0,
            "average_price": 100.0,
            "version": 2,
        }
    )
    report = child_update(child, filled)
    assert report is not None
    after = apply_child_report(order, report).order
    assert after.children == {child.order_id: [30.0, 100.0, 1.0]}
    assert after.status is OrderStatus.PARTIALLY_FILLED and after.filled_amount == 30.0
    assert after.metadata[DECISIONS_KEY] == "d0"  # the record stays


def test_children_fold_into_a_routed_parent_which_fills_on_their_sum() -> None:
    order = parent()
    first = order_record(
        OrderStatus.FILLED,
        order_id=child_order_id(order, 0, "a"),
        amount=30.0,
        filled_amount=30.0,
        average_price=100.0,
        metadata={"parent_id": "p"},
        version=3,
    )
    # All its children done, a remainder left: not ended by the fold (TWAP's rule) but by
    # the strategy's re-route or cancel.
    report = child_update(first.model_copy(update={"status": OrderStatus.OPEN}), first)
    assert report is not None
    after = apply_child_report(order, report).order
    assert after.status is OrderStatus.PARTIALLY_FILLED and after.filled_amount == 30.0
    second = first.model_copy(
        update={
            "order_id": child_order_id(order, 0, "b"),
            "amount": 70.0,
            "filled_amount": 70.0,
            "average_price": 101.0,
        }
    )
    report = child_update(second.model_copy(update={"status": OrderStatus.OPEN}), second)
    assert report is not None
    filled = apply_child_report(after, report).order
    assert filled.status is OrderStatus.FILLED and filled.filled_amount == 100.0
    assert filled.average_price == pytest.approx((30 * 100 + 70 * 101) / 100)


# -- the scheduler fetching books ------------------------------------------------------------


class Venues:
    """A quote source: venue a answers, b fails, c never answers in time."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []

    async def quote(self, venue: str, order: OrderRecord, depth: int) -> VenueQuote:
        self.asked.append((venue, depth))
        if venue == "b":
            raise ConnectionError("venue b is down")
        if venue == "c":
            await asyncio.sleep(30)
        return BOOKS["a"]


async def test_the_scheduler_fetches_books_and_a_failing_or_slow_venue_comes_empty() -> None:
    data: dict[str, OrderRecord] = {}
    published: list[OrderRequest] = []
    events: list[OrderEvent] = []
    triggers: list[OrderTrigger] = []

    async def publish(request: OrderRequest) -> None:
        published.append(request)

    async def publish_event(event: OrderEvent) -> None:
        events.append(event)

    async def publish_trigger(trigger: OrderTrigger) -> None:
        triggers.append(trigger)

    venues = Venues()
    scheduler = AlgoScheduler(
        data.get,
        lambda order_id: True,
        publish,
        lambda instrument: None,
        quote=venues.quote,
        publish_event=publish_event,
        publish_trigger=publish_trigger,
        book_timeout_s=0.3,
    )
    table = ObservedOrders(data, [scheduler])
    now = now_ms()
    meta = {"algo": "sor", "sor_venues": "a,b,c", "sor_depth": 7}
    table["p"] = parent(metadata=meta, created_at=now, updated_at=now)
    await scheduler.run_once(now + 1)  # wakes now: books asked for, fetched on this pass
    started = time.monotonic()
    await scheduler.run_once(now + 2)
    took = time.monotonic() - started
    assert sorted(venues.asked) == [("a", 7), ("b", 7), ("c", 7)]
    assert took < 1.0, took  # the slow venue held the pass back by its timeout only
    # The decision goes to the parent's writer, keyed by the parent; nothing else goes out.
    [trigger] = triggers
    assert trigger.kind is TriggerKind.ROUTE and trigger.order_id == "p"
    assert events == [] and published == []
    decision = from_trigger(trigger)
    [event] = decision.events
    skipped = event.details["routing"]["skipped"]
    assert skipped["b"] == "book unavailable: ConnectionError: venue b is down"
    assert skipped["c"] == "book not received within 0.3s"
    assert decision.step == 0
    assert [(r.venue, r.amount) for r in decision.requests] == [("a", 30.0)]
    assert scheduler.counters["book_errors"] == 1 and scheduler.counters["book_timeouts"] == 1
    assert scheduler.counters["sor_decisions"] == 1
    # Sent once: the same pass again sends nothing more (and asks for no books: waiting).
    await scheduler.run_once(now + 3)
    assert len(triggers) == 1 and len(venues.asked) == 3
    assert digest(decision.requests) == digest(from_trigger(trigger).requests)


async def test_a_failing_book_source_never_stops_the_timer() -> None:
    data: dict[str, OrderRecord] = {}

    async def publish(request: OrderRequest) -> None:
        return None

    scheduler = AlgoScheduler(data.get, lambda order_id: True, publish, lambda i: None)
    table = ObservedOrders(data, [scheduler])
    now = now_ms()
    table["p"] = parent(created_at=now, updated_at=now)
    await scheduler.run_once(now + 1)
    await scheduler.run_once(now + 2)  # no book source at all: both venues empty, with why
    assert scheduler.counters["sor_cancel"] == 1
    assert scheduler.counters["events_dropped"] == 1


# -- intake ------------------------------------------------------------------------------------


class Executor:
    def __init__(self) -> None:
        self.submitted: list[OrderRecord] = []

    async def submit(self, order: OrderRecord, *, check_label_first: bool) -> None:
        self.submitted.append(order)


async def _intake(metadata: dict[str, Any]) -> tuple[OrderEvent, Executor]:
    events: list[OrderEvent] = []
    executor = Executor()

    async def emit(event: OrderEvent) -> None:
        events.append(event)

    async def nothing(*_: Any) -> None:
        return None

    ctx = IntakeContext(
        orders={},
        emit=emit,
        dead_letter=nothing,
        source_topic="order-commands",
        executor=executor,  # type: ignore[arg-type]
        instrument=lambda name: BTC_PERPETUAL if name == "BTC-PERPETUAL" else None,
        account_known=lambda account: True,
        held=None,  # type: ignore[arg-type]
        queue_settings=QueueSettings(),
        on_fired=nothing,
        publish_trigger=nothing,
        strategies=StrategyRegistry.builtin(),
    )
    request = OrderRequest.model_validate(
        {
            "request_id": "r-sor",
            "account_id": "acc",
            "instrument_name": "BTC-PERPETUAL",
            "direction": "buy",
            "amount": 100,
            "order_type": "market",
            "metadata": metadata,
        }
    )
    command = OrderCommand(
        origin=CommandOrigin(kind=OriginKind.EXTERNAL, source="0:1"), request=request
    )
    await apply_command(ctx, command, replayed=False)
    return events[-1], executor


async def test_intake_records_a_routed_parent_working_and_never_sends_it() -> None:
    event, executor = await _intake({"algo": "sor", "sor_venues": "deribit"})
    assert event.event_type is OrderEventType.OPEN, event
    assert event.details["algo"] == "sor" and event.details["strategy"] == "routed"
    assert executor.submitted == []


async def test_intake_refuses_a_routed_order_naming_an_unknown_venue() -> None:
    event, executor = await _intake({"algo": "sor", "sor_venues": "deribit,nowhere"})
    assert event.event_type is OrderEventType.REJECTED
    assert event.reason_code is ReasonCode.UNKNOWN_VENUE
    assert "nowhere" in (event.message or "")
    assert executor.submitted == []


async def test_intake_refuses_a_request_carrying_recorded_decisions() -> None:
    event, executor = await _intake(
        {"algo": "sor", "sor_venues": "deribit", DECISIONS_KEY: "forged"}
    )
    assert event.event_type is OrderEventType.REJECTED
    assert event.reason_code is ReasonCode.SCHEMA_INVALID
    assert DECISIONS_KEY in (event.message or "")
    assert executor.submitted == []
