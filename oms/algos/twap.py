"""TWAP: a parent order sliced into child orders over time.

The parent (``metadata.algo = "twap"``, with ``twap_duration`` seconds, ``twap_slices`` and
optional ``twap_randomize`` in [0, 1): :class:`~oms.orders.params.TwapParams`) never goes to
the exchange: intake records it as working (``open``). A timer of the worker that owns its
partition publishes slice ``i`` as an ordinary submit once it is due, with the deterministic
request id ``twap.{parent}.{i}``: a restart that publishes it again is a duplicate at intake,
never a second order. Slices split the amount in whole minimum lots, the remainder on the
first slices, so they sum exactly to the parent.

Each child's news is forwarded to the parent's partition as a ``child:`` report; the parent
keeps every child's filled amount and average price and derives its own from their sums.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping
from typing import Any

from oms.algos.strategy import Plan, StrategyBase, StrategyContext
from oms.orders.params import (
    ALGO_KEY,
    CANCEL_REASON_KEY,
    PARENT_KEY,
    PARENT_WORKING,
    TWAP,
    TwapParams,
)
from oms.orders.state_machine import EPSILON, Outcome, Transition, make_event, transition
from oms.schemas import (
    CommandType,
    ExchangeOrderState,
    ExecutionReport,
    InstrumentSpec,
    OrderEvent,
    OrderEventType,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    ReasonCode,
    ReportSource,
    derive_order_id,
    now_ms,
)
from oms.schemas.rejection import Rejection

CHILD_REPORT_PREFIX = "child:"


def is_twap(metadata: Mapping[str, Any]) -> bool:
    """Does this metadata name the TWAP algorithm?"""
    return metadata.get(ALGO_KEY) == TWAP


def params_of(parent: OrderRecord) -> TwapParams:
    """The parameters of a recorded parent (checked when intake accepted it)."""
    return TwapParams.from_metadata(parent.metadata)


def due_at(parent: OrderRecord, params: TwapParams, index: int) -> int:
    """When slice ``index`` is due (ms): evenly spaced, jittered deterministically."""
    step = params.duration_s * 1000 / params.slices
    digest = hashlib.blake2b(f"{parent.order_id}:{index}".encode(), digest_size=8).digest()
    unit = int.from_bytes(digest, "big") / 2**64  # [0, 1), same after any restart
    jitter = (unit - 0.5) * params.randomize * step if index > 0 else 0.0
    # From when it started working (recorded when it did; a parent recorded before that
    # was kept: its release if it was held first, else its creation).
    started = params.start_ms or parent.triggered_at or parent.created_at
    return started + int(index * step + jitter)


def check_twap(request: OrderRequest, spec: InstrumentSpec, params: TwapParams) -> Rejection | None:
    """Can the instrument's lots make the slices? (The parameters themselves were parsed.)"""
    assert request.amount is not None
    lots = round(request.amount / spec.min_trade_amount)
    if lots < params.slices:
        return Rejection(
            ReasonCode.AMOUNT_TOO_SMALL,
            f"amount {request.amount} cannot make {params.slices} slices of at least "
            f"{spec.min_trade_amount}",
        )
    return None


def slice_amounts(amount: float, lot: float, slices: int) -> list[float]:
    """Whole lots per slice, the remainder spread over the first ones: sums to ``amount``."""
    lots = round(amount / lot)
    base, extra = divmod(lots, slices)
    return [_lots(base + (1 if i < extra else 0), lot) for i in range(slices)]


def _lots(count: int, lot: float) -> float:
    value = count * lot
    # Keep lot-sized amounts exact for fractional lots (options): no 0.30000000000000004.
    digits = max(0, -math.floor(math.log10(lot))) + 2 if lot < 1 else 0
    return round(value, digits) if digits else float(value)


def child_request_id(parent_id: str, index: int) -> str:
    return f"twap.{parent_id}.{index}"


def child_request(parent: OrderRecord, index: int, amount: float) -> OrderRequest:
    """Slice ``index`` of a parent as an ordinary submit (deterministic request id)."""
    return OrderRequest(
        command=CommandType.SUBMIT,
        request_id=child_request_id(parent.order_id, index),
        account_id=parent.account_id,
        venue=parent.venue,  # a slice trades where its parent was sent
        instrument_name=parent.instrument_name,
        amount=amount,
        direction=parent.direction,
        order_type=parent.order_type,
        price=parent.price,
        time_in_force=parent.time_in_force,
        post_only=parent.post_only,
        reduce_only=parent.reduce_only,
        priority=parent.priority,
        metadata={PARENT_KEY: parent.order_id, "twap_slice": index},
    )


def child_order_id(parent: OrderRecord, index: int) -> str:
    return derive_order_id(parent.account_id, child_request_id(parent.order_id, index))


def child_update(
    before: OrderRecord, after: OrderRecord, *, force: bool = False
) -> ExecutionReport | None:
    """The report that tells a child's parent about a change of the child, or None.
    ``force``: send the child's current state anyway (a replay may have lost the first)."""
    parent_id = after.metadata.get(PARENT_KEY)
    if not isinstance(parent_id, str):
        return None
    unchanged = (
        before.status is after.status and abs(before.filled_amount - after.filled_amount) < EPSILON
    )
    if unchanged and not force:
        return None
    return ExecutionReport(
        report_id=f"{CHILD_REPORT_PREFIX}{after.order_id}:{after.version}",
        order_id=parent_id,
        account_id=after.account_id,
        source=ReportSource.RECONCILE,
        request_id=after.order_id,  # names the child
        instrument_name=after.instrument_name,
        exchange_order_id=after.exchange_order_id,
        order_state=_exchange_state(after.status),
        amount=after.amount,
        filled_amount=after.filled_amount,
        average_price=after.average_price,
        exchange_timestamp=after.updated_at,
    )


def is_child_report(report: ExecutionReport) -> bool:
    return report.report_id.startswith(CHILD_REPORT_PREFIX)


def apply_child_report(parent: OrderRecord, report: ExecutionReport) -> Transition:
    """Fold one child's news into its parent (a TWAP's or a routed order's): fills are the
    sums of the children's; the parent is filled when they add up to its amount."""
    child_id = report.request_id or ""
    if parent.status.is_terminal:
        return Transition(parent, Outcome.STALE, note="parent is terminal")
    if report.account_id != parent.account_id:
        return Transition(parent, Outcome.STALE, note="a child of another account")
    known = parent.children.get(child_id)
    done = report.order_state not in (None, ExchangeOrderState.OPEN)
    entry = [report.filled_amount, report.average_price or 0.0, 1.0 if done else 0.0]
    if known is not None and known[0] > report.filled_amount + EPSILON:
        return Transition(parent, Outcome.STALE, note="older child news")
    if known == entry:
        return Transition(parent, Outcome.STALE, note="no change")
    children = {**parent.children, child_id: entry}
    filled = sum(c[0] for c in children.values())
    notional = sum(c[0] * c[1] for c in children.values())
    # Every slice of a TWAP ended: what is left is given up. Other parents (a routed order)
    # route a remainder again, and end by their strategy's cancel.
    all_done = (
        is_twap(parent.metadata)
        and len(children) >= params_of(parent).slices
        and all(c[2] for c in children.values())
    )
    if filled >= parent.amount - EPSILON:
        status = OrderStatus.FILLED
    elif all_done:
        status = OrderStatus.CANCELLED  # every slice ended, not all of it filled
    elif filled > EPSILON:
        status = OrderStatus.PARTIALLY_FILLED
    else:
        status = parent.status
    updated = parent.model_copy(
        update={
            "children": children,
            "filled_amount": filled,
            "average_price": notional / filled if filled > EPSILON else None,
            "status": status,
            "version": parent.version + 1,
            "updated_at": now_ms(),
        }
    )
    events = []
    if status is not parent.status or filled > parent.filled_amount + EPSILON:
        events.append(
            make_event(
                updated,
                _EVENTS.get(status, OrderEventType.PARTIALLY_FILLED),
                previous_status=parent.status,
                details={"source": "child", "child_id": child_id, "children": len(children)},
            )
        )
    return Transition(updated, Outcome.APPLIED, events)


_EVENTS = {
    OrderStatus.FILLED: OrderEventType.FILLED,
    OrderStatus.CANCELLED: OrderEventType.CANCELLED,
    OrderStatus.PARTIALLY_FILLED: OrderEventType.PARTIALLY_FILLED,
}


def start_parent(
    order: OrderRecord, params: TwapParams, lot: float
) -> tuple[OrderRecord, OrderEvent]:
    """Intake's side: the parent becomes a working order (never sent to the exchange). Its
    record carries the parameters (also when the OMS chose to slice it) and the instrument's
    lot and the time it started, so slicing needs no catalogue later and counts from then."""
    recorded = params.model_copy(update={"lot": lot, "start_ms": now_ms()}).to_metadata()
    meta = {**order.metadata, ALGO_KEY: TWAP, **recorded}
    working, event = transition(order.model_copy(update={"metadata": meta}), OrderStatus.OPEN)
    event.details["algo"] = TWAP
    return working, event


def due_slices(parent: OrderRecord, now: int) -> list[tuple[int, float]]:
    """Slices of a working parent that are due by ``now`` (index, amount)."""
    params = params_of(parent)
    assert params.lot is not None  # recorded by start_parent
    amounts = slice_amounts(parent.amount, params.lot, params.slices)
    return [(i, amounts[i]) for i in range(params.slices) if due_at(parent, params, i) <= now]


def next_slice_at(parent: OrderRecord, sent: Collection[int] = ()) -> int | None:
    """When the earliest slice of a working parent that is neither ``sent`` (indexes) nor
    among its children is due (ms); None when every slice went out."""
    params = params_of(parent)
    times = [
        due_at(parent, params, i)
        for i in range(params.slices)
        if i not in sent and child_order_id(parent, i) not in parent.children
    ]
    return min(times, default=None)


def _exchange_state(status: OrderStatus) -> ExchangeOrderState:
    return {
        OrderStatus.FILLED: ExchangeOrderState.FILLED,
        OrderStatus.CANCELLED: ExchangeOrderState.CANCELLED,
        OrderStatus.EXPIRED: ExchangeOrderState.CANCELLED,
        OrderStatus.REJECTED: ExchangeOrderState.REJECTED,
    }.get(status, ExchangeOrderState.OPEN)


# Children of a parent cancelled this recently are still looked after (ms).
CANCEL_WINDOW_MS = 120_000


class TwapStrategy(StrategyBase):
    """TWAP as an execution strategy plugin (entry point ``twap``).

    Settings: ``cancel_window_ms``, how long after its parent was cancelled its children
    are still cancelled (default 120 s); ``max_slice_amount``, instrument -> the largest slice
    a parent may make (written by ``oms tune apply`` from the slippage history): a parent
    whose slices would be larger is refused, naming the slice count that fits."""

    params_model = TwapParams

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        self.cancel_window_ms = int(self.settings.get("cancel_window_ms", CANCEL_WINDOW_MS))
        self.max_slice_amount = {
            str(name): float(amount)
            for name, amount in dict(self.settings.get("max_slice_amount", {})).items()
        }

    def check(self, request: OrderRequest, spec: InstrumentSpec, params: Any) -> Rejection | None:
        """Can the instrument's lots make the slices, each within the slice limit?"""
        rejection = check_twap(request, spec, params)
        if rejection is not None:
            return rejection
        limit = self.max_slice_amount.get(request.instrument_name or "")
        if limit is None or request.amount is None:
            return None
        largest = max(slice_amounts(request.amount, spec.min_trade_amount, params.slices))
        if largest <= limit + EPSILON:
            return None
        needed = math.ceil(request.amount / limit - EPSILON)
        return Rejection(
            ReasonCode.INVALID_AMOUNT,
            f"twap slices of {largest:g} exceed the slice limit {limit:g} for "
            f"{request.instrument_name} (tuned for slippage): use at least {needed} slices",
        )

    def on_report(self, order: OrderRecord, ctx: StrategyContext) -> Plan:
        """A working parent waits for its next slice; a cancelled one has its children
        cancelled (on the timer, at once); any other is left alone."""
        if order.status in PARENT_WORKING:
            return Plan(wake_at=next_slice_at(order, sent=_sent_indexes(order, ctx.sent)))
        if order.status is OrderStatus.CANCELLED:
            return Plan(wake_at=order.updated_at)
        return Plan.done()

    def on_timer(self, order: OrderRecord, ctx: StrategyContext) -> Plan:
        """Publish the due slices of a working parent; cancel the live children of a
        cancelled one (for a while after it was cancelled)."""
        if order.status in PARENT_WORKING:
            sent = _sent_indexes(order, ctx.sent)
            due = [
                (index, amount)
                for index, amount in due_slices(order, ctx.now)
                if index not in sent and child_order_id(order, index) not in order.children
            ]
            sent |= {index for index, _ in due}
            return Plan(
                requests=tuple(child_request(order, index, amount) for index, amount in due),
                wake_at=next_slice_at(order, sent=sent),
            )
        if order.status is OrderStatus.CANCELLED:
            if ctx.now - order.updated_at > self.cancel_window_ms:
                return Plan.done()
            return Plan(
                requests=tuple(children_cancels(order, ctx.sent)),
                wake_at=order.updated_at + self.cancel_window_ms + 1,
            )
        return Plan.done()


def _sent_indexes(parent: OrderRecord, sent: Mapping[str, int]) -> set[int]:
    return {
        i for i in range(params_of(parent).slices) if child_request_id(parent.order_id, i) in sent
    }


def children_cancels(parent: OrderRecord, sent: Mapping[str, int]) -> list[OrderRequest]:
    """Cancels of a cancelled parent's children that are live or were published (``sent``:
    request ids published for the parent), not yet done."""
    out = []
    for index in range(params_of(parent).slices):
        child_id = child_order_id(parent, index)
        entry = parent.children.get(child_id)
        if entry is None and child_request_id(parent.order_id, index) not in sent:
            continue
        if entry is not None and entry[2]:
            continue  # that child is done
        out.append(child_cancel(parent, child_id))
    return out


def child_cancel(parent: OrderRecord, child_id: str) -> OrderRequest:
    """The cancel of one child of a cancelled parent (one request id per child: sent again,
    it is a duplicate at intake)."""
    return OrderRequest(
        command=CommandType.CANCEL,
        request_id=f"parent_cancelled.{child_id}",
        account_id=parent.account_id,
        order_id=child_id,
        metadata={CANCEL_REASON_KEY: ReasonCode.LINKED_ORDER_CANCELLED.value},
    )
