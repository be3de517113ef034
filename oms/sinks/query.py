"""Read-only SQL against the sink's ClickHouse, wherever it lives.

* server mode (``OMS_CLICKHOUSE_URL``): straight to the server with a ``readonly=1`` session;
* embedded mode, sink running: chDB admits one process per data path, so the query goes to
  the sink's ``POST /query`` endpoint (address taken from the lock file, else settings);
* embedded mode, no sink: we take the path lock ourselves and open chDB read-only.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any
from uuid import UUID

import aiohttp
import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from pydantic import BaseModel

from oms.settings import Settings
from oms.sinks.clickhouse.client import chdb_path, open_client
from oms.sinks.errors import QueryError
from oms.sinks.lock import SQL_ROLE, ChdbPathBusy, ChdbPathLock
from oms.sinks.sqlguard import check_read_only

QUERY_TIMEOUT_S = 60.0


class QueryResult(BaseModel):
    """Columns, JSON-native rows (datetimes as ISO-8601 UTC strings) and elapsed time."""

    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    elapsed_ms: float

    def records(self) -> list[dict[str, Any]]:
        """Rows as ``{column: value}`` dicts."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _jsonable(rows: Any) -> list[list[Any]]:
    # chDB and the server hand back naive datetimes for our DateTime64(3, 'UTC') columns, in
    # UTC: OPT_NAIVE_UTC labels them as such.
    data = orjson.dumps(rows, default=_json_default, option=orjson.OPT_NAIVE_UTC)
    return [list(row) for row in orjson.loads(data)]


def execute_readonly(
    client: Client, sql: str, parameters: dict[str, Any] | None = None
) -> QueryResult:
    """Check and run one read-only statement on a ``readonly=1`` client (blocking)."""
    statement = check_read_only(sql)
    started = time.perf_counter()
    try:
        result = client.query(statement, parameters=parameters or None)
    except ClickHouseError as exc:
        raise QueryError(str(exc).strip()) from exc
    return QueryResult(
        columns=list(result.column_names),
        types=[t.name for t in result.column_types],
        rows=_jsonable(result.result_rows),
        elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
    )


def query_url(settings: Settings) -> str:
    """The sink's query endpoint from settings."""
    return f"http://{settings.sink.query_host}:{settings.sink.query_port}/query"


async def run_query(
    settings: Settings, sql: str, parameters: dict[str, Any] | None = None
) -> QueryResult:
    """Run one read-only statement (SELECT/WITH/SHOW/DESCRIBE/EXPLAIN) and return its rows.

    ``parameters`` fill ClickHouse server-side placeholders (``{name:Type}``); they must be
    JSON-native. Raises :class:`~oms.sinks.errors.QueryError` (or its subclass
    ``ReadOnlyViolation``) with a user-facing message.
    """
    check_read_only(sql)  # fail fast, before any connection
    if not settings.embedded_clickhouse:
        return await asyncio.to_thread(_direct, settings, sql, parameters, False)
    lock = ChdbPathLock(chdb_path(settings))
    try:
        # Another direct reader finishes quickly: wait for it rather than fail.
        await lock.acquire_waiting(wait_for=frozenset({SQL_ROLE}), role=SQL_ROLE)
    except ChdbPathBusy as busy:
        url = busy.holder.get("query_url") or query_url(settings)
        return await _via_endpoint(url, sql, parameters, busy)
    try:
        if not chdb_path(settings).is_dir():
            raise QueryError(
                f"no embedded ClickHouse data at {chdb_path(settings)}: start `oms sink` first"
            )
        return await asyncio.to_thread(_direct, settings, sql, parameters, True)
    finally:
        lock.release()


def _direct(
    settings: Settings, sql: str, parameters: dict[str, Any] | None, embedded: bool
) -> QueryResult:
    client = open_client(settings, readonly=True, readonly_engine=embedded)
    try:
        return execute_readonly(client, sql, parameters)
    finally:
        client.close()


async def _via_endpoint(
    url: str, sql: str, parameters: dict[str, Any] | None, busy: ChdbPathBusy
) -> QueryResult:
    timeout = aiohttp.ClientTimeout(total=QUERY_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, json={"sql": sql, "parameters": parameters or {}}) as resp,
        ):
            body = await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise QueryError(f"{busy}; its query endpoint {url} did not answer: {exc}") from exc
    try:
        payload = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        payload = {"error": body[:300].decode("utf-8", errors="replace")}
    if resp.status != 200:
        raise QueryError(payload.get("error") or f"query endpoint answered HTTP {resp.status}")
    return QueryResult.model_validate(payload)


__all__ = ["QueryError", "QueryResult", "execute_readonly", "query_url", "run_query"]
