"""Where held orders are released: triggers applied to the order table.

Runs in the ``release`` agent on ``order-triggers``, co-partitioned with the requests, so it is
the table's writer for the order's partition (like ``intake`` and ``order_state``). A trigger
acts only while the order is still held; a repeated trigger (sent again after a crash, or by
two engines around a rebalance) finds the order moved on and does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from pydantic import ValidationError

from oms.schemas import OrderEventType, OrderRecord, OrderStatus, ReasonCode, now_ms
from oms.schemas.conditions import OrderTrigger, TriggerKind
from oms.streams.context import AgentContext
from oms.streams.held_orders import HeldOrders
from oms.streams.state_machine import make_event, reannouncement, transition

log = structlog.get_logger(__name__)

_HELD = frozenset({OrderStatus.WAITING, OrderStatus.QUEUED})


@dataclass(kw_only=True)
class ReleaseContext(AgentContext):
    """The release agent also puts released orders into the priority queues."""

    held: HeldOrders


async def handle_trigger(
    ctx: ReleaseContext,
    raw: bytes,
    *,
    key: bytes | None,
    partition: int | None,
    offset: int | None,
    replayed: bool = False,
) -> None:
    """Apply one message of ``order-triggers``."""
    try:
        trigger = OrderTrigger.from_bytes(raw)
    except ValidationError as exc:
        await ctx.reject_raw(
            raw, ReasonCode.SCHEMA_INVALID, str(exc), key=key, partition=partition, offset=offset
        )
        return
    order: OrderRecord | None = ctx.orders.get(trigger.order_id)
    if order is None:
        ctx.count("triggers_unknown_order")
        log.warning("release.unknown_order", order_id=trigger.order_id)
        return
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


async def _release(ctx: ReleaseContext, order: OrderRecord, trigger: OrderTrigger) -> None:
    at = now_ms()
    queued, _ = transition(order, OrderStatus.QUEUED)
    queued.queued_at = at
    queued.triggered_at = at
    ctx.orders[order.order_id] = queued
    details = {
        "reason": trigger.reason,
        "fired_at": trigger.fired_at,
        **trigger.details,
    }
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
