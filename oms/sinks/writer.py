"""Inserting a batch: one insert per table, each with its deduplication token."""

from __future__ import annotations

from oms.sinks.batch import Batch
from oms.sinks.clickhouse.client import AsyncClickHouse, TableInsert
from oms.sinks.clickhouse.rows import COLUMNS


async def write_batch(ch: AsyncClickHouse, batch: Batch) -> dict[str, int]:
    """Insert every table's rows of ``batch``; returns rows sent per table.

    Safe to call again with the same batch after a failure: tables whose insert already
    went through recognise the token and drop the repeat.
    """
    inserts = [
        TableInsert(
            table,
            rows,
            COLUMNS[table],
            settings={"insert_deduplication_token": batch.token(table)},
        )
        for table, rows in batch.rows.items()
        if rows
    ]
    await ch.insert_many(inserts)
    return {i.table: len(i.rows) for i in inserts}
