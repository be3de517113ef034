"""A routed order's attempts recorded on the parent before their children exist, as the agents
apply it (no Kafka: dicts are the tables): the release agent (the parent partition's writer)
records a decision and then publishes its event and children, publishes them again when the
same decision is read again, and ignores another decision for a recorded attempt and one for
a parent that stopped working; a worker that takes the parent over waits for a recorded
attempt's children and routes the next attempt once they are done with a remainder."""

from __future__ import annotations

from typing import Any

from oms.algos.scheduler import AlgoScheduler
from oms.algos.sor import SorStrategy, child_order_id, params_of
from oms.algos.strategy import StrategyContext, VenueQuote
from oms.algos.twap import child_update
from oms.orders.decisions import DECISIONS_KEY, Decision, digest, recorded_steps, to_trigger
from oms.orders.routing import BookSnapshot, child_request_id
from oms.schemas import (
    DeadLetter,
    OrderEvent,
    OrderEventType,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    OrderType,
    ReasonCode,
    now_ms,
)
from oms.schemas.conditions import OrderTrigger, TriggerKind
from oms.streams.order_state import OrderStateContext, handle_report
from oms.streams.order_table import ObservedOrders
from oms.streams.release import ReleaseContext, handle_trigger
from tests.orders.factories import order_record

META = {"algo": "sor", "sor_venues": "a,b", "sor_max_attempts": 3}


def quote(venue: str, *asks: tuple[float, float]) -> VenueQuote:
    return VenueQuote(venue, BookSnapshot.from_pairs([], list(asks)), taker_fee=0.0005, lot=10)


# a: cheaper but only 30 deep; b: the rest.
BOOKS = {"a": quote("a", (100.0, 30)), "b": quote("b", (101.0, 500))}
# Other books: everything at b (another owner's view a moment later).
OTHER_BOOKS = {"a": quote("a"), "b": quote("b", (101.0, 500))}


async def nothing(*_: Any) -> None:
    return None


def parent(**kw: Any) -> OrderRecord:
    now = now_ms()
    base: dict[str, Any] = dict(
        order_id="p",
        account_id="acc",
        amount=100.0,
        order_type=OrderType.MARKET,
        price=None,
        metadata=dict(META),
        created_at=now,
        updated_at=now,
    )
    base.update(kw)
    status = base.pop("status", OrderStatus.OPEN)
    return order_record(status, **base)


def decide(order: OrderRecord, books: dict[str, VenueQuote] = BOOKS) -> Decision:
    """What the strategy decides about ``order`` on ``books`` (its next attempt)."""
    ctx = StrategyContext(now_ms(), params_of(order), {}, None, books)
    decision = SorStrategy().on_timer(order, ctx).decision
    assert decision is not None
    return decision


class Worker:
    """The parent's partition on one worker: its table, the release agent (the writer that
    records decisions), the order-state agent (the children's news), a scheduler running
    the strategies, and what they all publish."""

    def __init__(self, data: dict[str, OrderRecord] | None = None) -> None:
        self.data: dict[str, OrderRecord] = data if data is not None else {}
        self.events: list[OrderEvent] = []
        self.commands: list[OrderRequest] = []  # the internal commands (the children)
        self.triggers: list[OrderTrigger] = []  # decisions sent by the scheduler
        self.letters: list[DeadLetter] = []
        self.books_asked: list[str] = []
        self.scheduler = AlgoScheduler(
            self.data.get,
            lambda order_id: True,
            self._command,
            lambda instrument: None,
            quote=self._quote,
            publish_event=self._emit,
            publish_trigger=self._trigger,
        )
        self.orders = ObservedOrders(self.data, [self.scheduler])
        outputs: dict[str, Any] = {
            "orders": self.orders,
            "emit": self._emit,
            "dead_letter": self._letter,
        }
        self.release = ReleaseContext(
            **outputs,
            source_topic="order-triggers",
            held=None,  # type: ignore[arg-type]
            executor=None,  # type: ignore[arg-type]
            instrument=lambda name: None,
            create=nothing,
            on_fired=nothing,
            publish_trigger=nothing,
            publish_request=self._command,
        )
        self.state = OrderStateContext(
            **outputs, source_topic="execution-reports", publish_trigger=nothing
        )
        self.books = BOOKS

    async def _emit(self, event: OrderEvent) -> None:
        self.events.append(event)

    async def _command(self, request: OrderRequest) -> None:
        self.commands.append(request)

    async def _trigger(self, trigger: OrderTrigger) -> None:
        self.triggers.append(trigger)

    async def _letter(self, letter: DeadLetter) -> None:
        self.letters.append(letter)

    async def _quote(self, venue: str, order: OrderRecord, depth: int) -> VenueQuote:
        self.books_asked.append(venue)
        return self.books[venue]

    async def deliver(self, trigger: OrderTrigger, *, replayed: bool = False) -> None:
        """The release agent reads the trigger from the parent's partition."""
        await handle_trigger(
            self.release,
            trigger.to_bytes(),
            key=trigger.order_id.encode(),
            partition=0,
            offset=0,
            replayed=replayed,
        )

    async def child_news(self, child: OrderRecord, **update: Any) -> None:
        """A child changed (``update``): order state forwards its news to the parent, whose
        partition's order-state agent folds it in."""
        after = child.model_copy(update={"version": child.version + 1, **update})
        report = child_update(child, after)
        assert report is not None
        await handle_report(
            self.state, report.to_bytes(), key=b"p", partition=0, offset=0, replayed=False
        )

    def take_over(self) -> None:
        """The worker starts (again) with the table as it is: every order noted afresh."""
        for order_id, order in self.data.items():
            self.scheduler.note(order_id, order)


def child(order: OrderRecord, attempt: int, venue: str, amount: float) -> OrderRecord:
    return order_record(
        OrderStatus.OPEN,
        order_id=child_order_id(order, attempt, venue),
        account_id="acc",
        amount=amount,
        metadata={"parent_id": "p"},
        version=1,
    )


async def test_a_decision_is_recorded_then_its_event_and_children_go_out() -> None:
    worker = Worker()
    worker.data["p"] = before = parent()
    decision = decide(before)
    await worker.deliver(to_trigger("p", decision))
    after = worker.data["p"]
    ids = [child_order_id(before, 0, "a"), child_order_id(before, 0, "b")]
    assert after.children == {i: [0.0, 0.0, 0.0] for i in ids}
    assert after.metadata[DECISIONS_KEY] == digest(decision.requests)
    assert after.version == before.version + 1 and after.status is OrderStatus.OPEN
    assert after.filled_amount == 0.0
    # Then the routed event, as of the recorded parent (its snapshot shows the children).
    [event] = worker.events
    assert event.event_type is OrderEventType.ROUTED and event.event_id == "p:routed:0"
    assert event.version == after.version and event.order == after
    assert event.details["routing"]["allocations"][0]["venue"] == "a"
    # Then the children, as they were decided.
    assert [(r.request_id, r.venue, r.amount) for r in worker.commands] == [
        (child_request_id("p", 0, "a"), "a", 30.0),
        (child_request_id("p", 0, "b"), "b", 70.0),
    ]
    assert worker.release.counters == {"decisions_record": 1}


async def test_the_same_decision_read_again_publishes_its_children_again_only() -> None:
    worker = Worker()
    worker.data["p"] = parent()
    trigger = to_trigger("p", decide(worker.data["p"]))
    await worker.deliver(trigger)
    recorded = worker.data["p"]
    first = list(worker.commands)
    # Read again (a crash before the offset was committed): the children again, the same
    # request ids (a duplicate at intake for each one that went out), nothing recorded.
    await worker.deliver(trigger)
    assert worker.data["p"] == recorded
    assert worker.commands == first + first
    assert len(worker.events) == 1
    # Read again by a worker that took the partition over: the event goes out again too (the
    # first may have been lost with the worker), under the same event id.
    await worker.deliver(trigger, replayed=True)
    assert worker.data["p"] == recorded
    assert worker.commands == first * 3
    assert [e.event_id for e in worker.events] == ["p:routed:0", "p:routed:0"]
    assert worker.release.counters == {"decisions_record": 1, "decisions_replay": 2}


async def test_another_decision_for_a_recorded_attempt_is_ignored() -> None:
    worker = Worker()
    worker.data["p"] = before = parent()
    await worker.deliver(to_trigger("p", decide(before)))
    recorded = worker.data["p"]
    sent = list(worker.commands)
    # Another owner decided attempt 0 on other books: everything at b.
    other = decide(before, OTHER_BOOKS)
    assert other.step == 0
    assert [(r.venue, r.amount) for r in other.requests] == [("b", 100.0)]
    await worker.deliver(to_trigger("p", other))
    # The same venues with other amounts is another allocation too.
    skewed = Decision(
        0,
        tuple(r.model_copy(update={"amount": 50.0}) for r in sent),
        (),
    )
    await worker.deliver(to_trigger("p", skewed))
    assert worker.data["p"] == recorded
    assert worker.commands == sent and len(worker.events) == 1
    assert worker.release.counters == {"decisions_record": 1, "decisions_conflict": 2}


async def test_a_decision_for_a_parent_that_stopped_working_is_ignored() -> None:
    worker = Worker()
    working = parent()
    decision = decide(working)
    for status in (OrderStatus.CANCELLED, OrderStatus.FILLED, OrderStatus.WAITING):
        worker.data["p"] = stopped = working.model_copy(update={"status": status})
        await worker.deliver(to_trigger("p", decision))
        assert worker.data["p"] == stopped  # nothing recorded
    assert worker.commands == [] and worker.events == []
    assert worker.release.counters == {"decisions_not_working": 3}


async def test_a_route_trigger_without_a_valid_decision_goes_to_the_dead_letters() -> None:
    worker = Worker()
    worker.data["p"] = before = parent()
    decision = decide(before)
    foreign = Decision(
        0, tuple(r.model_copy(update={"metadata": {"parent_id": "q"}}) for r in decision.requests)
    )
    for trigger in (
        OrderTrigger(order_id="p", kind=TriggerKind.ROUTE, reason="x", details={"step": 0}),
        to_trigger("p", foreign),
        to_trigger("p", Decision(0, ())),
    ):
        await worker.deliver(trigger)
    assert worker.data["p"] == before
    assert worker.commands == [] and worker.events == []
    assert [letter.reason_code for letter in worker.letters] == [ReasonCode.SCHEMA_INVALID] * 3
    assert "not a child of p" in worker.letters[1].error


async def test_a_new_owner_waits_for_a_recorded_attempt_then_routes_the_next() -> None:
    # The first owner routes attempt 0; its decision is recorded and its children go out.
    old = Worker()
    old.orders["p"] = parent()
    await old.scheduler.run_once()  # asks for the books
    await old.scheduler.run_once()  # decides on them
    [trigger] = old.triggers
    await old.deliver(trigger)
    assert old.data["p"].metadata[DECISIONS_KEY]
    # It stops before any child's news came. A new owner starts from the table alone.
    new = Worker(dict(old.data))
    new.take_over()
    for _ in range(3):
        await new.scheduler.run_once()
    assert new.triggers == [] and new.books_asked == []  # waits: attempt 0's children live
    # Their news: a filled 30 of 30; b, an IOC, filled 40 of its 70 and was cancelled.
    first, second = child(new.data["p"], 0, "a", 30.0), child(new.data["p"], 0, "b", 70.0)
    await new.child_news(first, status=OrderStatus.FILLED, filled_amount=30.0, average_price=100)
    await new.scheduler.run_once()
    assert new.triggers == [] and new.books_asked == []  # b still live
    await new.child_news(
        second, status=OrderStatus.CANCELLED, filled_amount=40.0, average_price=101.0
    )
    assert new.data["p"].status is OrderStatus.PARTIALLY_FILLED
    assert new.data["p"].filled_amount == 70.0
    await new.scheduler.run_once()  # asks for the books
    await new.scheduler.run_once()  # decides attempt 1 on them
    [decided] = new.triggers
    await new.deliver(decided)
    assert [(r.request_id, r.amount) for r in new.commands] == [
        (child_request_id("p", 1, "a"), 30.0)
    ]
    after = new.data["p"]
    assert len(recorded_steps(after)) == 2
    assert after.children[child_order_id(after, 1, "a")] == [0.0, 0.0, 0.0]
    assert after.filled_amount == 70.0  # a recorded child has filled nothing yet


async def test_two_owners_deciding_the_same_attempt_send_one_set_of_children() -> None:
    # The old owner decided attempt 0; its trigger is on its way when a new owner, seeing no
    # attempt recorded, decides attempt 0 too, on other books.
    old = Worker()
    old.orders["p"] = parent()
    await old.scheduler.run_once()
    await old.scheduler.run_once()
    [first] = old.triggers
    new = Worker(dict(old.data))
    new.books = OTHER_BOOKS
    new.take_over()
    await new.scheduler.run_once()
    await new.scheduler.run_once()
    [second] = new.triggers
    # The partition's writer (now the new owner's release agent) reads both, in order.
    await new.deliver(first)
    await new.deliver(second)
    assert [(r.venue, r.amount) for r in new.commands] == [("a", 30.0), ("b", 70.0)]
    assert new.release.counters == {"decisions_record": 1, "decisions_conflict": 1}
    # The new owner's strategy, woken by the record, waits for those children.
    await new.scheduler.run_once()
    assert len(new.triggers) == 1 and new.books_asked == ["a", "b"]
