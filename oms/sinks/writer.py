"""Inserting a batch: one insert per table, each with its deduplication token."""

from __future__ import annotations

import structlog
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError

from oms.sinks.batch import Batch
from oms.sinks.clickhouse.client import AsyncClickHouse, TableInsert
from oms.sinks.clickhouse.rows import COLUMNS
from oms.sinks.failures import insert_failure_reason
from oms.sinks.staged import RAW_INSERT_SETTINGS, STAGED_BY_NAME

log = structlog.get_logger(__name__)


async def write_batch(ch: AsyncClickHouse, batch: Batch) -> dict[str, int]:
    """Insert every table's rows of ``batch``; returns rows sent per table.

    Tables in :mod:`oms.sinks.staged` get their messages' JSON into the staging table
    (its view writes the rows). Safe to call again with the same batch after a failure:
    tables whose insert already went through recognise the token and drop the repeat.
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
    # One trip to the worker thread for all of it: between separate trips the event loop
    # may be busy for a while, and the inserts would wait.
    await ch.run(_write_sync, inserts, batch)
    sent = {i.table: len(i.rows) for i in inserts}
    for staging, n in batch.raw_rows.items():
        table = STAGED_BY_NAME[staging].table
        sent[table] = sent.get(table, 0) + n
    return sent


def _write_sync(client: Client, inserts: list[TableInsert], batch: Batch) -> None:
    for i in inserts:
        client.insert(i.table, i.rows, column_names=i.column_names, settings=i.settings)
    for staging, lines in batch.raw.items():
        if lines:
            _raw_insert(client, batch, staging, lines)


def _raw_insert(client: Client, batch: Batch, staging: str, lines: list[bytes]) -> None:
    token = batch.token(staging)
    try:
        client.raw_insert(
            staging,
            insert_block=b"\n".join(lines),
            fmt="JSONEachRow",
            settings={**RAW_INSERT_SETTINGS, "insert_deduplication_token": token},
        )
    except OperationalError:
        raise  # connection trouble: the whole batch is retried, same tokens
    except Exception as exc:
        if insert_failure_reason(exc) != "insert_failed":
            raise  # storage or reachability, not the data: retried like any insert
        # ClickHouse refused JSON pydantic accepted (e.g. a key given twice: pydantic keeps
        # the last, ClickHouse rejects the row). Never stall on it: the Python rows of the
        # same messages, with their own token so a retry of this path is dropped too.
        staged = STAGED_BY_NAME[staging]
        log.warning(
            "sink.raw_insert_refused",
            table=staging,
            messages=len(lines),
            error=str(exc).splitlines()[0][:300] if str(exc) else repr(exc),
        )
        client.insert(
            staged.table,
            staged.fallback_rows(lines),
            column_names=COLUMNS[staged.table],
            settings={"insert_deduplication_token": f"{token}:rows"},
        )
