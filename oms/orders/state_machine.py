"""The order state machine: pure functions from (order, exchange report) to (order, events).

Reports about one order can arrive twice and out of order: the reply to ``private/buy`` may
come after the ``user.orders`` notification for the same order (NautilusTrader PR #3436), and a
replay after a crash repeats reports already applied. So a report is applied only when it moves
the order *forward* (higher rank, more filled, newer exchange timestamp); anything else is
``stale`` and produces no event. A report that contradicts a terminal state is ``illegal``: it
is refused and logged, never applied.

Event ids are ``{order_id}:{version}:{event_type}``: re-applying the same change after a crash
yields the same ids, so sinks can drop the copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from oms.orders.reasons import reason_for_exchange_code
from oms.schemas import (
    CommandType,
    ExchangeOrderState,
    ExecutionReport,
    OrderEvent,
    OrderEventType,
    OrderRecord,
    OrderStatus,
    ReasonCode,
    ReportSource,
    now_ms,
)
from oms.schemas.execution import LOST_AT_VENUE, NEEDS_REVIEW, RETRIES_EXHAUSTED

# Fractional amounts (options) are floats on the wire; compare with a tolerance well below
# any instrument's minimum amount.
EPSILON = 1e-9

_RANK = {
    OrderStatus.PENDING: 0,
    # Held by the OMS: not at the exchange yet, so any exchange news moves them forward.
    OrderStatus.WAITING: 0,
    OrderStatus.QUEUED: 0,
    OrderStatus.NEEDS_REVIEW: 1,
    OrderStatus.SUBMITTED: 1,
    OrderStatus.OPEN: 2,
    OrderStatus.PARTIALLY_FILLED: 3,
    OrderStatus.FILLED: 4,
    OrderStatus.CANCELLED: 4,
    OrderStatus.REJECTED: 4,
    OrderStatus.EXPIRED: 4,
}

# What the exchange can report about an order it holds: fills, or its end there.
_WHILE_LIVE = frozenset(
    {
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.FILLED,
        OrderStatus.CANCELLED,
        OrderStatus.EXPIRED,
    }
)
# What can follow an order sent to the exchange (or found there by a reconciliation).
_ONCE_SENT = _WHILE_LIVE | {OrderStatus.OPEN, OrderStatus.REJECTED}

ALLOWED: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: _ONCE_SENT
    | {OrderStatus.WAITING, OrderStatus.QUEUED, OrderStatus.SUBMITTED},
    # A held order ends at the OMS or is released; the exchange does not know it yet.
    OrderStatus.WAITING: frozenset(
        {
            OrderStatus.QUEUED,
            OrderStatus.SUBMITTED,
            OrderStatus.CANCELLED,
            OrderStatus.REJECTED,
            OrderStatus.EXPIRED,
        }
    ),
    OrderStatus.QUEUED: _ONCE_SENT | {OrderStatus.SUBMITTED, OrderStatus.NEEDS_REVIEW},
    OrderStatus.NEEDS_REVIEW: _ONCE_SENT | {OrderStatus.SUBMITTED},
    # The `manual` error strategy parks a submit that failed.
    OrderStatus.SUBMITTED: _ONCE_SENT | {OrderStatus.NEEDS_REVIEW},
    OrderStatus.OPEN: _WHILE_LIVE,
    OrderStatus.PARTIALLY_FILLED: _WHILE_LIVE,
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.EXPIRED: frozenset(),
}

_EVENT_FOR_STATUS = {
    OrderStatus.WAITING: OrderEventType.WAITING,
    OrderStatus.QUEUED: OrderEventType.QUEUED,
    OrderStatus.NEEDS_REVIEW: OrderEventType.NEEDS_REVIEW,
    OrderStatus.SUBMITTED: OrderEventType.SUBMITTED,
    OrderStatus.OPEN: OrderEventType.OPEN,
    OrderStatus.PARTIALLY_FILLED: OrderEventType.PARTIALLY_FILLED,
    OrderStatus.FILLED: OrderEventType.FILLED,
    OrderStatus.CANCELLED: OrderEventType.CANCELLED,
    OrderStatus.REJECTED: OrderEventType.REJECTED,
    OrderStatus.EXPIRED: OrderEventType.EXPIRED,
}

# Statuses that mean "the exchange has acknowledged the order" (latency is measured to these).
EXCHANGE_ACK_EVENTS = frozenset(
    {
        OrderEventType.OPEN,
        OrderEventType.PARTIALLY_FILLED,
        OrderEventType.FILLED,
        OrderEventType.CANCELLED,
        OrderEventType.EXPIRED,
    }
)


class Outcome(StrEnum):
    APPLIED = "applied"
    STALE = "stale"  # older or repeated news: ignored without an event
    ILLEGAL = "illegal"  # contradicts a terminal state: refused and logged


@dataclass
class Transition:
    """Result of applying a report: the new order (or the same one) and the events to emit."""

    order: OrderRecord
    outcome: Outcome
    events: list[OrderEvent] = field(default_factory=list)
    note: str = ""

    @property
    def changed(self) -> bool:
        return self.outcome is Outcome.APPLIED


class IllegalTransition(Exception):
    """Raised by :func:`transition` when a status change is not in :data:`ALLOWED`."""


def rank(status: OrderStatus) -> int:
    return _RANK[status]


def is_allowed(current: OrderStatus, target: OrderStatus) -> bool:
    return target in ALLOWED[current]


def make_event(
    order: OrderRecord,
    event_type: OrderEventType,
    *,
    previous_status: OrderStatus | None = None,
    reason_code: ReasonCode | None = None,
    message: str | None = None,
    request_id: str | None = None,
    details: dict[str, object] | None = None,
    with_snapshot: bool = True,
) -> OrderEvent:
    """An event describing ``order`` as it is now."""
    return OrderEvent(
        event_id=f"{order.order_id}:{order.version}:{event_type.value}",
        event_type=event_type,
        order_id=order.order_id,
        account_id=order.account_id,
        request_id=request_id or order.request_id,
        instrument_name=order.instrument_name,
        status=order.status,
        previous_status=previous_status,
        reason_code=reason_code,
        message=message,
        direction=order.direction,
        amount=order.amount,
        price=order.price,
        filled_amount=order.filled_amount,
        average_price=order.average_price,
        exchange_order_id=order.exchange_order_id,
        version=order.version,
        timestamp=order.updated_at,
        request_created_at=order.created_at,
        details=dict(details or {}),
        order=order.model_copy() if with_snapshot else None,
    )


def reannouncement(order: OrderRecord) -> OrderEvent:
    """The event of the order's current status, sent again.

    A worker that dies between writing the table and producing the event leaves the change
    in the changelog but not on ``order-events``; its successor, replaying the input, finds
    the change already applied. Re-announcing the current status (flagged in ``details``)
    makes sure no status goes unannounced; consumers dedupe by ``event_id``.
    """
    event_type = _EVENT_FOR_STATUS.get(order.status, OrderEventType.ACCEPTED)
    return make_event(order, event_type, details={"reannounced": True})


def transition(
    order: OrderRecord,
    target: OrderStatus,
    *,
    reason_code: ReasonCode | None = None,
    message: str | None = None,
) -> tuple[OrderRecord, OrderEvent]:
    """Move ``order`` to ``target`` (raising :class:`IllegalTransition` if not allowed) and
    return the new record with its event. Used for OMS-driven changes such as submission."""
    if not is_allowed(order.status, target):
        raise IllegalTransition(f"{order.order_id}: {order.status} -> {target} is not allowed")
    previous = order.status
    updated = order.model_copy(
        update={
            "status": target,
            "version": order.version + 1,
            "updated_at": now_ms(),
            "reason_code": reason_code or order.reason_code,
            "reason_message": message or order.reason_message,
        }
    )
    if target is OrderStatus.SUBMITTED:
        updated.submitted_at = updated.updated_at
    event = make_event(
        updated,
        _EVENT_FOR_STATUS[target],
        previous_status=previous,
        reason_code=reason_code,
        message=message,
    )
    return updated, event


def _target_status(order: OrderRecord, report: ExecutionReport) -> OrderStatus | None:
    state = report.order_state
    if state is None:
        return None
    if state in (
        ExchangeOrderState.OPEN,
        ExchangeOrderState.UNTRIGGERED,
        ExchangeOrderState.TRIGGERED,
    ):
        amount = report.amount if report.amount is not None else order.amount
        if report.filled_amount > EPSILON and report.filled_amount < amount - EPSILON:
            return OrderStatus.PARTIALLY_FILLED
        if report.filled_amount >= amount - EPSILON and report.filled_amount > EPSILON:
            return OrderStatus.FILLED
        return OrderStatus.OPEN
    return {
        ExchangeOrderState.FILLED: OrderStatus.FILLED,
        ExchangeOrderState.CANCELLED: OrderStatus.CANCELLED,
        ExchangeOrderState.REJECTED: OrderStatus.REJECTED,
    }[state]


def _reason_for_error(report: ExecutionReport) -> ReasonCode:
    return reason_for_exchange_code(report.error_code)


def apply_report(order: OrderRecord, report: ExecutionReport) -> Transition:
    """Apply one execution report to an order. Never mutates ``order``."""
    result = _apply_report(order, report)
    answered = _answered_command(result.order, report)
    if answered is not None:
        # Nothing sends it again (oms.streams.sweep).
        result.order = result.order.model_copy(update={answered: None})
    return result


def _answered_command(order: OrderRecord, report: ExecutionReport) -> str | None:
    """The field recording a command intake sent to the exchange that ``report`` answers,
    if any. An edit is answered by any report about it: done, refused or changing nothing. A
    cancel only by its refusal: done, the order ends; otherwise it stays pending and is sent
    again."""
    pending = order.amend_pending
    if (
        report.command is CommandType.AMEND
        and pending is not None
        and report.request_id == pending.request_id
    ):
        return "amend_pending"
    if (
        report.command is CommandType.CANCEL
        and report.error_code is not None
        and order.cancel_request_id is not None
        and report.request_id == order.cancel_request_id
    ):
        return "cancel_request_id"
    return None


def _apply_report(order: OrderRecord, report: ExecutionReport) -> Transition:
    if report.source is ReportSource.DISPATCH:
        # The dispatcher released a queued order; the exchange's answer follows.
        if order.status is not OrderStatus.QUEUED:
            return Transition(order, Outcome.STALE, note="dispatch of an order not queued")
        updated, event = transition(order, OrderStatus.SUBMITTED)
        event.details["source"] = ReportSource.DISPATCH.value
        return Transition(updated, Outcome.APPLIED, [event])
    if report.error_code == LOST_AT_VENUE:
        return _lost_at_venue(order, report)
    if report.error_code is not None and report.command in (CommandType.CANCEL, CommandType.AMEND):
        return _command_failed(order, report)
    if report.error_code is not None:
        # A submit the exchange refused: the order never rested.
        if order.status.is_terminal or rank(order.status) >= rank(OrderStatus.OPEN):
            # The exchange has the order already (e.g. our retry was refused): the earlier
            # acknowledgement wins.
            return Transition(order, Outcome.STALE, note="submit error after acknowledgement")
        target_status = OrderStatus.REJECTED
        if report.error_code == NEEDS_REVIEW:
            if order.status is OrderStatus.NEEDS_REVIEW:
                return Transition(order, Outcome.STALE, note="already parked for review")
            target_status = OrderStatus.NEEDS_REVIEW
        if not is_allowed(order.status, target_status):
            return Transition(
                order, Outcome.ILLEGAL, note=f"{order.status} -> {target_status} is not allowed"
            )
        updated, event = transition(
            order,
            target_status,
            reason_code=_reason_for_error(report),
            message=report.error_message,
        )
        event.details["exchange_error_code"] = report.error_code
        if report.error_code in (NEEDS_REVIEW, RETRIES_EXHAUSTED):
            # Needs a human: notification consumers route events flagged as alerts.
            event.details["alert"] = True
        return Transition(updated, Outcome.APPLIED, [event])

    new_trade_ids = [f.trade_id for f in report.fills if f.trade_id not in order.trade_ids]
    fee_delta = sum(f.fee for f in report.fills if f.trade_id in new_trade_ids)
    target = _target_status(order, report)

    if target is None:
        if not new_trade_ids:
            return Transition(order, Outcome.STALE, note="no new fills")
        updated = order.model_copy(
            update={
                "trade_ids": [*order.trade_ids, *new_trade_ids],
                "fee": order.fee + fee_delta,
                "version": order.version + 1,
                "updated_at": now_ms(),
            }
        )
        return Transition(updated, Outcome.APPLIED, note="fills recorded")

    current = order.status
    filled = max(report.filled_amount, 0.0)
    amended = _is_amendment(order, report)
    moves_forward = rank(target) > rank(current) or (
        target is OrderStatus.PARTIALLY_FILLED
        and current is OrderStatus.PARTIALLY_FILLED
        and filled > order.filled_amount + EPSILON
    )
    if current.is_terminal:
        same = target is current and abs(filled - order.filled_amount) <= EPSILON
        if same or rank(target) < rank(current):
            return Transition(order, Outcome.STALE, note="already terminal")
        return Transition(
            order, Outcome.ILLEGAL, note=f"{current} -> {target} refused: order is terminal"
        )
    if filled + EPSILON < order.filled_amount or (not moves_forward and not amended):
        if filled + EPSILON >= order.filled_amount and _rebinds(order, report):
            # Same state, but the exchange now holds the order under another id (it lost
            # its orders and ours was placed again): look-ups by id must use the new one.
            updated = order.model_copy(
                update={
                    "exchange_order_id": report.exchange_order_id,
                    "version": order.version + 1,
                    "updated_at": now_ms(),
                }
            )
            return Transition(updated, Outcome.APPLIED, note="exchange order id changed")
        return Transition(order, Outcome.STALE, note=f"{current} -> {target} is not forward")
    if moves_forward and not is_allowed(current, target):
        return Transition(order, Outcome.ILLEGAL, note=f"{current} -> {target} is not allowed")

    update: dict[str, object] = {
        "filled_amount": max(filled, order.filled_amount),
        "average_price": report.average_price if report.average_price else order.average_price,
        "exchange_order_id": report.exchange_order_id or order.exchange_order_id,
        "exchange_updated_at": max(report.exchange_timestamp, order.exchange_updated_at),
        "trade_ids": [*order.trade_ids, *new_trade_ids],
        "fee": order.fee + fee_delta,
        "version": order.version + 1,
        "updated_at": now_ms(),
    }
    if amended:
        update["amount"] = report.amount
        update["price"] = report.price
    if moves_forward:
        update["status"] = target
    updated = order.model_copy(update=update)
    events: list[OrderEvent] = []
    if amended:
        events.append(
            make_event(
                updated,
                OrderEventType.AMENDED,
                previous_status=current,
                request_id=report.request_id,
                details={"old_amount": order.amount, "old_price": order.price},
            )
        )
    if moves_forward:
        # A cancel the OMS asked for itself (auto-cancel, partial-fill policy, review) says
        # why: intake recorded the reason on the order when it accepted the cancel.
        why = updated.reason_code if target is OrderStatus.CANCELLED else None
        events.append(
            make_event(
                updated,
                _EVENT_FOR_STATUS[target],
                previous_status=current,
                reason_code=why,
                message=updated.reason_message if why else None,
                details={"source": report.source.value},
            )
        )
    return Transition(updated, Outcome.APPLIED, events)


def _rebinds(order: OrderRecord, report: ExecutionReport) -> bool:
    """A label lookup found our order under an exchange id other than the one recorded."""
    return (
        report.source is ReportSource.RECONCILE
        and report.exchange_order_id is not None
        and report.exchange_order_id != order.exchange_order_id
    )


def _lost_at_venue(order: OrderRecord, report: ExecutionReport) -> Transition:
    """The reconciliation gave up on an acknowledged order the exchange does not know
    (``oms.lifecycle.reconcile``): it ends ``cancelled`` with reason ``lost_at_venue``, and a
    ``system_error`` event raises the emergency notification (as the keeper's
    ``position_mismatch`` does). Only applied to the order as the decision saw it: news since
    (another exchange id, more filled, an end) means the exchange knows it after all."""
    if order.status.is_terminal:
        return Transition(order, Outcome.STALE, note="already terminal")
    if order.status not in (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED):
        return Transition(order, Outcome.STALE, note=f"lost report for a {order.status} order")
    if (
        report.exchange_order_id != order.exchange_order_id
        or report.filled_amount + EPSILON < order.filled_amount
    ):
        return Transition(order, Outcome.STALE, note="the order changed since it was missed")
    message = report.error_message or "the exchange does not know this order"
    updated, event = transition(
        order, OrderStatus.CANCELLED, reason_code=ReasonCode.LOST_AT_VENUE, message=message
    )
    event.details.update({"source": report.source.value, "lost_at_venue": True})
    alert = lost_alert(updated, previous_status=order.status)
    assert alert is not None
    return Transition(updated, Outcome.APPLIED, [event, alert])


def lost_alert(order: OrderRecord, previous_status: OrderStatus | None = None) -> OrderEvent | None:
    """The ``system_error`` event of an order resolved as lost at the exchange (None for any
    other order); the same event id when sent again after a replay."""
    if (
        order.status is not OrderStatus.CANCELLED
        or order.reason_code is not ReasonCode.LOST_AT_VENUE
    ):
        return None
    return make_event(
        order,
        OrderEventType.SYSTEM_ERROR,
        previous_status=previous_status,
        reason_code=ReasonCode.LOST_AT_VENUE,
        message=f"order {order.order_id} lost at the exchange, recorded as cancelled: "
        f"{order.reason_message}",
        details={
            "alert_id": f"lost_at_venue:{order.order_id}",
            "severity": "emergency",
            "component": "reconciliation",
            "exchange_order_id": order.exchange_order_id,
            "filled_amount": order.filled_amount,
        },
        with_snapshot=False,
    )


def _is_amendment(order: OrderRecord, report: ExecutionReport) -> bool:
    """An edit changed amount or price, and the report is not older than what we know."""
    if report.amount is None or report.exchange_timestamp < order.exchange_updated_at:
        return False
    if order.status not in (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED, OrderStatus.SUBMITTED):
        return False
    if order.status is OrderStatus.SUBMITTED and report.command is not CommandType.AMEND:
        return False
    price_changed = (
        report.price is not None
        and order.price is not None
        and abs(report.price - order.price) > EPSILON
    )
    return abs(report.amount - order.amount) > EPSILON or price_changed


def _command_failed(order: OrderRecord, report: ExecutionReport) -> Transition:
    assert report.command is not None
    event = make_event(
        order,
        OrderEventType.COMMAND_REJECTED,
        reason_code=_reason_for_error(report),
        message=f"{report.command.value} failed: {report.error_message}",
        request_id=report.request_id,
        details={"command": report.command.value, "exchange_error_code": report.error_code},
    )
    # The event id must not collide with state events of the same version.
    event.event_id = f"{order.order_id}:{order.version}:command_rejected:{report.request_id}"
    return Transition(order, Outcome.APPLIED, [event], note="command failed")
