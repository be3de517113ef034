"""Where a request enters: parse, deduplicate, validate, record, hand to the executor.

Runs inside the ``intake`` agent, one message at a time per worker, so the order table is
read and written without races. Nothing here waits for the exchange.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from oms.schemas import (
    CommandType,
    OrderEvent,
    OrderEventType,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    ReasonCode,
)
from oms.streams.context import AgentContext
from oms.streams.execution import OrderExecutor
from oms.streams.state_machine import make_event, reannouncement, transition
from oms.streams.validation import ParseFailure, Rejection, parse_request, validate_submit

if TYPE_CHECKING:
    from oms.risk.runtime import IntakeGuard

log = structlog.get_logger(__name__)

# How many cancel/amend request ids an order remembers for idempotency.
SEEN_REQUESTS_KEPT = 32


@dataclass(kw_only=True)
class IntakeContext(AgentContext):
    """Intake also validates against instruments and accounts and hands orders on."""

    executor: OrderExecutor
    instrument: Callable[[str | None], Any]
    account_known: Callable[[str], bool]
    # Authentication and pre-trade risk (issue 9); None: neither.
    guard: IntakeGuard | None = None


async def handle_request(
    ctx: IntakeContext,
    raw: bytes,
    *,
    key: bytes | None,
    partition: int | None,
    offset: int | None,
    replayed: bool,
    timestamp_ms: int | None = None,
) -> None:
    """Process one message of ``order-requests``.

    ``replayed`` is true for messages a previous owner of the partition may already have
    processed (they were on the topic before this worker took the partition over): those
    are executed only after a label lookup, and never reported as user duplicates.
    """
    parsed = parse_request(raw)
    if isinstance(parsed, ParseFailure):
        await _reject_unparsable(ctx, raw, parsed, key=key, partition=partition, offset=offset)
        return
    ctx.count(f"requests_{parsed.command.value}")
    # Authentication comes before anything else (issue 9).
    if ctx.guard is not None:
        refused = ctx.guard.authenticate(
            parsed, raw, offset=offset, replayed=replayed, timestamp_ms=timestamp_ms
        )
        if refused is not None:
            ctx.count("unauthenticated")
            await ctx.emit(_unauthenticated(parsed, refused))
            return
    if parsed.command is CommandType.SUBMIT:
        await _submit(ctx, parsed, replayed)
    else:
        await _modify(ctx, parsed, replayed)


async def _reject_unparsable(
    ctx: IntakeContext,
    raw: bytes,
    failure: ParseFailure,
    *,
    key: bytes | None,
    partition: int | None,
    offset: int | None,
) -> None:
    await ctx.reject_raw(
        raw, failure.reason_code, failure.message, key=key, partition=partition, offset=offset
    )
    if failure.identity is not None:
        ident = failure.identity
        await ctx.emit(
            OrderEvent(
                event_id=f"{ident['order_id']}:invalid:{ident['request_id']}",
                event_type=OrderEventType.REJECTED,
                order_id=ident["order_id"],
                account_id=ident["account_id"],
                request_id=ident["request_id"],
                status=OrderStatus.REJECTED,
                reason_code=failure.reason_code,
                message=failure.message,
            )
        )


async def _submit(ctx: IntakeContext, request: OrderRequest, replayed: bool) -> None:
    order_id = request.key
    existing: OrderRecord | None = ctx.orders.get(order_id)
    if existing is not None:
        if replayed:
            # Our own earlier processing, maybe cut short before its event went out.
            await ctx.emit(reannouncement(existing))
        else:
            ctx.count("duplicates")
            await ctx.emit(_duplicate_event(existing, request))
        return
    order = _record_from_request(request)
    rejection = validate_submit(
        request, ctx.instrument(request.instrument_name), ctx.account_known(request.account_id)
    )
    if rejection is None and ctx.guard is not None:
        rejection = ctx.guard.check_submit(order, at_release=False)
    if rejection is not None:
        ctx.count("rejected")
        rejected = order.model_copy(
            update={
                "status": OrderStatus.REJECTED,
                "reason_code": rejection.reason_code,
                "reason_message": rejection.message,
            }
        )
        ctx.orders[order_id] = rejected
        await ctx.emit(
            make_event(
                rejected,
                OrderEventType.REJECTED,
                reason_code=rejection.reason_code,
                message=rejection.message,
            )
        )
        return
    # One event for "accepted and sent": its previous_status (pending) says it was accepted.
    submitted, submitted_event = transition(order, OrderStatus.SUBMITTED)
    ctx.orders[order_id] = submitted
    if ctx.guard is not None:
        ctx.guard.note_accepted(submitted)
        submitted_event.details.update(ctx.guard.strategy_details(request))
    await ctx.emit(submitted_event)
    await ctx.executor.submit(submitted, check_label_first=replayed)


def _record_from_request(request: OrderRequest) -> OrderRecord:
    assert request.instrument_name and request.direction and request.amount is not None
    return OrderRecord(
        order_id=request.key,
        request_id=request.request_id,
        account_id=request.account_id,
        instrument_name=request.instrument_name,
        direction=request.direction,
        order_type=request.order_type,
        amount=request.amount,
        price=request.price,
        trigger_price=request.trigger_price,
        time_in_force=request.time_in_force,
        post_only=request.post_only,
        reduce_only=request.reduce_only,
        execute_immediately=request.execute_immediately,
        priority=request.priority,
        conditions=request.conditions,
        metadata=request.metadata,
        status=OrderStatus.PENDING,
        created_at=request.created_at,
        version=1,
    )


def _duplicate_event(order: OrderRecord, request: OrderRequest) -> OrderEvent:
    event = make_event(
        order,
        OrderEventType.DUPLICATE,
        reason_code=ReasonCode.DUPLICATE_REQUEST,
        message=f"request {request.request_id} was already received; not executed again",
        request_id=request.request_id,
        with_snapshot=False,
    )
    # Each duplicate delivery is its own event (acknowledged once per delivery).
    event.event_id = f"{order.order_id}:duplicate:{request.request_id}:{request.created_at}"
    return event


async def _modify(ctx: IntakeContext, request: OrderRequest, replayed: bool) -> None:
    order_id = request.key
    order: OrderRecord | None = ctx.orders.get(order_id)
    rejection: Rejection | None = None
    if order is None:
        rejection = Rejection(ReasonCode.UNKNOWN_ORDER, f"order {order_id} is not known")
    elif order.account_id != request.account_id:
        rejection = Rejection(ReasonCode.NOT_OWNER, f"order {order_id} belongs to another account")
    elif request.request_id in order.seen_request_ids:
        if not replayed:
            ctx.count("duplicates")
            await ctx.emit(_duplicate_event(order, request))
        return
    elif order.status.is_terminal:
        rejection = Rejection(
            ReasonCode.ORDER_NOT_OPEN, f"order {order_id} is {order.status.value}"
        )
    elif request.command is CommandType.AMEND:
        rejection = _check_amend(ctx, order, request)
    if rejection is None and order is not None and ctx.guard is not None:
        rejection = ctx.guard.check_command(order, request)
    if rejection is not None:
        ctx.count("commands_rejected")
        await ctx.emit(_command_rejected(order_id, request, rejection, order))
        return
    assert order is not None
    seen = [*order.seen_request_ids, request.request_id][-SEEN_REQUESTS_KEPT:]
    order = order.model_copy(update={"seen_request_ids": seen})
    ctx.orders[order_id] = order
    if request.command is CommandType.CANCEL:
        await ctx.executor.cancel(order, request.request_id)
    else:
        await ctx.executor.amend(order, request)


def _check_amend(ctx: IntakeContext, order: OrderRecord, request: OrderRequest) -> Rejection | None:
    if request.amount is None and request.price is None:
        return Rejection(ReasonCode.SCHEMA_INVALID, "amend needs a new amount and/or price")
    spec = ctx.instrument(order.instrument_name)
    probe = OrderRequest(
        request_id=request.request_id,
        account_id=order.account_id,
        instrument_name=order.instrument_name,
        amount=request.amount if request.amount is not None else order.amount,
        direction=order.direction,
        order_type=order.order_type,
        price=request.price if request.price is not None else order.price,
    )
    rejection = validate_submit(probe, spec, account_known=True)
    if rejection is not None:
        return rejection
    if probe.amount is not None and probe.amount < order.filled_amount:
        return Rejection(
            ReasonCode.INVALID_AMOUNT,
            f"amount {probe.amount} is below the filled amount {order.filled_amount}",
        )
    return None


def _command_rejected(
    order_id: str, request: OrderRequest, rejection: Rejection, order: OrderRecord | None
) -> OrderEvent:
    return OrderEvent(
        event_id=f"{order_id}:command_rejected:{request.request_id}",
        event_type=OrderEventType.COMMAND_REJECTED,
        order_id=order_id,
        account_id=request.account_id,
        request_id=request.request_id,
        instrument_name=order.instrument_name if order else None,
        status=order.status if order else None,
        reason_code=rejection.reason_code,
        message=rejection.message,
        details={"command": request.command.value},
    )


def _unauthenticated(request: OrderRequest, rejection: Rejection) -> OrderEvent:
    """A request refused by authentication: nothing was read or written for its order, so
    the event carries no order state (a forged request must not touch a real order)."""
    assert request.order_id is not None
    nonce = request.auth.nonce if request.auth else "unsigned"
    return OrderEvent(
        event_id=f"{request.order_id}:unauthenticated:{request.request_id}:{nonce}",
        event_type=OrderEventType.COMMAND_REJECTED,
        order_id=request.order_id,
        account_id=request.account_id,
        request_id=request.request_id,
        reason_code=rejection.reason_code,
        message=rejection.message,
        details={"command": request.command.value, "stage": "authentication"},
    )
