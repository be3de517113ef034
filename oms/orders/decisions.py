"""Decisions recorded on their order before what they decided exists (pure, no I/O).

A strategy that works an order through children (a routed order's attempts) decides on the
worker that follows the order, which may lose it a moment later (a restart, a rebalance). If
its children went out first, a new owner could not tell an attempt whose children were
published but not heard of yet from one never made, and would decide the same attempt again
elsewhere: a second child at another venue, an overfill.

So the decision goes first to the order's partition writer, as a :class:`Decision` carried
by an internal ``route`` trigger on ``order-triggers`` keyed by the order
(:func:`to_trigger`). The writer (the ``release`` agent) judges it against the order
(:func:`judge`):

* the order is not working (ended, cancelled, not started): ignored;
* step ``k`` is the next one: recorded (:func:`record`): each child's order id among the
  order's ``children`` as ``[0.0, 0.0, 0.0]`` (live, nothing filled) and the decision's
  :func:`digest` as step ``k`` in ``metadata.algo_decisions``; then its events and its
  children go out;
* step ``k`` is recorded with the same digest: the same decision read again (after a crash):
  its children are published again, a duplicate at intake for every one that went out;
* step ``k`` is recorded with another digest: a second decision for the same step (another
  owner's, decided on other books): ignored.

Any later owner reads the steps recorded on the order, and waits for their children; the
decision numbered ``k`` takes effect once, whoever made it and however often it is read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from oms.orders.params import PARENT_KEY, PARENT_WORKING
from oms.schemas import CommandType, OrderEvent, OrderRecord, OrderRequest
from oms.schemas.conditions import OrderTrigger, TriggerKind

# The order's metadata key listing the digests of its recorded decisions, comma-separated,
# one per step in order (metadata values are scalars). Written by the partition writer only.
DECISIONS_KEY = "algo_decisions"
# A step recorded without its digest: the order had children from before decisions were
# recorded. No decision matches it, so none is applied twice.
UNKNOWN_STEP = "-"
# The most steps one order records (state bounded; a routed order makes at most 20).
MAX_STEPS = 64


@dataclass(frozen=True)
class Decision:
    """One decision of a strategy about its order: step ``step`` (0, 1, ...: the order's
    decisions in order), the child submits it sends and the order events that tell about
    it. Published only once recorded on the order."""

    step: int
    requests: tuple[OrderRequest, ...]
    events: tuple[OrderEvent, ...] = ()


class Verdict(StrEnum):
    """What the partition writer does with a decision (see the module's documentation)."""

    RECORD = "record"
    REPLAY = "replay"
    CONFLICT = "conflict"
    NOT_WORKING = "not_working"


def decision_key(step: int) -> str:
    """How a worker's memory of what it published names the decision of ``step``."""
    return f"decision:{step}"


def child_id(request: OrderRequest) -> str:
    """The order id a child submit becomes (derived from its request id)."""
    assert request.order_id is not None  # a submit's is derived when it is parsed
    return request.order_id


def digest(requests: Sequence[OrderRequest]) -> str:
    """What identifies a decision's allocation: its children's ids, venues, sides, amounts
    and prices (not when they were made), so the same decision read twice matches and
    another one, even over the same venues, does not."""
    rows = sorted(
        [
            r.request_id,
            r.venue,
            r.instrument_name,
            r.direction.value if r.direction is not None else None,
            r.order_type.value,
            r.amount,
            r.price,
            r.time_in_force.value,
            r.reduce_only,
        ]
        for r in requests
    )
    text = json.dumps(rows, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def recorded_steps(order: OrderRecord) -> list[str]:
    """The digests of the decisions recorded on ``order``, by step."""
    value = order.metadata.get(DECISIONS_KEY)
    if not isinstance(value, str) or not value:
        return []
    return value.split(",")


def check(order: OrderRecord, decision: Decision) -> None:
    """Raise ``ValueError`` if ``decision`` cannot be about ``order``: a step out of range,
    no children, a request that is not a submit of a child of this order and account, an
    event about another order."""
    if not 0 <= decision.step < MAX_STEPS:
        raise ValueError(f"step {decision.step} is outside 0..{MAX_STEPS - 1}")
    if not decision.requests:
        raise ValueError("a decision without children needs no record")
    for request in decision.requests:
        if request.command is not CommandType.SUBMIT:
            raise ValueError(f"{request.request_id}: a {request.command.value}, not a submit")
        if request.account_id != order.account_id:
            raise ValueError(f"{request.request_id}: another account's request")
        if request.metadata.get(PARENT_KEY) != order.order_id:
            raise ValueError(f"{request.request_id}: not a child of {order.order_id}")
    for event in decision.events:
        if event.order_id != order.order_id:
            raise ValueError(f"event {event.event_id} is about another order")


def judge(order: OrderRecord, decision: Decision) -> Verdict:
    """What the partition writer does with ``decision`` about ``order`` (as it is now)."""
    if order.status not in PARENT_WORKING:
        return Verdict.NOT_WORKING
    steps = recorded_steps(order)
    if decision.step >= len(steps):
        return Verdict.RECORD
    if steps[decision.step] == digest(decision.requests):
        return Verdict.REPLAY
    return Verdict.CONFLICT


def record(order: OrderRecord, decision: Decision, now: int) -> OrderRecord:
    """``order`` with ``decision`` recorded as its step (a step skipped before it recorded
    as unknown): its children live with nothing filled (a child already known keeps what
    is known of it), its digest in the metadata."""
    steps = recorded_steps(order)
    steps += [UNKNOWN_STEP] * (decision.step - len(steps))
    steps.append(digest(decision.requests))
    children = dict(order.children)
    for request in decision.requests:
        children.setdefault(child_id(request), [0.0, 0.0, 0.0])
    return order.model_copy(
        update={
            "children": children,
            "metadata": {**order.metadata, DECISIONS_KEY: ",".join(steps)},
            "version": order.version + 1,
            "updated_at": now,
        }
    )


def stamped(event: OrderEvent, order: OrderRecord) -> OrderEvent:
    """A decision's event as of the write that recorded it (its id kept): the sinks build
    the order's latest state from the newest event's snapshot."""
    return event.model_copy(
        update={
            "status": order.status,
            "filled_amount": order.filled_amount,
            "average_price": order.average_price,
            "version": order.version,
            "timestamp": order.updated_at,
            "order": order.model_copy(),
        }
    )


def to_trigger(order_id: str, decision: Decision) -> OrderTrigger:
    """The internal ``route`` trigger that asks the writer of ``order_id``'s partition to
    record ``decision`` and then publish it (events without their snapshots: the writer
    stamps them with the order as recorded)."""
    return OrderTrigger(
        order_id=order_id,
        kind=TriggerKind.ROUTE,
        reason=f"decision {decision.step}",
        details={
            "step": decision.step,
            "requests": [r.model_dump(mode="json") for r in decision.requests],
            "events": [
                e.model_copy(update={"order": None}).model_dump(mode="json")
                for e in decision.events
            ],
        },
    )


def from_trigger(trigger: OrderTrigger) -> Decision:
    """The decision a ``route`` trigger carries; raises ``ValueError`` (a pydantic
    ``ValidationError`` included), ``KeyError`` or ``TypeError`` if it carries none."""
    details: dict[str, Any] = trigger.details
    step = details["step"]
    if not isinstance(step, int) or isinstance(step, bool):
        raise TypeError(f"step is a {type(step).__name__}, not an integer")
    requests = details["requests"]
    events = details.get("events", [])
    if not isinstance(requests, list) or not isinstance(events, list):
        raise TypeError("requests and events must be lists")
    return Decision(
        step=step,
        requests=tuple(OrderRequest.model_validate(r) for r in requests),
        events=tuple(OrderEvent.model_validate(e) for e in events),
    )
