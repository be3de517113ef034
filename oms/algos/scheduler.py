"""The worker's timer side of the execution algorithms: due TWAP slices, children of
cancelled parents, chase re-quotes. Reads the table only; acts by publishing requests.

It never scans the table: every write of an order is noted (:meth:`AlgoScheduler.note`), and
it follows the orders running an algorithm itself: working TWAP parents by the time of their
next slice (a deadline index), recently cancelled parents and working chase orders (a few,
visited every pass: a chase follows the ticks, not a clock)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from oms.algos import chase, twap
from oms.orders.indexes import DeadlineIndex
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
    """One pass per timer tick over the owned orders that run an algorithm and are due."""

    order_of: Callable[[str], OrderRecord | None]
    owns: Callable[[str], bool]
    publish_request: Callable[[OrderRequest], Awaitable[None]]
    latest_tick: Callable[[str], MarketTick | None]
    counters: dict[str, int] = field(default_factory=dict)
    # Working TWAP parents, by when their next slice not yet published is due.
    _slices_due: DeadlineIndex[str] = field(default_factory=DeadlineIndex)
    _working: set[str] = field(default_factory=set)
    # TWAP parents cancelled recently -> when (ms): their children are cancelled.
    _cancelled: dict[str, int] = field(default_factory=dict)
    _chasing: set[str] = field(default_factory=set)
    _published: dict[str, set[int]] = field(default_factory=dict)
    _cancelled_children: dict[str, set[str]] = field(default_factory=dict)
    _requoted: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    # -- what the table tells ------------------------------------------------------------------

    def note(self, order_id: str, order: OrderRecord | None) -> None:
        """An order was written (None: it left the table): follow it while its algorithm
        has something to do."""
        self._slices_due.discard(order_id)
        self._working.discard(order_id)
        self._chasing.discard(order_id)
        if order is None or ALGO_KEY not in order.metadata:
            self._cancelled.pop(order_id, None)
            return
        if twap.is_twap(order.metadata):
            if order.status in _WORKING:
                self._working.add(order_id)
                self._schedule_slices(order)
            elif order.status is OrderStatus.CANCELLED:
                self._cancelled.setdefault(order_id, order.updated_at)
        elif chase.is_chase(order.metadata) and order.status in _WORKING:
            self._chasing.add(order_id)

    def clear(self) -> None:
        """Forget every order (the worker rebuilds from the table after a rebalance); the
        memories of what was published stay until their orders are no longer followed."""
        self._slices_due.clear()
        self._working.clear()
        self._cancelled.clear()
        self._chasing.clear()

    def _schedule_slices(self, parent: OrderRecord) -> None:
        at = twap.next_slice_at(parent, sent=self._published.get(parent.order_id, ()))
        if at is None:
            self._slices_due.discard(parent.order_id)
        else:
            self._slices_due.schedule(parent.order_id, at)

    # -- the timer -----------------------------------------------------------------------------

    async def run_once(self, now: int | None = None) -> None:
        now = now if now is not None else now_ms()
        for order_id in self._slices_due.pop_due(now):
            parent = self.order_of(order_id)
            if (
                parent is None
                or not twap.is_twap(parent.metadata)
                or parent.status not in _WORKING
                or not self.owns(order_id)
            ):
                continue  # a write (or the rebuild) follows it again if need be
            await self._slices(parent, now)
            self._schedule_slices(parent)
        for order_id, cancelled_at in list(self._cancelled.items()):
            parent = self.order_of(order_id)
            if (
                now - cancelled_at > _CANCEL_WINDOW_MS
                or parent is None
                or parent.status is not OrderStatus.CANCELLED
                or not self.owns(order_id)
            ):
                del self._cancelled[order_id]
                continue
            await self._cancel_children(parent)
        for order_id in list(self._chasing):
            order = self.order_of(order_id)
            if order is None or order.status not in _WORKING or not self.owns(order_id):
                self._chasing.discard(order_id)
                continue
            await self._chase(order, now)
        # Memory only for the orders still followed.
        followed = self._working | self._cancelled.keys() | self._chasing
        for memo in (self._published, self._cancelled_children, self._requoted):
            for order_id in [k for k in memo if k not in followed]:
                del memo[order_id]

    @property
    def followed(self) -> int:
        """Orders running an algorithm that are followed."""
        return len(self._working) + len(self._cancelled) + len(self._chasing)

    async def _slices(self, parent: OrderRecord, now: int) -> None:
        published = self._published.setdefault(parent.order_id, set())
        for index, amount in twap.due_slices(parent, now):
            if index in published or twap.child_order_id(parent, index) in parent.children:
                continue
            published.add(index)
            self._count("twap_slices")
            # Same request id after any restart: intake sees a duplicate, never a 2nd child.
            await self.publish_request(twap.child_request(parent, index, amount))

    async def _cancel_children(self, parent: OrderRecord) -> None:
        published = self._published.get(parent.order_id, set())
        cancelled = self._cancelled_children.setdefault(parent.order_id, set())
        for index in range(twap.params_of(parent).slices):
            child_id = twap.child_order_id(parent, index)
            entry = parent.children.get(child_id)
            sent = index in published
            if child_id in cancelled or (entry is None and not sent):
                continue
            if entry is not None and entry[2]:
                continue  # that child is done
            cancelled.add(child_id)
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
