"""The record of strategies' decisions on their order (pure): what identifies a decision,
how the writer judges one against the order, and a parent from before decisions were
recorded."""

from __future__ import annotations

import pytest

from oms.algos.sor import SorStrategy, attempts_made, child_order_id, params_of
from oms.algos.strategy import StrategyContext, VenueQuote
from oms.orders.decisions import (
    DECISIONS_KEY,
    UNKNOWN_STEP,
    Decision,
    Verdict,
    check,
    digest,
    judge,
    record,
    recorded_steps,
)
from oms.orders.routing import BookSnapshot
from oms.schemas import OrderRecord, OrderStatus, OrderType
from tests.orders.factories import order_record

META = {"algo": "sor", "sor_venues": "a,b", "sor_max_attempts": 3}
BOOKS = {
    "a": VenueQuote("a", BookSnapshot.from_pairs([], [[100.0, 30]]), lot=10),
    "b": VenueQuote("b", BookSnapshot.from_pairs([], [[101.0, 500]]), lot=10),
}


def parent(**kw: object) -> OrderRecord:
    fields: dict[str, object] = dict(
        order_id="p", amount=100.0, order_type=OrderType.MARKET, price=None, metadata=META
    )
    fields.update(kw)
    status = fields.pop("status", OrderStatus.OPEN)
    return order_record(status, **fields)  # type: ignore[arg-type]


def decide(order: OrderRecord) -> Decision:
    ctx = StrategyContext(0, params_of(order), {}, None, BOOKS)
    decision = SorStrategy().on_timer(order, ctx).decision
    assert decision is not None
    return decision


def test_a_decision_is_identified_by_its_allocation_not_when_it_was_made() -> None:
    decision = decide(parent())
    later = [r.model_copy(update={"created_at": r.created_at + 5_000}) for r in decision.requests]
    assert digest(later) == digest(decision.requests)
    assert digest(list(reversed(decision.requests))) == digest(decision.requests)
    moved = [decision.requests[0].model_copy(update={"price": 100.5}), decision.requests[1]]
    assert digest(moved) != digest(decision.requests)


def test_the_writer_records_the_next_step_and_judges_the_others() -> None:
    decision = decide(parent())
    assert judge(parent(), decision) is Verdict.RECORD
    recorded = record(parent(), decision, now=1)
    assert recorded_steps(recorded) == [digest(decision.requests)]
    assert judge(recorded, decision) is Verdict.REPLAY
    other = Decision(0, decision.requests[:1])
    assert judge(recorded, other) is Verdict.CONFLICT
    cancelled = recorded.model_copy(update={"status": OrderStatus.CANCELLED})
    assert judge(cancelled, decision) is Verdict.NOT_WORKING


def test_a_parent_with_children_from_before_decisions_were_recorded() -> None:
    # Attempt 0's child is known (done, 30 of 100), no decision recorded.
    old = {child_order_id(parent(), 0, "a"): [30.0, 100.0, 1.0]}
    order = parent(children=old, filled_amount=30.0, status=OrderStatus.PARTIALLY_FILLED)
    assert attempts_made(order, params_of(order)) == 1
    decision = decide(order)
    assert decision.step == 1
    recorded = record(order, decision, now=1)
    # Step 0 recorded as unknown: no decision for it can ever be applied again.
    assert recorded.metadata[DECISIONS_KEY] == f"{UNKNOWN_STEP},{digest(decision.requests)}"
    assert recorded.children[child_order_id(order, 0, "a")] == [30.0, 100.0, 1.0]
    assert judge(recorded, Decision(0, decision.requests)) is Verdict.CONFLICT
    assert attempts_made(recorded, params_of(recorded)) == 2


def test_a_decision_must_be_about_children_of_its_order() -> None:
    decision = decide(parent())
    check(parent(), decision)
    with pytest.raises(ValueError, match="another account"):
        check(parent(account_id="other"), decision)
    with pytest.raises(ValueError, match="outside"):
        check(parent(), Decision(64, decision.requests))
    with pytest.raises(ValueError, match="without children"):
        check(parent(), Decision(0, ()))
