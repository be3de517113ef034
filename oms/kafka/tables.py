"""Faust tables keyed by order id whose changelog partition comes from the key itself."""

from __future__ import annotations

from typing import Any

import faust

from oms.kafka.partitioning import partition_of


class KeyPartitionedTable(faust.Table):
    """A table whose writes go to the changelog partition of their key (Kafka's default
    partitioner), not to the partition of the message being processed.

    Faust's own rule needs a current stream event and refuses writes from anywhere else. The
    worker's tables are keyed by order id and every topic it reads by order id is
    co-partitioned with them, so inside an agent both rules give the same partition; this one
    also lets a command running in the background record the exchange's answer on its order
    (it has no stream event), and it never depends on which topic an agent happened to read.
    """

    def partition_for_key(self, key: Any) -> int | None:
        """The partition of ``key`` (a str order id) among the table's partitions."""
        partitions = self.partitions or self.app.conf.topic_partitions
        return partition_of(str(key), partitions)
