"""Where the worker's own news about an order is applied: in place when the worker owns the
order, through the order's topic otherwise.

The answers of the worker's commands (execution reports) and what its trigger engine fires
(triggers) concern orders whose partition the worker usually owns: it sent the command, or
it holds the waiting order. Applying them where they arrive saves the wait for a fetch and
one Kafka round trip of latency each. When the worker does not own the partition (it moved
in a rebalance while the command ran) or is rebalancing, the record goes through its topic
to whoever owns it, as it always could.

Records that must also be on the topic are published first and applied once the broker has
them (``publish_durably``). The worker's reports all are: the position keeper and the history
read their fills, and a report read again after a crash re-announces its order's state, so
an event lost with the worker is sent again.

The order tables write to their key's changelog partition
(:class:`~oms.kafka.tables.KeyPartitionedTable`), so a write from outside an agent lands where
the agent's would have.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

import structlog

from oms.kafka.partitioning import partition_of

log = structlog.get_logger(__name__)


class AboutAnOrder(Protocol):
    """A record keyed by the order it concerns."""

    @property
    def order_id(self) -> str: ...


R = TypeVar("R", bound=AboutAnOrder)


class InPlaceRoute(Generic[R]):
    """Applies a record in this process when this worker owns its order's partition and is
    settled (no rebalance, no table recovery); leaves it to its topic otherwise.

    ``apply`` must read and write the order before its first ``await``: the ownership check
    made just before the call then still holds at the write. With ``publish_durably`` (which
    returns once the broker has the record), every record is also published, first, and
    applied only if the partition is still ours.

    A record whose application fails is logged and left to the topic (published now, unless
    it was already): the owner's agent applies it there, and what was applied of it already
    is applied again without effect. The caller (a command's task, the trigger loop fed by
    the tick feed) never sees the failure, and nothing it decided is stranded.
    """

    def __init__(
        self,
        *,
        apply: Callable[[R], Awaitable[None]],
        publish: Callable[[R], Awaitable[None]],
        partitions: int,
        owned_partitions: Callable[[], frozenset[int]],
        ready: Callable[[], bool],
        publish_durably: Callable[[R], Awaitable[None]] | None = None,
    ) -> None:
        self._apply = apply
        self._publish = publish
        self._publish_durably = publish_durably
        self._partitions = partitions
        self._owned_partitions = owned_partitions
        self._ready = ready
        self.applied = 0
        # Records left to their topic's agent (the partition is, or went, elsewhere).
        self.through_topic = 0
        # Applications that raised (the record then went through its topic).
        self.failed = 0

    def _owned(self, order_id: str) -> bool:
        return partition_of(order_id, self._partitions) in self._owned_partitions() and (
            self._ready()
        )

    async def __call__(self, record: R) -> None:
        if not self._owned(record.order_id):
            self.through_topic += 1
            await self._publish(record)
            return
        if self._publish_durably is not None:
            await self._publish_durably(record)
            # The partition may have moved while the broker answered: its new owner then
            # applies the record from the topic.
            if not self._owned(record.order_id):
                self.through_topic += 1
                return
        self.applied += 1
        try:
            # Nothing awaited between the ownership check and the write (see apply).
            await self._apply(record)
        except Exception:
            self.failed += 1
            log.exception("in_place.apply_failed", order_id=record.order_id)
            if self._publish_durably is None:
                await self._publish(record)
