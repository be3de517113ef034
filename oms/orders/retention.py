"""How long an ended order stays in a worker's table, and what is remembered of it after.

An order that ended (filled, cancelled, rejected, expired) leaves the worker's ``orders``
table ``terminal_retention_s`` after its last change: a tombstone on the table's changelog,
so a restarted worker does not restore it either. ClickHouse keeps its history. In its place
a :class:`Finished` marker (account, final status, when it ended: a few hundred bytes instead
of the full record) stays in the ``finished-orders`` table, so that for
``dedupe_retention_s`` after the order ended

* a submit with the same ``request_id`` (same order id: it is derived from the account and
  the request id) is still refused as a duplicate, never executed again;
* a cancel or amend of it is refused as ``order_not_open``, not ``unknown_order``;
* a late report about it is recognised (counted, never written back into the table).

After that the marker goes too. A submit created before the window (``created_at``) is then
refused as ``stale_request``: its original may have been forgotten. So a re-sent copy of a
request is refused whatever its age; only a new request (created within the window) that
reuses an old ``request_id`` becomes a new order.

Pure decisions and bookkeeping over dict-like tables: the stream agents apply them
(:mod:`oms.streams.purge`).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from oms.orders.indexes import DeadlineIndex
from oms.schemas import OrderRecord, OrderStatus
from oms.settings import WorkerSettings

# A purge asked for but not applied (its trigger lost, the partition moved) is asked again.
PURGE_AGAIN_MS = 60_000


@dataclass(frozen=True)
class RetentionPolicy:
    """The two retention periods (ms)."""

    keep_ms: int  # ended orders stay in the table this long after their last change
    dedupe_ms: int  # markers stay this long after the order ended

    @classmethod
    def from_settings(cls, worker: WorkerSettings) -> RetentionPolicy:
        return cls(
            keep_ms=int(worker.terminal_retention_s * 1000),
            dedupe_ms=int(worker.dedupe_retention_s * 1000),
        )

    def purge_at(self, order: OrderRecord) -> int | None:
        """When the order leaves the table (None while it has not ended)."""
        if not order.status.is_terminal:
            return None
        return order.updated_at + self.keep_ms

    def purge_due(self, order: OrderRecord, now: int) -> bool:
        at = self.purge_at(order)
        return at is not None and at <= now

    def forget_at(self, marker: Finished) -> int:
        """When the marker of an order that left the table is forgotten."""
        return marker.ended_at + self.dedupe_ms

    def forget_due(self, marker: Finished, now: int) -> bool:
        return self.forget_at(marker) <= now

    def too_old(self, created_at: int, now: int) -> bool:
        """Was a request created so long ago that the marker of its order, had it been
        executed, may be forgotten already?"""
        return created_at + self.dedupe_ms <= now


@dataclass(frozen=True, slots=True)
class Finished:
    """What is remembered of an order that left the table."""

    account_id: str
    status: OrderStatus
    ended_at: int  # ms: its last change

    @classmethod
    def of(cls, order: OrderRecord) -> Finished:
        return cls(sys.intern(order.account_id), order.status, order.updated_at)

    def to_value(self) -> list[Any]:
        """The table value (JSON on the changelog): ``[account, status, ended_at]``."""
        return [self.account_id, self.status.value, self.ended_at]

    @classmethod
    def from_value(cls, value: Any) -> Finished | None:
        """The marker in a table value, or None if it is not one."""
        try:
            account, status, ended_at = value
            # Shared strings: millions of markers name a few accounts and statuses.
            return cls(sys.intern(str(account)), OrderStatus(status), int(ended_at))
        except (TypeError, ValueError):
            return None


class FinishedOrders:
    """The markers, over a dict-like table ``{order_id: [account, status, ended_at]}`` (the
    changelog-backed ``finished-orders`` table in a worker, a dict in tests), in the order
    they were written. ``on_change`` is told of every marker written or forgotten."""

    def __init__(
        self,
        table: MutableMapping[str, Any],
        on_change: Callable[[str, Finished | None], None] | None = None,
    ) -> None:
        self._table = table
        self._on_change = on_change

    def __len__(self) -> int:
        return len(self._table)

    def get(self, order_id: str) -> Finished | None:
        value = self._table.get(order_id)
        return None if value is None else Finished.from_value(value)

    def remember(self, order_id: str, marker: Finished) -> None:
        self._table[order_id] = marker.to_value()
        if self._on_change is not None:
            self._on_change(order_id, marker)

    def forget(self, order_id: str) -> bool:
        if order_id not in self._table:
            return False
        del self._table[order_id]
        if self._on_change is not None:
            self._on_change(order_id, None)
        return True

    def items(self) -> Iterator[tuple[str, Finished | None]]:
        """Every marker, oldest written first (a value that is no marker: None)."""
        for order_id, value in list(self._table.items()):
            yield order_id, Finished.from_value(value)


class PurgeBatch(BaseModel):
    """What one purge trigger asks the partition's writer to do (its ``details``): orders to
    take out of the table, markers to forget. Each is checked again before it is done."""

    orders: list[str] = []
    markers: list[str] = []

    @classmethod
    def from_details(cls, details: dict[str, Any]) -> PurgeBatch | None:
        try:
            return cls.model_validate(details)
        except ValidationError:
            return None


class PurgeSchedule:
    """When the ended orders of the owned partitions leave the table, and when their
    markers are forgotten: an :class:`~oms.orders.indexes.OrderObserver` of the orders
    table (a deadline per ended order) and the ``on_change`` of :class:`FinishedOrders`.

    Markers are forgotten in the order they were written, which is the order their orders
    left the table, so a queue of their ids is enough (a few bytes each: there can be
    millions); the deadline is read from the marker when it reaches the front. A marker
    written a little out of order (purges of several partitions in one round) waits for the
    ones before it, at most a purge round.
    """

    def __init__(self, policy: RetentionPolicy) -> None:
        self.policy = policy
        self._ended: DeadlineIndex[str] = DeadlineIndex()
        self._written: deque[str] = deque()

    # -- observers ---------------------------------------------------------------------------

    def note(self, order_id: str, order: OrderRecord | None) -> None:
        at = self.policy.purge_at(order) if order is not None else None
        if at is None:
            self._ended.discard(order_id)
        else:
            self._ended.schedule(order_id, at)

    def note_marker(self, order_id: str, marker: Finished | None) -> None:
        if marker is not None:
            self._written.append(order_id)
        # A forgotten marker's id is dropped when it reaches the front.

    def clear(self) -> None:
        self._ended.clear()
        self._written.clear()

    # -- the timer ------------------------------------------------------------------------------

    @property
    def ended(self) -> int:
        """Ended orders waiting to leave the table."""
        return len(self._ended)

    @property
    def remembered(self) -> int:
        """Markers queued to be forgotten (forgotten ones not yet dropped included)."""
        return len(self._written)

    def due(
        self, now: int, limit: int, *, owns: Callable[[str], bool], markers: FinishedOrders
    ) -> PurgeBatch:
        """Ended orders and markers of owned partitions due by ``now`` (at most ``limit`` of
        each). An order is asked again after :data:`PURGE_AGAIN_MS` unless its purge lands
        before; entries of partitions no longer owned are dropped (their owner follows
        them)."""
        orders = [order_id for order_id in self._ended.pop_due(now, limit) if owns(order_id)]
        for order_id in orders:
            self._ended.schedule(order_id, now + PURGE_AGAIN_MS)
        forget: list[str] = []
        written = self._written
        while written and len(forget) < limit:
            marker = markers.get(written[0])
            if marker is not None and not self.policy.forget_due(marker, now):
                break
            order_id = written.popleft()
            if marker is not None and owns(order_id):
                forget.append(order_id)
        return PurgeBatch(orders=orders, markers=forget)
