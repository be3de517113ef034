"""Desks through the real query endpoint on embedded chDB: rows of two desks (and of an
account no desk owns), desk A's token, and every trick to read desk B's rows."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from random import Random
from typing import Any

import aiohttp
import pytest
from clickhouse_connect.driver.client import Client

from oms.positions.queries import (
    calculate_position_statistics,
    get_current_positions,
    get_position_records,
)
from oms.secrets import QueryTokens
from oms.settings import Settings
from oms.sinks.access import AccessDenied, QueryAccess
from oms.sinks.clickhouse.client import chdb_path, open_client
from oms.sinks.errors import QueryError
from oms.sinks.lock import ChdbPathLock
from oms.sinks.queries import get_order_history
from oms.sinks.query import execute_readonly, query_url, run_query
from oms.sinks.query_server import make_app, start_query_server
from oms.sinks.scope import Scope, ScopeViolation

from .desk_queries import desk_query

DESKS = {"alpha": ["a1", "a2"], "beta": ["b1"]}
TOKENS = {"alpha": "tok-alpha-0123456789", "beta": "tok-beta-0123456789"}
OPERATOR_TOKEN = "tok-operator-0123456789"
# Anything of desk beta's, or of the account no desk owns, must never reach desk alpha.
FOREIGN = ("b1", "z1", "B-SECRET", "Z-SECRET")
ALPHA = Scope(desk="alpha", accounts=frozenset(DESKS["alpha"]))

ROWS = [("A-1", "a1"), ("A-2", "a2"), ("B-SECRET-1", "b1"), ("Z-SECRET-1", "z1")]
# Recent: most tables drop rows past their retention as they are inserted.
T = f"'{datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S')}'"


def fill(ch: Client) -> None:
    """One row per account in every table that holds one, and some without accounts."""
    for n, (order_id, account) in enumerate(ROWS, start=1):
        ch.command(
            "INSERT INTO orders (order_id, version, account_id, instrument_name, status, "
            f"created_at, updated_at, exchange_updated_at) VALUES ('{order_id}', 1, "
            f"'{account}', 'BTC-PERPETUAL', 'open', {T}, {T}, {T})"
        )
        ch.command(
            "INSERT INTO order_events (event_id, event_type, order_id, account_id, version, "
            f"timestamp, kafka_partition, kafka_offset) VALUES ('e-{order_id}', 'accepted', "
            f"'{order_id}', '{account}', 1, {T}, 0, {n})"
        )
        ch.command(
            "INSERT INTO executions (order_id, trade_id, account_id, instrument_name, amount, "
            f"price, fee, timestamp, report_id, source, received_at) VALUES ('{order_id}', "
            f"'t-{order_id}', '{account}', 'BTC-PERPETUAL', 1, 50000, 0, {T}, 'r', 'rpc', {T})"
        )
        ch.command(
            "INSERT INTO position_changes (record_id, account_id, instrument_name, size, "
            f"timestamp, version) VALUES ('p-{order_id}', '{account}', 'BTC-PERPETUAL', 1, {T}, 1)"
        )
        ch.command(
            "INSERT INTO notifications (notification_id, channel, account_id, title, content, "
            f"status, order_id, created_at) VALUES ('n-{order_id}', 'log', '{account}', "
            f"'{order_id}', '{order_id}', 'sent', '{order_id}', {T})"
        )
    ch.command(
        "INSERT INTO market_ticks (instrument_name, bucket, timestamp, state, received_at) "
        f"VALUES ('BTC-PERPETUAL', {T}, {T}, 'open', {T})"
    )
    ch.command(
        "INSERT INTO dead_letters (kafka_partition, kafka_offset, source_topic, reason_code, "
        f"error, payload, received_at) VALUES (0, 1, 'oms.x', 'bad', 'e', "
        f'\'{{"account_id": "b1", "order_id": "B-SECRET-9"}}\', {T})'
    )


@pytest.fixture
def desk_settings(settings: Settings, tmp_path: Path) -> Settings:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"query_tokens": TOKENS, "query_operator_token": OPERATOR_TOKEN}))
    return settings.model_copy(update={"desks": DESKS, "secrets_file": secrets})


@pytest.fixture
def reader(desk_settings: Settings, ch: Client) -> Iterator[Client]:
    fill(ch)
    client = open_client(desk_settings, readonly=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def endpoint(desk_settings: Settings, reader: Client) -> AsyncIterator[str]:
    """What the sink does with desks configured: the path lock, and the endpoint with
    the desks' tokens."""
    lock = ChdbPathLock(chdb_path(desk_settings))
    url = query_url(desk_settings)
    lock.acquire(role="sink", query_url=url)
    tokens = QueryTokens(desk_settings.desks, desk_settings.resolved_secrets_file)
    app = make_app(reader, access=QueryAccess(desk_settings.desks, tokens))
    runner = await start_query_server(
        app, desk_settings.sink.query_host, desk_settings.sink.query_port
    )
    try:
        yield url
    finally:
        await runner.cleanup()
        lock.release()


async def post(url: str, sql: str, token: str | None = TOKENS["alpha"]) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, json={"sql": sql}, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


def cells(rows: list[list[Any]]) -> str:
    return json.dumps(rows)


def assert_clean(body: dict[str, Any]) -> None:
    text = cells(body["rows"])
    assert not any(marker in text for marker in FOREIGN), body["rows"]


async def test_a_desk_sees_only_its_accounts(endpoint: str) -> None:
    status, body = await post(endpoint, "SELECT account_id FROM orders ORDER BY account_id")
    assert status == 200, body
    assert body["rows"] == [["a1"], ["a2"]]
    status, body = await post(endpoint, "SELECT DISTINCT account_id FROM orders", TOKENS["beta"])
    assert status == 200 and body["rows"] == [["b1"]]
    # The operator's token reads everything, including tables no desk may read.
    status, body = await post(endpoint, "SELECT count() FROM orders", OPERATOR_TOKEN)
    assert status == 200 and body["rows"] == [[4]]
    status, body = await post(endpoint, "SELECT count() FROM dead_letters", OPERATOR_TOKEN)
    assert status == 200 and body["rows"] == [[1]]


@pytest.mark.parametrize(
    ("token", "reason"),
    [(None, "missing_token"), ("", "missing_token"), ("tok-alpha", "invalid_token"),
     ("TOK-ALPHA-0123456789", "invalid_token"), (TOKENS["alpha"] + " ", "invalid_token")],
)  # fmt: skip
async def test_a_wrong_or_missing_token_is_refused(
    endpoint: str, token: str | None, reason: str
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if token == TOKENS["alpha"] + " ":
        headers = {"Authorization": f"Basic {TOKENS['alpha']}"}
        reason = "missing_token"
    async with (
        aiohttp.ClientSession() as s,
        s.post(endpoint, json={"sql": "SELECT * FROM orders"}, headers=headers) as resp,
    ):
        assert resp.status == 401
        body = await resp.json()
    assert body["reason"] == reason
    assert TOKENS["alpha"] not in json.dumps(body)


NO_ROWS = "runs, no rows"
# Each of these is refused (the reason given), or runs and returns desk alpha's rows (None)
# or no rows at all (NO_ROWS), and never anything of desk beta's.
ATTACKS: list[tuple[str, str | None]] = [
    # UNION
    ("SELECT account_id FROM orders UNION ALL SELECT account_id FROM executions", None),
    ("SELECT order_id FROM orders UNION DISTINCT SELECT order_id FROM order_events", None),
    ("SELECT account_id FROM orders UNION ALL SELECT name FROM system.tables", "system_table"),
    ("SELECT key FROM dead_letters UNION ALL SELECT order_id FROM orders", "table_not_allowed"),
    # subqueries
    ("SELECT * FROM (SELECT * FROM orders) AS o", None),
    ("SELECT (SELECT groupArray(account_id) FROM executions) AS all_accounts", None),
    ("SELECT order_id FROM orders WHERE order_id IN (SELECT order_id FROM executions)", None),
    ("SELECT * FROM orders WHERE account_id IN (SELECT 'b1')", NO_ROWS),
    ("WITH x AS (SELECT * FROM position_changes) SELECT account_id, record_id FROM x", None),
    # A WITH alias reaches into subqueries: it must not capture the desk's filter.
    ("WITH 'a1' AS account_id SELECT order_id FROM orders", None),
    ("SELECT order_id FROM orders WHERE account_id = 'b1' OR 1 = 1", None),
    # JOINs, onto scoped and onto unscoped tables
    ("SELECT * FROM orders AS o JOIN executions AS e ON o.order_id = e.order_id", None),
    ("SELECT e.* FROM market_ticks AS m LEFT JOIN executions AS e "
     "ON m.instrument_name = e.instrument_name", None),
    ("SELECT * FROM market_ticks AS m RIGHT JOIN notifications AS n ON 1 = 1", None),
    ("SELECT o.order_id, d.payload FROM orders AS o CROSS JOIN dead_letters AS d",
     "table_not_allowed"),
    ("SELECT * FROM orders AS o FULL JOIN positions AS p ON o.account_id = p.account_id", None),
    ("SELECT * FROM positions", None),
    ("SELECT * FROM position_daily_stats", None),
    # table functions
    ("SELECT * FROM merge(currentDatabase(), '^orders$')", "table_function"),
    ("SELECT * FROM file('/etc/hostname', 'LineAsString')", "table_function"),
    ("SELECT * FROM remote('127.0.0.1', default.orders)", "table_function"),
    ("SELECT * FROM numbers(3)", "table_function"),
    ("SELECT * FROM url('http://127.0.0.1:1/x', CSV, 'a String')", "table_function"),
    ("SELECT * FROM cluster('default', default.orders)", "table_function"),
    # system tables, however spelled
    ("SELECT * FROM system.tables", "system_table"),
    ('SELECT * FROM "system"."tables"', "system_table"),
    ("SELECT * FROM `system`.`tables`", "system_table"),
    ("SELECT * FROM SYSTEM.TABLES", "system_table"),
    ("SELECT * FROM system.parts", "system_table"),
    ("SELECT * FROM information_schema.tables", "system_table"),
    # settings
    ("SELECT * FROM orders SETTINGS readonly = 0", "settings"),
    ("SELECT * FROM orders SETTINGS additional_table_filters = {'orders': '1'}", "settings"),
    ("SET readonly = 0", "not_select"),
    ("SET additional_table_filters = {}; SELECT * FROM orders", "multiple_statements"),
    # comments
    ("SELECT * FROM orders /* FROM system.tables */", None),
    ("SELECT * FROM orders -- UNION ALL SELECT * FROM dead_letters\n", None),
    ("SELECT * FROM orders # ; SELECT * FROM dead_letters\n", None),
    ("SELECT * FROM /* x */ dead_letters", "table_not_allowed"),
    ("SELECT * FROM orders; -- ok\nSELECT * FROM dead_letters", "multiple_statements"),
    ("SELECT * FROM orders /*", "parse_error"),
    # case and quoting
    ("SELECT * FROM `orders`", None),
    ('SELECT * FROM "orders" AS "o"', None),
    ("select * from ORDERS", "table_not_allowed"),
    ("SELECT * FROM `dead_letters`", "table_not_allowed"),
    ("SELECT * FROM default.`orders`", "other_database"),
    # names and functions that read by name
    ("SELECT * FROM {t:Identifier}", "identifier_parameter"),
    ("SELECT 1 WHERE 'b1' IN dead_letters", "in_table"),
    ("SELECT 'b1' IN (dead_letters)", "in_table"),
    ("SELECT globalIn('B-SECRET-1', orders)", "function_not_allowed"),
    ("SELECT file('/etc/hostname')", "function_not_allowed"),
    ("SELECT joinGet('orders', 'account_id', 'B-SECRET-1')", "function_not_allowed"),
    ("SHOW TABLES", "not_select"),
    ("SELECT * FROM orders INTO OUTFILE '/tmp/oms-desk.csv'", "parse_error"),
]  # fmt: skip


async def test_desk_a_gets_nothing_of_desk_b(endpoint: str) -> None:
    """Every attack through one endpoint (a fresh chDB per case would take minutes); the
    failures are listed together."""
    failures: list[str] = []
    for sql, refusal in ATTACKS:
        status, body = await post(endpoint, sql)
        if refusal in (None, NO_ROWS):
            text = cells(body.get("rows", []))
            ok = status == 200 and not any(marker in text for marker in FOREIGN)
            ok = ok and bool(body["rows"]) == (refusal is None)
        else:
            ok = status in (400, 403) and body.get("reason") == refusal and "rows" not in body
        if not ok:
            failures.append(f"{sql!r}: expected {refusal or 'own rows'}, got {status} {body}")
    assert not failures, "\n".join(failures)


async def test_the_sdk_reads_as_its_desk(desk_settings: Settings, endpoint: str) -> None:
    alpha = desk_settings.model_copy(
        update={"sink": desk_settings.sink.model_copy(update={"query_desk": "alpha"})}
    )
    orders = await get_order_history(alpha)
    assert sorted(o["order_id"] for o in orders) == ["A-1", "A-2"]
    assert await get_order_history(alpha, account_id="b1") == []
    records = await get_position_records(alpha)
    assert sorted(r["account_id"] for r in records) == ["a1", "a2"]
    latest = await get_position_records(alpha, include_history=False)
    assert sorted(r["account_id"] for r in latest) == ["a1", "a2"]
    current = await get_current_positions(alpha, include_flat=True)
    assert sorted(p["account_id"] for p in current) == ["a1", "a2"]
    stats = await calculate_position_statistics(alpha)
    assert "b1" not in json.dumps(stats, default=str)
    beta = desk_settings.model_copy(
        update={"sink": desk_settings.sink.model_copy(update={"query_desk": "beta"})}
    )
    assert [o["order_id"] for o in await get_order_history(beta)] == ["B-SECRET-1"]
    with pytest.raises(ScopeViolation) as refused:
        await run_query(alpha, "SELECT * FROM dead_letters")
    assert refused.value.reason == "table_not_allowed"
    # Without a desk the process reads as the operator (its token from the secrets file).
    assert len(await get_order_history(desk_settings)) == 4


async def test_the_sdk_without_its_token_is_refused(
    desk_settings: Settings, endpoint: str, tmp_path: Path
) -> None:
    secrets = tmp_path / "other-secrets.json"
    secrets.write_text(json.dumps({"query_tokens": {"beta": TOKENS["beta"]}}))
    alpha = desk_settings.model_copy(
        update={
            "secrets_file": secrets,
            "sink": desk_settings.sink.model_copy(update={"query_desk": "alpha"}),
        }
    )
    with pytest.raises(AccessDenied):
        await get_order_history(alpha)
    # No desk and no operator token: the endpoint wants a token.
    with pytest.raises(AccessDenied) as refused:
        await get_order_history(alpha.model_copy(update={"sink": desk_settings.sink}))
    assert refused.value.reason == "missing_token"


async def test_without_desks_the_endpoint_is_open_as_before(
    settings: Settings, reader: Client
) -> None:
    app = make_app(reader, access=QueryAccess({}, QueryTokens([])))
    runner = await start_query_server(app, settings.sink.query_host, settings.sink.query_port)
    try:
        status, body = await post(query_url(settings), "SELECT count() FROM dead_letters", None)
    finally:
        await runner.cleanup()
    assert status == 200 and body["rows"] == [[1]]


def test_generated_queries_return_only_desk_a_rows(reader: Client) -> None:
    """A few hundred queries of the property test's grammar, run on chDB as desk alpha:
    each is refused or fails, or returns nothing of desk beta's."""
    ran = with_rows = 0
    for seed in range(300):
        sql = desk_query(Random(seed))
        try:
            result = execute_readonly(reader, sql, None, ALPHA)
        except QueryError:
            continue
        ran += 1
        with_rows += bool(result.rows)
        text = cells(result.rows)
        assert not any(marker in text for marker in FOREIGN), (sql, result.rows)
    # The grammar mostly makes queries that run and return desk alpha's rows.
    assert ran >= 150 and with_rows >= 100, (ran, with_rows)
