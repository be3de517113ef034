"""clickhouse-connect clients for the sink, embedded (chDB) or server, with the same SQL.

Every call into clickhouse-connect blocks (chDB runs the query in-process, HTTP waits on
the socket), so :class:`AsyncClickHouse` pushes each call to a worker thread and the
event loop stays responsive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ProgrammingError
from clickhouse_connect.driver.query import QueryResult as CCQueryResult
from clickhouse_connect.driver.summary import QuerySummary

from oms.settings import Settings
from oms.sinks.lock import ChdbPathBusy

READONLY_SETTINGS: dict[str, Any] = {"readonly": 1}
T = TypeVar("T")


def chdb_path(settings: Settings) -> Path:
    """The embedded data directory (``<data_dir>/clickhouse``)."""
    return (settings.data_dir / "clickhouse").resolve()


def open_client(
    settings: Settings,
    *,
    readonly: bool = False,
    readonly_engine: bool = False,
    username: str | None = None,
    password: str | None = None,
) -> Client:
    """A clickhouse-connect client for ``settings.clickhouse_dsn``.

    ``username``/``password`` log in as another server user than the DSN's (a desk's).

    ``readonly`` sets ``readonly=1`` for the whole session, so nothing sent through this
    client can write, change settings or call table functions. ``readonly_engine`` also
    opens the chDB engine itself in ``mode=ro`` (embedded only); chDB keeps one engine per
    process, so don't combine it with a writable client in the same process. The caller
    must hold the :class:`~oms.sinks.lock.ChdbPathLock` in embedded mode.
    """
    kwargs: dict[str, Any] = {"dsn": settings.clickhouse_dsn}
    if username is not None:
        kwargs.update(username=username, password=password or "")
    # A mode=ro engine is read-only already and rejects readonly as a session setting.
    if readonly and not (readonly_engine and settings.embedded_clickhouse):
        kwargs["settings"] = dict(READONLY_SETTINGS)
    if settings.embedded_clickhouse:
        path = chdb_path(settings)
        path.mkdir(parents=True, exist_ok=True)
        kwargs["dsn"] = f"chdb://{path}"
        if readonly_engine:
            kwargs["chdb_options"] = {"mode": "ro"}
    try:
        client = clickhouse_connect.get_client(**kwargs)
    except ProgrammingError as exc:
        # chDB's own directory lock: some process outside our lock file has the path open.
        if "EmbeddedServer" in str(exc):
            raise ChdbPathBusy(chdb_path(settings), None) from exc
        raise
    if readonly or readonly_engine:
        # Never hand out a "read-only" client that could write: the setting can be dropped
        # silently (e.g. by the client's setting validation), so ask the engine.
        level = client.command("SELECT getSetting('readonly')")
        if str(level) == "0":
            client.close()
            raise RuntimeError("could not open a read-only ClickHouse session")
    return client


@dataclass(frozen=True)
class TableInsert:
    """The rows of one insert into one table."""

    table: str
    rows: Sequence[Sequence[Any]]
    column_names: Sequence[str]
    settings: dict[str, Any] | None = None


class AsyncClickHouse:
    """Awaitable facade over a blocking clickhouse-connect client."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def command(self, sql: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.client.command, sql, **kwargs)

    async def query(self, sql: str, **kwargs: Any) -> CCQueryResult:
        return await asyncio.to_thread(self.client.query, sql, **kwargs)

    async def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        settings: dict[str, Any] | None = None,
    ) -> QuerySummary:
        return await asyncio.to_thread(
            self.client.insert, table, rows, column_names=column_names, settings=settings
        )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(client, *args)`` in the worker thread: several calls in one trip, since
        between separate trips the event loop may be busy for a while."""
        return await asyncio.to_thread(fn, self.client, *args)

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)
