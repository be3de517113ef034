"""The worker's timer side of the execution algorithms: due TWAP slices, children of
cancelled parents, chase re-quotes. Reads the table only; acts by publishing requests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import structlog

from oms.algos import chase, twap
from oms.orders.params import ALGO_KEY, CANCEL_REASON_KEY
from oms.schemas import (
    CommandType,
    MarketTick,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    ReasonCode,
    now_ms,
)

log = structlog.get_logger(__name__)

_WORKING = frozenset({OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED})
# Children of a parent cancelled this recently are still looked after (ms).
_CANCEL_WINDOW_MS = 120_000
# A re-quote waits for its amend to be applied (new version) or this long (ms).
_REQUOTE_AGAIN_MS = 2_000


@dataclass
class AlgoScheduler:
    """One pass per timer tick over the owned orders that run an algorithm."""

    orders: Callable[[], Iterable[tuple[str, OrderRecord | None]]]
    owns: Callable[[str], bool]
    publish_request: Callable[[OrderRequest], Awaitable[None]]
    latest_tick: Callable[[str], MarketTick | None]
    counters: dict[str, int] = field(default_factory=dict)
    _published: set[tuple[str, int]] = field(default_factory=set)
    _cancelled_children: set[str] = field(default_factory=set)
    _requoted: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    async def run_once(self, now: int | None = None) -> None:
        now = now if now is not None else now_ms()
        followed: set[str] = set()
        for order_id, order in list(self.orders()):
            if order is None or ALGO_KEY not in order.metadata or not self.owns(order_id):
                continue
            if twap.is_twap(order.metadata):
                if order.status in _WORKING:
                    followed.add(order_id)
                    await self._slices(order, now)
                elif order.status is OrderStatus.CANCELLED:
                    if now - order.updated_at <= _CANCEL_WINDOW_MS:
                        followed.add(order_id)
                        await self._cancel_children(order)
            elif chase.is_chase(order.metadata) and order.status in _WORKING:
                followed.add(order_id)
                await self._chase(order, now)
        # Memory only for the orders still followed.
        self._published = {key for key in self._published if key[0] in followed}
        self._requoted = {k: v for k, v in self._requoted.items() if k in followed}

    async def _slices(self, parent: OrderRecord, now: int) -> None:
        for index, amount in twap.due_slices(parent, now):
            key = (parent.order_id, index)
            if key in self._published or twap.child_order_id(parent, index) in parent.children:
                continue
            self._published.add(key)
            self._count("twap_slices")
            # Same request id after any restart: intake sees a duplicate, never a 2nd child.
            await self.publish_request(twap.child_request(parent, index, amount))

    async def _cancel_children(self, parent: OrderRecord) -> None:
        for index in range(twap.params_of(parent).slices):
            child_id = twap.child_order_id(parent, index)
            entry = parent.children.get(child_id)
            sent = (parent.order_id, index) in self._published
            if child_id in self._cancelled_children or (entry is None and not sent):
                continue
            if entry is not None and entry[2]:
                continue  # that child is done
            self._cancelled_children.add(child_id)
            self._count("twap_children_cancelled")
            await self.publish_request(
                OrderRequest(
                    command=CommandType.CANCEL,
                    request_id=f"parent_cancelled.{child_id}",
                    account_id=parent.account_id,
                    order_id=child_id,
                    metadata={CANCEL_REASON_KEY: ReasonCode.LINKED_ORDER_CANCELLED.value},
                )
            )

    async def _chase(self, order: OrderRecord, now: int) -> None:
        tick = self.latest_tick(order.instrument_name)
        if tick is None:
            return
        last = self._requoted.get(order.order_id)
        attempt = 0
        if last is not None and last[0] == order.version:
            if now - last[1] < _REQUOTE_AGAIN_MS:
                return  # our previous amend is not applied yet
            attempt = last[2] + 1  # it was refused or lost: ask again under a new id
        request = chase.requote(order, tick, attempt)
        if request is None or request.request_id in order.seen_request_ids:
            return
        self._requoted[order.order_id] = (order.version, now, attempt)
        self._count("chase_requotes")
        await self.publish_request(request)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1
