"""Queries for the client SDK, written against the deduplicated views of the tables.

They read ``orders FINAL``: ReplacingMergeTree only collapses versions on merges, and the
sink may have inserted a snapshot twice after a crash (see ``clickhouse/migrations.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from oms.schemas import OrderStatus
from oms.settings import Settings
from oms.sinks.query import run_query

MAX_LIMIT = 10_000


def to_epoch_ms(value: datetime | int) -> int:
    """Milliseconds since the epoch from a datetime (naive means UTC) or an int of ms."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return round((value - datetime(1970, 1, 1)).total_seconds() * 1000)
        return round(value.timestamp() * 1000)
    return int(value)


def account_filters(
    account_id: str | None, instrument_name: str | None, venue: str | None = None
) -> tuple[list[str], dict[str, Any]]:
    """WHERE clauses (bound parameters) for the optional account, instrument and venue
    filters that every history query takes."""
    where: list[str] = []
    params: dict[str, Any] = {}
    if account_id is not None:
        where.append("account_id = {account_id:String}")
        params["account_id"] = account_id
    if instrument_name is not None:
        where.append("instrument_name = {instrument_name:String}")
        params["instrument_name"] = instrument_name
    if venue is not None:
        where.append("venue = {venue:String}")
        params["venue"] = venue
    return where, params


async def get_order_history(
    settings: Settings,
    account_id: str | None = None,
    instrument_name: str | None = None,
    status: OrderStatus | str | None = None,
    since: datetime | int | None = None,
    until: datetime | int | None = None,
    limit: int = 100,
    venue: str | None = None,
) -> list[dict[str, Any]]:
    """Latest state of orders, newest ``created_at`` first, filtered by the given fields.

    ``since``/``until`` bound ``created_at`` (inclusive/exclusive), as datetimes or epoch ms.
    Rows are dicts of the ``orders`` columns; datetimes are ISO-8601 UTC strings and
    ``conditions``/``metadata`` JSON strings.
    """
    where, params = account_filters(account_id, instrument_name, venue)
    if status is not None:
        where.append("status = {status:String}")
        params["status"] = getattr(status, "value", status)
    if since is not None:
        where.append("created_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')")
        params["since"] = to_epoch_ms(since)
    if until is not None:
        where.append("created_at < fromUnixTimestamp64Milli({until:Int64}, 'UTC')")
        params["until"] = to_epoch_ms(until)
    params["limit"] = max(0, min(int(limit), MAX_LIMIT))
    sql = (
        "SELECT * EXCEPT inserted_at FROM orders FINAL"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY created_at DESC, order_id LIMIT {limit:UInt32}"
    )
    result = await run_query(settings, sql, params)
    return result.records()
