"""Post-only chase: a ``post_only`` limit order re-quoted at the best bid (buy) or ask
(sell), never beyond its ``chase_limit``.

``metadata``: ``algo = "chase"``, ``chase_limit`` (a price on the instrument's tick:
:class:`~oms.orders.params.ChaseParams`). The
re-quotes are ordinary amend requests (deterministic request id per order version), so
they pass intake's amend guards and the executor's per-order ordering like any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oms.algos.strategy import Plan, StrategyBase, StrategyContext
from oms.orders.params import ALGO_KEY, CHASE, ChaseParams
from oms.orders.state_machine import EPSILON
from oms.schemas import (
    CommandType,
    Direction,
    InstrumentSpec,
    MarketTick,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    OrderType,
    ReasonCode,
)
from oms.schemas.rejection import Rejection


def is_chase(metadata: Mapping[str, Any]) -> bool:
    """Does this metadata name the chase algorithm?"""
    return metadata.get(ALGO_KEY) == CHASE


def check_chase(
    request: OrderRequest, spec: InstrumentSpec, params: ChaseParams
) -> Rejection | None:
    """A chase needs a post-only limit order and a limit on the tick, on the right side of
    its price."""
    if request.order_type is not OrderType.LIMIT or not request.post_only:
        return Rejection(ReasonCode.SCHEMA_INVALID, "chase needs a post_only limit order")
    assert request.price is not None
    limit = params.limit
    ticks = limit / spec.tick_size
    if abs(ticks - round(ticks)) > 1e-6:
        return Rejection(
            ReasonCode.PRICE_OFF_TICK, f"chase_limit {limit} is not on the tick {spec.tick_size}"
        )
    buy = request.direction is Direction.BUY
    if (buy and limit < request.price) or (not buy and limit > request.price):
        return Rejection(
            ReasonCode.INVALID_PRICE,
            "chase_limit must be at or beyond the price in the chase direction",
        )
    return None


def target_price(order: OrderRecord, tick: MarketTick) -> float | None:
    """Where the order should rest now: the touch on its side, capped at the limit."""
    limit = ChaseParams.from_metadata(order.metadata).limit  # checked when accepted
    if order.direction is Direction.BUY:
        touch = tick.best_bid_price
        return None if touch is None else min(touch, limit)
    touch = tick.best_ask_price
    return None if touch is None else max(touch, limit)


def requote(order: OrderRecord, tick: MarketTick, attempt: int = 0) -> OrderRequest | None:
    """The amend that moves a chase order to its target, or None if it is there.
    ``attempt`` numbers re-tries at the same order version (a refused amend)."""
    target = target_price(order, tick)
    if target is None or order.price is None or abs(target - order.price) <= EPSILON:
        return None
    return OrderRequest(
        command=CommandType.AMEND,
        request_id=f"chase.{order.order_id}.{order.version}.{attempt}",
        account_id=order.account_id,
        order_id=order.order_id,
        price=target,
    )


# A re-quote waits for its amend to be applied (new version) or this long (ms).
REQUOTE_AGAIN_MS = 2_000
_WORKING = frozenset({OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED})


class ChaseStrategy(StrategyBase):
    """Chase as an execution strategy plugin (entry point ``chase``): a working order follows
    the ticks, re-quoted by amends.

    Settings: ``requote_again_ms``, how long an amend may stay unapplied (at the same order
    version) before it is asked again under a new request id (default 2 s)."""

    params_model = ChaseParams

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        self.requote_again_ms = int(self.settings.get("requote_again_ms", REQUOTE_AGAIN_MS))

    def check(self, request: OrderRequest, spec: InstrumentSpec, params: Any) -> Rejection | None:
        """A post-only limit order, a limit on the tick on the right side of its price."""
        return check_chase(request, spec, params)

    def on_report(self, order: OrderRecord, ctx: StrategyContext) -> Plan:
        """A working order follows the ticks; any other is left alone."""
        return Plan(follow_ticks=True) if order.status in _WORKING else Plan.done()

    def on_tick(self, order: OrderRecord, ctx: StrategyContext) -> Plan:
        """Re-quote at the touch, unless our previous amend of this version is pending."""
        if order.status not in _WORKING:
            return Plan.done()
        keep = Plan(follow_ticks=True)
        if ctx.tick is None:
            return keep
        attempt = 0
        last = _last_attempt(order, ctx.sent)
        if last is not None:
            if ctx.now - last[1] < self.requote_again_ms:
                return keep  # our previous amend is not applied yet
            attempt = last[0] + 1  # it was refused or lost: ask again under a new id
        request = requote(order, ctx.tick, attempt)
        if request is None or request.request_id in order.seen_request_ids:
            return keep
        return Plan(requests=(request,), follow_ticks=True)


def _last_attempt(order: OrderRecord, sent: Mapping[str, int]) -> tuple[int, int] | None:
    """The highest re-quote attempt published at the order's current version, and when."""
    prefix = f"chase.{order.order_id}.{order.version}."
    attempts = [
        (int(request_id[len(prefix) :]), at)
        for request_id, at in sent.items()
        if request_id.startswith(prefix) and request_id[len(prefix) :].isdigit()
    ]
    return max(attempts, default=None)
