"""Post-only chase: a ``post_only`` limit order re-quoted at the best bid (buy) or ask
(sell), never beyond its ``chase_limit``.

``metadata``: ``algo = "chase"``, ``chase_limit`` (a price on the instrument's tick:
:class:`~oms.orders.params.ChaseParams`). The
re-quotes are ordinary amend requests (deterministic request id per order version), so
they pass intake's amend guards and the executor's per-order ordering like any other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oms.algos.strategy import Plan, StrategyBase, StrategyContext
from oms.orders.params import ALGO_KEY, CHASE, ChaseParams
from oms.orders.state_machine import EPSILON
from oms.schemas import (
    LIVE_STATUSES,
    CommandType,
    Direction,
    InstrumentSpec,
    MarketTick,
    OrderRecord,
    OrderRequest,
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


@dataclass(frozen=True)
class Offset:
    """Where a chase rests relative to the touch: ``bps`` behind it (negative: inside the
    spread), on the instrument's ``tick_size`` (a buy rounds down, a sell up)."""

    bps: float
    tick_size: float


def target_price(
    order: OrderRecord, tick: MarketTick, offset: Offset | None = None
) -> float | None:
    """Where the order should rest now: the touch on its side (moved by ``offset``), capped at
    the limit. Inside the spread it never crosses the other side, and an order that is the
    touch itself stays (it would otherwise outbid itself on every tick)."""
    limit = ChaseParams.from_metadata(order.metadata).limit  # checked when accepted
    buy = order.direction is Direction.BUY
    touch = tick.best_bid_price if buy else tick.best_ask_price
    if touch is None:
        return None
    target = touch
    if offset is not None and offset.bps != 0 and offset.tick_size > 0:
        if offset.bps < 0 and order.price is not None and abs(order.price - touch) <= EPSILON:
            return order.price
        size = offset.tick_size
        raw = touch * (1 - offset.bps / 10_000) if buy else touch * (1 + offset.bps / 10_000)
        steps = math.floor(raw / size + 1e-9) if buy else math.ceil(raw / size - 1e-9)
        target = round(steps * size, 10)
        far = tick.best_ask_price if buy else tick.best_bid_price
        if far is not None:  # post-only: never at or through the other side
            target = min(target, far - size) if buy else max(target, far + size)
    return min(target, limit) if buy else max(target, limit)


def requote(
    order: OrderRecord, tick: MarketTick, attempt: int = 0, offset: Offset | None = None
) -> OrderRequest | None:
    """The amend that moves a chase order to its target, or None if it is there.
    ``attempt`` numbers re-tries at the same order version (a refused amend)."""
    target = target_price(order, tick, offset)
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


class ChaseStrategy(StrategyBase):
    """Chase as an execution strategy plugin (entry point ``chase``): a working order follows
    the ticks, re-quoted by amends.

    Settings: ``requote_again_ms``, how long an amend may stay unapplied (at the same order
    version) before it is asked again under a new request id (default 2 s); ``offsets``,
    where to rest relative to the touch per instrument (written by ``oms tune apply``)::

        {"BTC-PERPETUAL": {"offset_bps": -2.0, "tick_size": 0.5, "hours": {"13": 0.0}}}

    ``hours`` (UTC hour -> bps) override ``offset_bps`` in those hours; an instrument not
    listed rests at the touch."""

    params_model = ChaseParams

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        self.requote_again_ms = int(self.settings.get("requote_again_ms", REQUOTE_AGAIN_MS))
        self.offsets = _parse_offsets(self.settings.get("offsets", {}))

    def offset(self, instrument: str, now_ms: int) -> Offset | None:
        """The offset of ``instrument`` at ``now_ms`` (its hour's, else its own; None: the
        touch)."""
        entry = self.offsets.get(instrument)
        if entry is None:
            return None
        tick_size, default, hours = entry
        bps = hours.get((now_ms // 3_600_000) % 24, default)
        return Offset(bps, tick_size)

    def check(self, request: OrderRequest, spec: InstrumentSpec, params: Any) -> Rejection | None:
        """A post-only limit order, a limit on the tick on the right side of its price."""
        return check_chase(request, spec, params)

    def on_report(self, order: OrderRecord, ctx: StrategyContext) -> Plan:
        """A working order follows the ticks; any other is left alone."""
        return Plan(follow_ticks=True) if order.status in LIVE_STATUSES else Plan.done()

    def on_tick(self, order: OrderRecord, ctx: StrategyContext) -> Plan:
        """Re-quote at the touch, unless our previous amend of this version is pending."""
        if order.status not in LIVE_STATUSES:
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
        request = requote(order, ctx.tick, attempt, self.offset(order.instrument_name, ctx.now))
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


def _parse_offsets(raw: Any) -> dict[str, tuple[float, float, dict[int, float]]]:
    """``offsets`` settings -> instrument -> (tick size, bps, {hour: bps}); a bad entry fails
    the plugin's load (the registry keeps the previous version and says why)."""
    if not isinstance(raw, Mapping):
        raise ValueError("offsets must be {instrument: {offset_bps, tick_size, hours?}}")
    out = {}
    for instrument, entry in raw.items():
        tick_size = float(entry["tick_size"])
        if tick_size <= 0:
            raise ValueError(f"offsets.{instrument}.tick_size must be > 0")
        hours = {int(h) % 24: float(v) for h, v in dict(entry.get("hours", {})).items()}
        out[str(instrument)] = (tick_size, float(entry["offset_bps"]), hours)
    return out
