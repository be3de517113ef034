"""Where held orders are released: triggers applied to the order table.

Runs in the ``release`` agent on ``order-triggers``, co-partitioned with the requests, so it is
the table's writer for the order's partition (like ``intake`` and ``order_state``). A trigger
acts only while the order is still held; a repeated trigger (sent again after a crash, or by
two engines around a rebalance) finds the order moved on and does nothing.

It also records strategies' decisions (``route`` triggers: a routed order's attempt) on the
order before publishing their children, so a decision takes effect once whoever made it
(:mod:`oms.orders.decisions`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from oms.algos import sor, twap
from oms.orders import decisions
from oms.orders.decisions import Verdict
from oms.orders.links import (
    EPSILON,
    announce,
    desired_amount,
    link_request_id,
    parent_ended_unfilled,
    record_fact,
)
from oms.orders.params import works_through_children
from oms.orders.state_machine import make_event, reannouncement, transition
from oms.schemas import (
    CommandType,
    InstrumentSpec,
    OrderEventType,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    ReasonCode,
    now_ms,
)
from oms.schemas.conditions import OrderTrigger, TriggerKind
from oms.streams.context import AgentContext
from oms.streams.execution import OrderExecutor
from oms.streams.held_changes import amend_in_table, cancel_in_table
from oms.streams.held_orders import HeldOrders, Withdrawal
from oms.streams.purge import Retention, apply_purge
from oms.streams.venue_rules import VenueRules, spec_at

if TYPE_CHECKING:
    from oms.conditions.engine import Fired

log = structlog.get_logger(__name__)

_HELD = frozenset({OrderStatus.WAITING, OrderStatus.QUEUED})


@dataclass(kw_only=True)
class ReleaseContext(AgentContext):
    """The release agent also puts released orders into the priority queues, creates linked
    children and applies facts about linked orders."""

    held: HeldOrders
    executor: OrderExecutor
    instrument: Callable[[str | None], InstrumentSpec | None]
    create: Callable[[OrderRequest, dict[str, Any], bool], Awaitable[None]]
    on_fired: Callable[[list[Fired]], Awaitable[None]]
    publish_trigger: Callable[[OrderTrigger], Awaitable[None]]
    # The purge of ended orders (this agent applies it); None: orders are never purged.
    retention: Retention | None = None
    # The configured venues (each one's instruments); None: the one default venue.
    venues: VenueRules | None = None
    # Where a recorded decision's children go (internal commands of the algorithms); None:
    # dropped (counted).
    publish_request: Callable[[OrderRequest], Awaitable[None]] | None = None


async def handle_trigger(
    ctx: ReleaseContext,
    raw: bytes | None,
    *,
    key: bytes | None,
    partition: int | None,
    offset: int | None,
    replayed: bool = False,
) -> None:
    """Apply one message of ``order-triggers``."""
    trigger = await ctx.decode(OrderTrigger, raw, key=key, partition=partition, offset=offset)
    if trigger is None:
        return
    if trigger.kind is TriggerKind.PURGE:
        if ctx.retention is None:
            ctx.count("purge_ignored")
        else:
            apply_purge(ctx, ctx.retention, trigger, partition)
        return
    order: OrderRecord | None = ctx.orders.get(trigger.order_id)
    if trigger.kind is TriggerKind.CREATE:
        if order is None:
            try:
                request = OrderRequest.model_validate(trigger.details["request"])
                links = trigger.details["links"]
                if not isinstance(links, dict):
                    raise TypeError(f"links is a {type(links).__name__}, not an object")
            except (KeyError, TypeError, ValueError) as exc:  # ValidationError included
                # A trigger is only as good as its details: without a request and links
                # there is nothing to create.
                await ctx.reject_raw(
                    raw,
                    ReasonCode.SCHEMA_INVALID,
                    f"worker: create trigger without a valid request and links: {exc!r}"[:500],
                    key=key,
                    partition=partition,
                    offset=offset,
                )
                return
            ctx.count("linked_created")
            await ctx.create(request, links, replayed)
        return
    if order is None:
        _order_gone(ctx, trigger)
        return
    if trigger.kind is TriggerKind.LINK:
        ctx.count("link_facts")
        await _apply_link(ctx, order, trigger, replayed)
        return
    if trigger.kind is TriggerKind.ROUTE:
        try:
            decision = decisions.from_trigger(trigger)
            decisions.check(order, decision)
        except (KeyError, TypeError, ValueError) as exc:  # ValidationError included
            await ctx.reject_raw(
                raw,
                ReasonCode.SCHEMA_INVALID,
                f"worker: route trigger without a valid decision: {exc!r}"[:500],
                key=key,
                partition=partition,
                offset=offset,
            )
            return
        await _apply_decision(ctx, order, decision, replayed)
        return
    await _apply_to_held(ctx, order, trigger, replayed)


async def apply_fired(ctx: ReleaseContext, trigger: OrderTrigger, *, replayed: bool) -> None:
    """Apply a release or expiry of a held order that this process's trigger engine fired,
    without a trip through ``order-triggers``. (The dispatcher's refusals still take that
    topic: applied here they would withdraw from the queues it is walking.)

    The order is read and written before the first ``await``, so a caller that checked just
    before calling that it owns the order's partition still owns it at the write."""
    order: OrderRecord | None = ctx.orders.get(trigger.order_id)
    if order is None:
        _order_gone(ctx, trigger)
        return
    await _apply_to_held(ctx, order, trigger, replayed)


def _order_gone(ctx: ReleaseContext, trigger: OrderTrigger) -> None:
    """A trigger for an order that is not in the table: counted and logged, never invented."""
    if ctx.retention is not None and ctx.retention.finished.get(trigger.order_id) is not None:
        # A fact about an order that ended and left the table: it had nothing left to do.
        ctx.count("triggers_purged_order")
        log.info("release.purged_order", order_id=trigger.order_id, kind=trigger.kind.value)
        return
    ctx.count("triggers_unknown_order")
    log.warning("release.unknown_order", order_id=trigger.order_id)


async def _apply_to_held(
    ctx: ReleaseContext, order: OrderRecord, trigger: OrderTrigger, replayed: bool
) -> None:
    """Release, expire or refuse a held (waiting or queued) order."""
    applicable = order.status is OrderStatus.WAITING or (
        order.status is OrderStatus.QUEUED and trigger.kind is not TriggerKind.RELEASE
    )
    if not applicable:
        ctx.count("triggers_stale")
        if replayed and order.status not in _HELD:
            await ctx.emit(reannouncement(order))
        return
    ctx.count(f"triggers_{trigger.kind.value}")
    if trigger.kind is TriggerKind.RELEASE:
        await _release(ctx, order, trigger)
    elif trigger.kind is TriggerKind.EXPIRE:
        await _finish(ctx, order, trigger, OrderStatus.EXPIRED, ReasonCode.CONDITION_EXPIRED)
    else:
        code = trigger.reason_code or ReasonCode.INTERNAL_ERROR
        await _finish(ctx, order, trigger, OrderStatus.REJECTED, code)


async def _apply_decision(
    ctx: ReleaseContext, order: OrderRecord, decision: decisions.Decision, replayed: bool
) -> None:
    """Record a strategy's decision on its order, then publish its events and children; a
    decision recorded already is published again (it was read again after a crash: intake
    drops every child that went out), another one for a recorded step is ignored."""
    verdict = decisions.judge(order, decision)
    ctx.count(f"decisions_{verdict.value}")
    if verdict is Verdict.NOT_WORKING:
        log.info(
            "release.decision_not_working",
            order_id=order.order_id,
            step=decision.step,
            status=order.status.value,
        )
        return
    if verdict is Verdict.CONFLICT:
        # Two workers decided this step (an old owner's decision was on its way when the new
        # one decided): the first recorded stands, the other never sends a child.
        log.warning(
            "release.decision_conflict",
            order_id=order.order_id,
            step=decision.step,
            recorded=decisions.recorded_steps(order)[decision.step],
            got=decisions.digest(decision.requests),
        )
        return
    if verdict is Verdict.RECORD:
        # Written before anything it decided goes out (nothing awaited in between).
        order = decisions.record(order, decision, now_ms())
        ctx.orders[order.order_id] = order
    if verdict is Verdict.RECORD or replayed:
        # Its events as of the recorded order; sent again when read again after a take-over,
        # since the first emit may have been lost with the worker.
        for event in decision.events:
            await ctx.emit(decisions.stamped(event, order))
    if ctx.publish_request is None:
        ctx.count("decision_requests_dropped")
        log.error("release.decision_requests_dropped", order_id=order.order_id)
        return
    for request in decision.requests:
        await ctx.publish_request(request)


async def _release(ctx: ReleaseContext, order: OrderRecord, trigger: OrderTrigger) -> None:
    at = now_ms()
    queued, _ = transition(order, OrderStatus.QUEUED)
    queued.queued_at = at
    queued.triggered_at = at
    details = {
        "reason": trigger.reason,
        "fired_at": trigger.fired_at,
        **trigger.details,
    }
    triggered = make_event(
        queued,
        OrderEventType.TRIGGERED,
        previous_status=order.status,
        message=trigger.reason,
        details=details,
    )
    if works_through_children(order.metadata):
        # A held TWAP or routed parent is never sent itself: released, it starts working its
        # children (a TWAP's slices timed from now).
        spec = spec_at(ctx.venues, ctx.instrument, order.venue, order.instrument_name)
        if spec is None:
            await _finish(ctx, order, trigger, OrderStatus.REJECTED, ReasonCode.UNKNOWN_INSTRUMENT)
            return
        if sor.is_sor(order.metadata):
            working, started = sor.start_parent(queued)
        else:
            working, started = twap.start_parent(
                queued, twap.params_of(order), spec.min_trade_amount
            )
        ctx.orders[order.order_id] = working
        await ctx.emit(triggered)
        await ctx.emit(started)
        return
    ctx.orders[order.order_id] = queued
    await ctx.emit(triggered)
    ctx.held.enqueue(queued)


async def _finish(
    ctx: ReleaseContext,
    order: OrderRecord,
    trigger: OrderTrigger,
    target: OrderStatus,
    reason_code: ReasonCode,
) -> None:
    ctx.held.withdraw(order)
    updated, event = transition(order, target, reason_code=reason_code, message=trigger.reason)
    event.details.update(trigger.details)
    ctx.orders[order.order_id] = updated
    await ctx.emit(event)
    await announce(ctx.publish_trigger, updated)


async def _apply_link(
    ctx: ReleaseContext, order: OrderRecord, trigger: OrderTrigger, replayed: bool
) -> None:
    """Record a fact about a linked order and resize, release or cancel this one."""
    if order.links is None or order.status.is_terminal:
        return
    links = record_fact(order.links, trigger.details)
    if links == order.links and not replayed:
        return  # nothing new (a fact delivered twice)
    spec = spec_at(ctx.venues, ctx.instrument, order.venue, order.instrument_name)
    step = spec.min_trade_amount if spec is not None else 0.0
    desired = desired_amount(order, links, step)
    request_id = link_request_id(order.order_id, links)
    order = order.model_copy(
        update={"links": links, "version": order.version + 1, "updated_at": now_ms()}
    )
    if parent_ended_unfilled(links) or desired <= order.filled_amount + EPSILON:
        await _cancel_linked(ctx, order, trigger, request_id)
        return
    if links.get("hold"):
        await _release_child(ctx, order, trigger, desired)
        return
    if abs(desired - order.amount) <= EPSILON:
        ctx.orders[order.order_id] = order  # facts recorded, nothing to change
        return
    if order.status in _HELD:
        await amend_in_table(
            ctx,
            order,
            amount=desired,
            price=None,
            message=trigger.reason,
            details={"link": trigger.details},
        )
        return
    ctx.orders[order.order_id] = order
    await ctx.executor.amend(
        order,
        OrderRequest(
            command=CommandType.AMEND,
            request_id=request_id,
            account_id=order.account_id,
            order_id=order.order_id,
            amount=desired,
        ),
    )


async def _cancel_linked(
    ctx: ReleaseContext, order: OrderRecord, trigger: OrderTrigger, request_id: str
) -> None:
    if order.status in _HELD and ctx.held.withdraw(order) is Withdrawal.SAFE:
        await cancel_in_table(
            ctx,
            order,
            ctx.publish_trigger,
            message=trigger.reason,
            reason_code=ReasonCode.LINKED_ORDER_CANCELLED,
            details={"link": trigger.details},
        )
        return
    ctx.orders[order.order_id] = order
    await ctx.executor.cancel(order, request_id)


async def _release_child(
    ctx: ReleaseContext, order: OrderRecord, trigger: OrderTrigger, amount: float
) -> None:
    """The parent filled: the child goes out sized to it (or starts watching its own
    conditions, if it has any)."""
    assert order.links is not None
    links = {**order.links, "hold": False}
    at = now_ms()
    child = order.model_copy(update={"links": links, "amount": amount, "triggered_at": at})
    details: dict[str, object] = {"reason": trigger.reason, "link": trigger.details}
    if child.conditions or child.release_at:
        ctx.orders[child.order_id] = child
        await ctx.emit(
            make_event(child, OrderEventType.TRIGGERED, message=trigger.reason, details=details)
        )
        fired = ctx.held.hold(child, at)
        if fired is not None:
            await ctx.on_fired([fired])
        return
    queued, _ = transition(child, OrderStatus.QUEUED)
    queued.queued_at = at
    ctx.orders[child.order_id] = queued
    await ctx.emit(
        make_event(
            queued,
            OrderEventType.TRIGGERED,
            previous_status=order.status,
            message=trigger.reason,
            details=details,
        )
    )
    ctx.held.enqueue(queued)
