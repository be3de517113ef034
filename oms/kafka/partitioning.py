"""Which partition a key lands on: the one rule every co-partitioned topic relies on."""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_of(key: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2, as Java clients and aiokafka compute it).

    Every topic the OMS itself writes by order id uses it, so an order's command, reports,
    triggers, events and table entries share one partition number.
    """
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
