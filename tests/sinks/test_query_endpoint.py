"""The sink's read-only SQL endpoint and run_query's routing in embedded mode."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from clickhouse_connect.driver.client import Client

from oms.schemas import Topic
from oms.settings import Settings
from oms.sinks.clickhouse.client import AsyncClickHouse, chdb_path, open_client
from oms.sinks.errors import QueryError, ReadOnlyViolation
from oms.sinks.lock import ChdbPathLock
from oms.sinks.query import query_url, run_query
from oms.sinks.query_server import make_app, start_query_server
from oms.sinks.writer import write_batch

from .factories import batch, lifecycle


@pytest.fixture
async def endpoint(settings: Settings, ch: Client) -> AsyncIterator[str]:
    """What the sink does: hold the path lock and serve queries on a read-only client."""
    await write_batch(
        AsyncClickHouse(ch),
        batch(settings, [(Topic.ORDER_EVENTS, e.to_bytes()) for e in lifecycle("o-1")]),
    )
    lock = ChdbPathLock(chdb_path(settings))
    url = query_url(settings)
    lock.acquire(role="sink", query_url=url)
    reader = open_client(settings, readonly=True)
    runner = await start_query_server(
        make_app(reader), settings.sink.query_host, settings.sink.query_port
    )
    try:
        yield url
    finally:
        await runner.cleanup()
        reader.close()
        lock.release()


async def post(url: str, **kwargs: object) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.post(url, **kwargs) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.json()


async def test_select_returns_json(endpoint: str) -> None:
    status, body = await post(
        endpoint,
        json={
            "sql": "SELECT order_id, status, version FROM orders FINAL WHERE order_id = {o:String}",
            "parameters": {"o": "o-1"},
        },
    )
    assert status == 200, body
    assert body["columns"] == ["order_id", "status", "version"]
    assert body["rows"] == [["o-1", "filled", 5]]
    assert body["elapsed_ms"] >= 0
    status, body = await post(endpoint, data="SHOW TABLES")  # plain-text body works too
    assert status == 200 and ["orders"] in body["rows"]


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO orders (order_id) VALUES ('x')",
        "DROP TABLE orders",
        "ALTER TABLE orders DELETE WHERE 1",
        "SELECT 1; DROP TABLE orders",
        "SELECT 1; INSERT INTO orders (order_id) VALUES ('x')",
        "SELECT * FROM orders INTO OUTFILE '/tmp/oms-outfile.csv'",
    ],
)
async def test_refuses_writes(endpoint: str, ch: Client, sql: str) -> None:
    status, body = await post(endpoint, json={"sql": sql})
    assert status == 400
    assert "not allowed" in body["error"] or "one statement" in body["error"]
    assert ch.query("SELECT count() FROM orders FINAL").result_rows == [(1,)]


async def test_readonly_session_backs_the_check(endpoint: str) -> None:
    """Reads that would touch the host are stopped by readonly=1 itself."""
    status, body = await post(
        endpoint, json={"sql": "SELECT * FROM file('/etc/hostname', 'LineAsString')"}
    )
    assert status == 400 and "readonly" in body["error"].lower()
    status, body = await post(endpoint, json={"sql": "SELECT * FROM no_such_table"})
    assert status == 400 and "no_such_table" in body["error"]
    status, body = await post(endpoint, json={"nope": 1})
    assert status == 400


async def test_run_query_goes_through_the_endpoint(settings: Settings, endpoint: str) -> None:
    # The path lock is held (as by a running sink): run_query must not open chDB itself.
    result = await run_query(settings, "SELECT count() AS n FROM order_events FINAL")
    assert result.columns == ["n"] and result.rows == [[5]]
    with pytest.raises(ReadOnlyViolation):
        await run_query(settings, "DROP TABLE orders")
    with pytest.raises(QueryError, match=r"UNKNOWN_TABLE|does not exist"):
        await run_query(settings, "SELECT * FROM nope")


async def test_run_query_reports_a_dead_holder(settings: Settings) -> None:
    lock = ChdbPathLock(chdb_path(settings))
    lock.acquire(role="sink", query_url="http://127.0.0.1:9/query")
    try:
        with pytest.raises(QueryError, match="already open by sink"):
            await run_query(settings, "SELECT 1")
    finally:
        lock.release()


async def test_run_query_without_data(settings: Settings) -> None:
    with pytest.raises(QueryError, match="start `oms sink` first"):
        await run_query(settings, "SELECT 1")
