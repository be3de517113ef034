"""Which partition a key lands on: the one rule every co-partitioned topic relies on."""

from __future__ import annotations

from collections.abc import Callable

from aiokafka.partitioner import murmur2


def partition_of(key: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2, as Java clients and aiokafka compute it).

    Every topic the OMS itself writes by order id uses it, so an order's command, reports,
    triggers, events and table entries share one partition number.
    """
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class PartitionOwnership:
    """Which order ids this worker owns, as of the last :meth:`refresh`.

    A snapshot rather than a live answer: passes over many orders (lifecycle checks,
    reconciliation, algorithms) ask once per order, and asking Faust's assignor each time
    would cost more than the pass. Whoever starts such a pass refreshes it first.
    """

    def __init__(self, partitions: int, active: Callable[[], set[int]]) -> None:
        self._partitions = partitions
        self._active = active
        self._owned: frozenset[int] = frozenset()

    @property
    def owned(self) -> frozenset[int]:
        """The partitions owned at the last refresh."""
        return self._owned

    def refresh(self) -> frozenset[int]:
        """Take the partitions owned now."""
        self._owned = frozenset(self._active())
        return self._owned

    def owns(self, order_id: str) -> bool:
        """Was ``order_id``'s partition ours at the last refresh?"""
        return partition_of(order_id, self._partitions) in self._owned
