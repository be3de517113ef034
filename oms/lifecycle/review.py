"""Commands about an order's lifecycle that intake applies: the OMS's own cancel reasons
and the manual review flow (``needs_review`` -> retry or cancel).

Pure functions over records: intake, the only writer of new commands, stores what they
return.
"""

from __future__ import annotations

from oms.algos import chase, twap
from oms.algos.strategy import ExecutionStrategy
from oms.lifecycle.policy import cancel_reason
from oms.orders.params import ChaseParams, OrderParams, TwapParams, works_through_children
from oms.orders.state_machine import transition
from oms.schemas import (
    InstrumentSpec,
    OrderEvent,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    ReasonCode,
)
from oms.schemas.rejection import Rejection

_REASON_TEXT = {
    ReasonCode.AUTO_CANCELLED: "open longer than auto_cancel_timeout",
    ReasonCode.PARTIAL_FILL_CANCELLED: "rest cancelled after a partial fill (cancel_remaining)",
    ReasonCode.MANUAL_REVIEW: "cancelled by a reviewer",
    ReasonCode.LINKED_ORDER_CANCELLED: "its parent order was cancelled",
    ReasonCode.NO_LIQUIDITY: "routing found no liquidity it could take for the remainder",
    ReasonCode.ROUTE_EXHAUSTED: "routing attempts used up with a remainder",
}


def check_submit(
    request: OrderRequest,
    spec: InstrumentSpec,
    params: OrderParams,
    strategy: ExecutionStrategy | None = None,
) -> Rejection | None:
    """A submit's execution algorithm against its instrument (after the ordinary checks
    passed and its metadata was parsed into ``params``): by its loaded ``strategy`` when
    given, else TWAP's and chase's own checks."""
    if strategy is not None and params.algo is not None:
        try:
            rejection = strategy.check(request, spec, params.algo)
            if rejection is not None and not isinstance(rejection, Rejection):
                raise TypeError(f"check returned {type(rejection).__name__}, not a Rejection")
        except Exception as exc:  # a plugin's bug rejects its order, never stops intake
            return Rejection(
                ReasonCode.INTERNAL_ERROR, f"strategy check failed: {type(exc).__name__}: {exc}"
            )
        return rejection
    if isinstance(params.algo, TwapParams):
        return twap.check_twap(request, spec, params.algo)
    if isinstance(params.algo, ChaseParams):
        return chase.check_chase(request, spec, params.algo)
    return None


def check_retry(order: OrderRecord) -> Rejection | None:
    """Only an order parked for review can be retried."""
    if order.status is not OrderStatus.NEEDS_REVIEW:
        return Rejection(
            ReasonCode.ORDER_NOT_OPEN,
            f"order {order.order_id} is {order.status.value}, not needs_review",
        )
    return None


def check_amend_status(order: OrderRecord) -> Rejection | None:
    """Edits only make sense for an order the exchange has (or is about to have)."""
    if order.status is OrderStatus.NEEDS_REVIEW:
        return Rejection(
            ReasonCode.ORDER_NOT_OPEN,
            f"order {order.order_id} is waiting for review: retry or cancel it first",
        )
    if works_through_children(order.metadata):
        return Rejection(
            ReasonCode.NOT_SUPPORTED, "an execution algorithm's parent cannot be amended"
        )
    return None


def parent_cancelled(order: OrderRecord, request: OrderRequest) -> tuple[OrderRecord, OrderEvent]:
    """An execution algorithm's parent is cancelled by the OMS itself (it is not at the
    exchange): no further slices, its children are cancelled by the worker's timer."""
    reasoned = with_cancel_reason(order, request)
    updated, event = transition(
        reasoned,
        OrderStatus.CANCELLED,
        reason_code=reasoned.reason_code if reasoned is not order else None,
        message=reasoned.reason_message if reasoned is not order else None,
    )
    event.request_id = request.request_id
    return updated, event


def with_cancel_reason(order: OrderRecord, request: OrderRequest) -> OrderRecord:
    """Record the OMS's own reason for a cancel it asked for (the cancelled event says it)."""
    reason = cancel_reason(request.metadata)
    if reason is None:
        return order
    return order.model_copy(
        update={"reason_code": reason, "reason_message": _REASON_TEXT.get(reason)}
    )


def resubmission(order: OrderRecord) -> tuple[OrderRecord, OrderEvent]:
    """``needs_review`` -> ``submitted`` for a reviewer's retry (sent after a label lookup)."""
    updated, event = transition(order, OrderStatus.SUBMITTED)
    # The review reason no longer applies to the order's future.
    updated = updated.model_copy(update={"reason_code": None, "reason_message": None})
    event.order = updated.model_copy()
    event.details["review"] = "retry"
    return updated, event
