"""Changes the agents make to orders the OMS still holds (never sent): amended or cancelled
in the table alone, with their event, and announced to linked orders."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from oms.orders.links import announce
from oms.orders.state_machine import make_event, transition
from oms.schemas import OrderEventType, OrderRecord, OrderStatus, ReasonCode, now_ms
from oms.schemas.conditions import OrderTrigger
from oms.streams.context import AgentContext


async def amend_in_table(
    ctx: AgentContext,
    order: OrderRecord,
    *,
    amount: float | None,
    price: float | None,
    request_id: str | None = None,
    message: str | None = None,
    details: dict[str, Any] | None = None,
) -> OrderRecord:
    """New amount and/or price of a held order, with its ``amended`` event."""
    amended = order.model_copy(
        update={
            "amount": amount if amount is not None else order.amount,
            "price": price if price is not None else order.price,
            "version": order.version + 1,
            "updated_at": now_ms(),
        }
    )
    ctx.orders[order.order_id] = amended
    await ctx.emit(
        make_event(
            amended,
            OrderEventType.AMENDED,
            request_id=request_id,
            message=message,
            details={"old_amount": order.amount, "old_price": order.price, **(details or {})},
        )
    )
    return amended


async def cancel_in_table(
    ctx: AgentContext,
    order: OrderRecord,
    publish_trigger: Callable[[OrderTrigger], Awaitable[None]],
    *,
    message: str,
    reason_code: ReasonCode | None = None,
    request_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Cancel a held order (already withdrawn from the indexes) with its event; its linked
    orders learn that it ended."""
    cancelled, event = transition(
        order, OrderStatus.CANCELLED, reason_code=reason_code, message=message
    )
    if request_id is not None:
        event.request_id = request_id
    event.details.update(details or {})
    ctx.orders[order.order_id] = cancelled
    await ctx.emit(event)
    await announce(publish_trigger, cancelled)
