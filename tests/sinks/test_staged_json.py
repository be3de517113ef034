"""position_changes and executions filled by ClickHouse from the messages' JSON (staging
table + materialized view) hold exactly the rows the Python path builds.

The same messages go through the sink's batch and writer into the default database and, as
Python rows (oms.sinks.clickhouse.rows) inserted with clickhouse-connect, into a second
database; every column of every row (and of the views built on top) must match."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from oms.schemas import (
    Direction,
    ExecutionReport,
    Fill,
    PositionRecord,
    PositionRecordType,
    ReasonCode,
    ReportSource,
    Topic,
)
from oms.settings import Settings
from oms.sinks.clickhouse import rows as R
from oms.sinks.clickhouse.client import AsyncClickHouse, chdb_path
from oms.sinks.clickhouse.migrations import apply_migrations
from oms.sinks.writer import write_batch

from .factories import T0, batch

KEYS = {
    "position_changes": "account_id, instrument_name, record_id",
    "executions": "order_id, trade_id",
    "positions_current": "account_id, instrument_name",
    "position_daily_stats": "account_id, instrument_name, day",
}


@pytest.fixture
def ref(settings: Settings, ch: Client) -> Iterator[Client]:
    """A second migrated database in the same engine, filled through the Python path."""
    ch.command("CREATE DATABASE IF NOT EXISTS ref")
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_path(settings)}", database="ref")
    apply_migrations(client, settings.sink)
    try:
        yield client
    finally:
        client.close()


def position(n: int, **fields: Any) -> PositionRecord:
    base: dict[str, Any] = {
        "record_id": f"p-{n}",
        "account_id": f"acct-{n % 3}",
        "instrument_name": ["BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27DEC24-50000-C"][n % 3],
        "size": 10.0 * n,
        "size_before": 10.0 * (n - 1),
        "average_price": 50_000.5 + n,
        "average_price_before": 50_000.0,
        "realized_pnl": 0.001 * n,
        "fee": 0.0001,
        "order_id": f"o-{n}",
        "trade_id": f"t-{n}",
        "direction": "buy",
        "trade_amount": 10.0,
        "trade_price": 50_001.0,
        "timestamp": T0 + n,
        "kind": "inverse",
        "realized_pnl_change": 0.0002,
        "fees_total": 0.0001 * n,
        "version": n,
        "fills_total": n,
        "turnover_total": 10.0 * n,
        "trade_notional": 10.0,
    }
    base.update(fields)
    return PositionRecord(**base)


def position_messages() -> list[bytes]:
    """Records as the keeper writes them (None left out), every field set, odd values."""
    out = [
        position(1).__pydantic_serializer__.to_json(position(1), exclude_none=True),
        position(2).to_bytes(),  # with explicit nulls
        position(
            3,
            record_type=PositionRecordType.CORRECTION,
            reason_code=ReasonCode.POSITION_MISMATCH,
            message='exchange says 20 "not" 30\n\u00e9\U0001f600 \\ back',
            needs_review=True,
            exchange_size=20.0,
            exchange_average_price=49_999.75,
            unrealized_pnl=-0.000123456789,
            mark_price=50_123.456,
            actor="reconciler",
        ).to_bytes(),
        position(4, size=0.1 + 0.2, average_price=1e-310, realized_pnl=-0.0).to_bytes(),
        position(
            5, size=1.7976931348623157e308, fee=5e-324, turnover_total=123456789.123456789
        ).to_bytes(),
        position(6, record_type=PositionRecordType.ADJUSTMENT, actor="ops:alice").to_bytes(),
        # Only the required fields: every default comes from the staging columns.
        b'{"record_id":"p-7","account_id":"acct-1","instrument_name":"BTC-PERPETUAL",'
        b'"size":7,"timestamp":' + str(T0 + 7).encode() + b"}",
        # Not compact, numbers written differently, NaN/Infinity (pydantic accepts them).
        b'{ "record_id" : "p-8", "account_id": "acct-2", "instrument_name": "ETH-PERPETUAL",\n'
        b' "size": -2.5E3, "size_before": 1e0, "average_price": NaN, "unrealized_pnl": Infinity,'
        b' "realized_pnl": -Infinity, "timestamp": ' + str(T0 + 8).encode() + b', "version": 8 }',
    ]
    return out


def report(n: int, fills: list[Fill], **fields: Any) -> ExecutionReport:
    base: dict[str, Any] = {
        "report_id": f"r-{n}",
        "order_id": f"o-{n}",
        "account_id": f"acct-{n % 2}",
        "source": ReportSource.SUBSCRIPTION,
        "instrument_name": "BTC-PERPETUAL",
        "exchange_order_id": f"x-{n}",
        "direction": Direction.SELL,
        "amount": 30.0,
        "price": 50_000.0,
        "filled_amount": 30.0,
        "exchange_timestamp": T0 + 100 * n,
        "received_at": T0 + 100 * n + 7,
    }
    base.update(fields)
    return ExecutionReport(fills=fills, **base)


def execution_messages() -> list[bytes]:
    full = Fill(
        trade_id="t-1a",
        amount=10.0,
        price=50_000.5,
        fee=0.00012,
        fee_currency="BTC",
        liquidity="M",
        timestamp=T0 + 1,
        direction=Direction.SELL,
    )
    return [
        report(1, [full, Fill(trade_id="t-1b", amount=20.0, price=0.1 + 0.2)]).to_bytes(),
        # No fill time: the report's exchange_timestamp; no direction, no exchange order id.
        report(
            2,
            [Fill(trade_id="t-2", amount=1.0, price=3.5, fee=-0.001, liquidity="T")],
            direction=None,
            exchange_order_id=None,
            source=ReportSource.RPC,
        ).to_bytes(),
        report(3, []).to_bytes(),  # no fills: no rows either way
        # Fields omitted by the producer; a fill with only its required fields.
        b'{"report_id":"r-4","order_id":"o-4","account_id":"acct-0","source":"reconcile",'
        # (A fill time, though: a row at the epoch would fall to the executions' TTL.)
        b'"instrument_name":"ETH-PERPETUAL","fills":[{"trade_id":"t-4","amount":2,'
        b'"price":3000,"timestamp":'
        + str(T0 + 4).encode()
        + b'}],"received_at":'
        + str(T0 + 5).encode()
        + b"}",
    ]


def python_rows(records: list[tuple[Topic, bytes]]) -> dict[str, list[R.Row]]:
    """The rows the Python path builds for the same messages."""
    tables: dict[str, list[R.Row]] = {"position_changes": [], "executions": []}
    for topic, value in records:
        if topic is Topic.POSITIONS:
            tables["position_changes"].append(R.position_row(PositionRecord.from_bytes(value)))
        else:
            tables["executions"] += R.execution_rows(ExecutionReport.from_bytes(value))
    return tables


def read(client: Client, database: str, table: str) -> list[tuple[Any, ...]]:
    # FINAL: the tests insert retries and replays; the other database gets each row once.
    if table in ("position_changes", "executions"):
        sql = f"SELECT * EXCEPT inserted_at FROM {database}.{table} FINAL"
    elif table == "positions_current":
        sql = f"SELECT * FROM {database}.{table} FINAL"
    else:
        sql = f"SELECT * FROM {database}.{table}"
    sql += f" ORDER BY {KEYS[table]}"
    return [tuple(_nan_safe(v) for v in row) for row in client.query(sql).result_rows]


def _nan_safe(value: Any) -> Any:
    # NaN != NaN: compare it as a marker.
    return "NaN" if isinstance(value, float) and math.isnan(value) else value


def assert_same_tables(ch: Client) -> None:
    for table in KEYS:
        ours, theirs = read(ch, "default", table), read(ch, "ref", table)
        assert ours, table
        assert ours == theirs, table


def records() -> list[tuple[Topic, bytes]]:
    out = [(Topic.POSITIONS, m) for m in position_messages()]
    return out + [(Topic.EXECUTION_REPORTS, m) for m in execution_messages()]


async def test_staged_rows_equal_python_rows(settings: Settings, ch: Client, ref: Client) -> None:
    messages = records()
    b = batch(settings, messages)
    assert b.malformed == 0
    # Everything went as JSON, nothing as Python rows.
    assert len(b.raw["position_changes_json"]) == 8
    assert len(b.raw["executions_json"]) == 3  # the report without fills is left out
    assert not b.rows

    assert await write_batch(AsyncClickHouse(ch), b) == {"position_changes": 8, "executions": 4}
    for table, rows in python_rows(messages).items():
        ref.insert(table, rows, column_names=R.COLUMNS[table])
    assert_same_tables(ch)
    for table, n in (("position_changes", 8), ("executions", 4)):
        assert ch.query(f"SELECT count() FROM {table}").result_rows == [(n,)]
    # The ones whose defaults matter, spelled out (guards against both paths being wrong).
    p7 = ch.query(
        "SELECT record_type, actor, size_before, needs_review, version, average_price, "
        "toUnixTimestamp64Milli(timestamp) FROM position_changes WHERE record_id = 'p-7'"
    ).result_rows
    assert p7 == [("execution", "oms", 0.0, False, 0, None, T0 + 7)]
    t2 = ch.query(
        "SELECT toUnixTimestamp64Milli(timestamp), direction, fee_currency, source "
        "FROM executions WHERE trade_id = 't-2'"
    ).result_rows
    assert t2 == [(T0 + 200, None, None, "rpc")]


async def test_retried_staged_batch_is_dropped_by_token(
    settings: Settings, ch: Client, ref: Client
) -> None:
    messages = records()
    b = batch(settings, messages)
    aclient = AsyncClickHouse(ch)
    for _ in range(3):
        await write_batch(aclient, b)
    assert ch.query("SELECT count() FROM position_changes").result_rows == [(8,)]
    assert ch.query("SELECT count() FROM executions").result_rows == [(4,)]
    # A different batch of the same messages is not a retry: raw duplicates, FINAL collapses.
    await write_batch(aclient, batch(settings, messages, start=100))
    assert ch.query("SELECT count() FROM executions").result_rows == [(8,)]
    assert ch.query("SELECT count() FROM executions FINAL").result_rows == [(4,)]
    for table, rows in python_rows(messages).items():
        ref.insert(table, rows, column_names=R.COLUMNS[table])
    assert_same_tables(ch)


async def test_messages_clickhouse_would_read_differently_take_python_rows(
    settings: Settings, ch: Client, ref: Client
) -> None:
    """Valid only in pydantic's lax mode (numeric strings, "yes"), or missing a field whose
    default is 'now': Python rows, still equal; malformed ones are counted and skipped."""
    lax = (
        b'{"record_id":"p-l","account_id":"a","instrument_name":"BTC-PERPETUAL",'
        b'"size":"1.5","needs_review":"yes","version":3.0,"timestamp":' + str(T0).encode() + b"}"
    )
    lax_report = report(9, [Fill(trade_id="t-9", amount=1.0, price=2.0)]).to_bytes()
    lax_report = lax_report.replace(b'"amount":1.0', b'"amount":"1"')
    no_time = b'{"record_id":"p-n","account_id":"a","instrument_name":"BTC-PERPETUAL","size":1}'
    messages = [
        (Topic.POSITIONS, lax),
        (Topic.EXECUTION_REPORTS, lax_report),
        (Topic.POSITIONS, no_time),
        (Topic.POSITIONS, b'{"record_id":"p-bad","size":"x"}'),
        (Topic.EXECUTION_REPORTS, b"{not json"),
        (Topic.POSITIONS, None),
        *records(),
    ]
    b = batch(settings, messages)  # type: ignore[arg-type]
    assert b.malformed == 3
    assert [r[0] for r in b.rows["position_changes"]] == ["p-l", "p-n"]
    assert [r[1] for r in b.rows["executions"]] == ["t-9"]
    await write_batch(AsyncClickHouse(ch), b)
    reference = [(Topic.POSITIONS, lax), (Topic.EXECUTION_REPORTS, lax_report), *records()]
    for table, rows in python_rows(reference).items():
        ref.insert(table, rows, column_names=R.COLUMNS[table])
    # p-n's timestamp is "now" when validated: the reference gets the sink's own row.
    ref.insert("position_changes", b.rows["position_changes"][1:], R.COLUMNS["position_changes"])
    assert_same_tables(ch)
    lax_row = ch.query(
        "SELECT size, needs_review, version FROM position_changes WHERE record_id = 'p-l'"
    ).result_rows
    assert lax_row == [(1.5, True, 3)]


async def test_json_clickhouse_refuses_falls_back_to_python_rows(
    settings: Settings, ch: Client, ref: Client
) -> None:
    """A key given twice: pydantic keeps the last value, ClickHouse refuses the row. The
    sink must not stall on it: that table's messages of the batch go as Python rows."""
    twice = (
        b'{"record_id":"p-d","account_id":"a","instrument_name":"BTC-PERPETUAL","size":1,'
        b'"size":2,"timestamp":' + str(T0).encode() + b"}"
    )
    messages = [(Topic.POSITIONS, twice), *records()]
    b = batch(settings, messages)
    assert len(b.raw["position_changes_json"]) == 9
    aclient = AsyncClickHouse(ch)
    assert await write_batch(aclient, b) == {"position_changes": 9, "executions": 4}
    await write_batch(aclient, b)  # a retry is dropped on this path too
    assert ch.query("SELECT count() FROM position_changes").result_rows == [(9,)]
    assert ch.query("SELECT size FROM position_changes WHERE record_id = 'p-d'").result_rows == [
        (2.0,)
    ]
    for table, rows in python_rows(messages).items():
        ref.insert(table, rows, column_names=R.COLUMNS[table])
    assert_same_tables(ch)
