"""Retention of the keeper's seen-trades table (trade_id -> the record the trade produced).

The table is the dedupe store of every fill, so without a bound it grows forever, in memory
and in its changelog. Entries whose fill is older than ``seen_trades_retention_s`` are deleted;
each delete is a tombstone in the (compacted) changelog, so compaction drops the trade there
too. Faust lets a table be changed only inside an event of the agent that owns the changelog
partition, so pruning is a command on the keeper's internal topic: every keeper's timer sends
one ``prune`` command to each partition it owns, and the apply agent, in that partition's
event, deletes the expired entries the partition wrote. Those are the trades of positions
whose key (``account|instrument``) hashes to that partition: fills are routed by position key,
and a table write goes to the changelog partition of the current event.

The ledger refuses fills older than the retention (``stale_fill``), so pruning an entry never
lets its trade be counted twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, MutableMapping
from functools import lru_cache
from typing import Any

from oms.kafka.partitioning import partition_of
from oms.schemas import PositionRecord, now_ms

PRUNE = "prune"


def prune_command(cutoff_ms: int) -> dict[str, Any]:
    """The command asking a partition to drop seen trades whose fill is older than
    ``cutoff_ms``."""
    return {"type": PRUNE, "cutoff": cutoff_ms}


@lru_cache(maxsize=65_536)
def _position_partition(key: str, partitions: int) -> int:
    # Few position keys, many trades each: murmur2 in Python once per key, not per trade.
    return partition_of(key, partitions)


def expired_by_partition(
    items: Iterable[tuple[str, PositionRecord | None]], cutoff_ms: int, partitions: int
) -> dict[int, list[str]]:
    """Trade ids whose record is older than ``cutoff_ms``, by the partition that wrote them."""
    out: dict[int, list[str]] = defaultdict(list)
    for trade_id, record in items:
        if record is not None and record.timestamp < cutoff_ms:
            out[_position_partition(record.key, partitions)].append(trade_id)
    return out


class SeenTradesPruner:
    """Deletes expired entries of one partition at a time from the seen-trades mapping.

    One scan per prune round serves every partition of the round: the commands of a round
    carry the same cutoff, so the expired trades are grouped by partition once (a scan walks
    the whole table) and each partition's command deletes its group.
    """

    def __init__(
        self,
        seen: MutableMapping[str, PositionRecord | None],
        scan: Callable[[], Iterable[tuple[str, PositionRecord | None]]],
        partitions: int,
        retention_ms: int,
    ) -> None:
        self.seen = seen
        self.scan = scan  # (trade_id, record) pairs, without copying the table
        self.partitions = partitions
        self.retention_ms = retention_ms
        self._round: tuple[int, dict[int, list[str]]] | None = None

    def cutoff(self) -> int:
        """Fills before this are outside the retention now."""
        return now_ms() - self.retention_ms

    def prune(self, partition: int, cutoff_ms: int) -> int:
        """Delete the entries of ``partition`` older than ``cutoff_ms`` (never newer than the
        retention allows, whatever the command says); returns how many. Must run inside an
        event of ``partition`` when ``seen`` is a Faust table."""
        cutoff_ms = min(cutoff_ms, self.cutoff())
        if self._round is None or self._round[0] != cutoff_ms:
            self._round = (cutoff_ms, expired_by_partition(self.scan(), cutoff_ms, self.partitions))
        removed = 0
        for trade_id in self._round[1].pop(partition, []):
            # Still there and still expired (the scan may be from an earlier event).
            record = self.seen.get(trade_id)
            if record is not None and record.timestamp < cutoff_ms:
                del self.seen[trade_id]
                removed += 1
        return removed
