"""Read-only SQL against the sink's ClickHouse, wherever it lives.

* server mode (``OMS_CLICKHOUSE_URL``): straight to the server with a ``readonly=1`` session;
* embedded mode, sink running: chDB admits one process per data path, so the query goes to
  the sink's ``POST /query`` endpoint (address taken from the lock file, else settings);
* embedded mode, no sink: we take the path lock ourselves and open chDB read-only.

A process reads as ``settings.sink.query_desk`` (None: the operator). Its token comes from
the secrets store (:class:`~oms.secrets.QueryTokens`): the endpoint scopes the query to the
desk's accounts; on a server the process logs in as the desk's ClickHouse user, whose row
policies do the same (``clickhouse/desks.py``); reading chDB directly, the query is scoped
here (a process that can open the data directory could read the files anyway).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

import aiohttp
import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from pydantic import BaseModel

from oms.secrets import QueryTokens
from oms.settings import Settings
from oms.sinks.access import AccessDenied
from oms.sinks.clickhouse.client import chdb_path, open_client
from oms.sinks.clickhouse.desks import desk_user
from oms.sinks.errors import QueryError
from oms.sinks.lock import SQL_ROLE, ChdbPathBusy, ChdbPathLock
from oms.sinks.scope import EVERYTHING, Scope, ScopeViolation, prepare_statement
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
    client: Client, sql: str, parameters: dict[str, Any] | None = None, scope: Scope = EVERYTHING
) -> QueryResult:
    """Check and run one read-only statement on a ``readonly=1`` client (blocking); a desk's
    ``scope`` rewrites it to the desk's accounts first (nothing runs if it is refused)."""
    statement = prepare_statement(sql, scope)
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
    reader = await asyncio.to_thread(Reader.of, settings)
    if not settings.embedded_clickhouse:
        return await asyncio.to_thread(_direct, settings, reader, sql, parameters, False)
    lock = ChdbPathLock(chdb_path(settings))
    try:
        # Another direct reader finishes quickly: wait for it rather than fail.
        await lock.acquire_waiting(wait_for=frozenset({SQL_ROLE}), role=SQL_ROLE)
    except ChdbPathBusy as busy:
        url = busy.holder.get("query_url") or query_url(settings)
        return await _via_endpoint(url, reader.token, sql, parameters, busy)
    try:
        if not chdb_path(settings).is_dir():
            raise QueryError(
                f"no embedded ClickHouse data at {chdb_path(settings)}: start `oms sink` first"
            )
        return await asyncio.to_thread(_direct, settings, reader, sql, parameters, True)
    finally:
        lock.release()


@dataclass(frozen=True)
class Reader:
    """Who this process reads as: ``desk`` (None: the operator), with its token, if any."""

    desk: str | None
    accounts: frozenset[str]
    token: str | None = field(repr=False)

    @classmethod
    def of(cls, settings: Settings) -> Reader:
        """The reader ``settings`` name, its token from the secrets store (reads a file)."""
        desk = settings.sink.query_desk
        if desk is not None and desk not in settings.desks:
            raise QueryError(f"sink.query_desk {desk!r} is not one of the configured desks")
        tokens = QueryTokens(settings.desks, settings.resolved_secrets_file)
        token = tokens.operator if desk is None else tokens.for_desk(desk)
        if desk is not None and token is None:
            raise AccessDenied("missing_token", f"no query token for desk {desk!r}")
        return cls(desk, frozenset(settings.desks.get(desk or "", ())), token)

    @property
    def scope(self) -> Scope:
        return EVERYTHING if self.desk is None else Scope(self.desk, self.accounts)


def _direct(
    settings: Settings,
    reader: Reader,
    sql: str,
    parameters: dict[str, Any] | None,
    embedded: bool,
) -> QueryResult:
    login: dict[str, str] = {}
    if not embedded and reader.desk is not None and reader.token is not None:
        # The server's row policies scope the desk's user (clickhouse/desks.py).
        login = {"username": desk_user(reader.desk), "password": reader.token}
    client = open_client(settings, readonly=True, readonly_engine=embedded, **login)
    try:
        # On a server the desk's user is scoped by the server itself, so only embedded
        # reads are rewritten here.
        return execute_readonly(client, sql, parameters, reader.scope if embedded else EVERYTHING)
    finally:
        client.close()


async def _via_endpoint(
    url: str, token: str | None, sql: str, parameters: dict[str, Any] | None, busy: ChdbPathBusy
) -> QueryResult:
    timeout = aiohttp.ClientTimeout(total=QUERY_TIMEOUT_S)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"sql": sql, "parameters": parameters or {}}
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, json=body, headers=headers) as resp,
        ):
            answer = await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise QueryError(f"{busy}; its query endpoint {url} did not answer: {exc}") from exc
    try:
        payload = orjson.loads(answer) if answer else {}
    except orjson.JSONDecodeError:
        payload = {"error": answer[:300].decode("utf-8", errors="replace")}
    if resp.status != 200:
        raise refused(resp.status, payload)
    return QueryResult.model_validate(payload)


def refused(status: int, payload: dict[str, Any]) -> QueryError:
    """The error an endpoint answer with ``status`` and ``{"error", "reason"}`` stands for."""
    message = payload.get("error") or f"query endpoint answered HTTP {status}"
    reason = payload.get("reason")
    if status == 401 and reason:
        return AccessDenied(reason, message)
    if status == 403 and reason:
        return ScopeViolation(reason, message)
    return QueryError(message)


__all__ = ["QueryError", "QueryResult", "execute_readonly", "query_url", "run_query"]
