"""Venues in ClickHouse, on embedded chDB through the sink's own batches: two venues' rows
of one account+instrument stay two positions, the per-currency and per-instrument views
sum them, statistics carry the venue, desk scoping covers the new views, and migration 8
upgrades a database the earlier migrations built (its rows were at the default venue)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from clickhouse_connect.driver.client import Client
from typer.testing import CliRunner

from oms.cli.positions import positions_app
from oms.positions.ledger import Ledger
from oms.positions.math import kind_of
from oms.positions.queries import (
    calculate_position_statistics,
    get_current_positions,
    get_positions_by_currency,
    get_positions_by_instrument,
)
from oms.schemas import (
    DEFAULT_VENUE,
    Direction,
    ExecutionReport,
    Fill,
    MarketTick,
    OrderEvent,
    OrderEventType,
    OrderStatus,
    PositionRecord,
    ReportSource,
    Topic,
    now_ms,
)
from oms.settings import Settings, get_settings
from oms.sinks.clickhouse.client import AsyncClickHouse, open_client
from oms.sinks.clickhouse.migrations import (
    MIGRATIONS,
    SCHEMA_MIGRATIONS,
    VENUE_KEYED_TABLES,
    apply_migrations,
)
from oms.sinks.clickhouse.rows import COLUMNS, order_row
from oms.sinks.queries import get_order_history
from oms.sinks.query import execute_readonly
from oms.sinks.scope import Scope
from oms.sinks.writer import write_batch

from .factories import batch, order_event

DAY = 86_400_000
# 01:00 UTC yesterday: inside every "last N days" window.
T0 = now_ms() - now_ms() % DAY - DAY + 3_600_000
OTHER = "second"


def report(
    seq: int,
    order: str,
    side: str,
    amount: float,
    price: float,
    *,
    venue: str = DEFAULT_VENUE,
    account: str = "acct-1",
    instrument: str = "BTC-PERPETUAL",
) -> ExecutionReport:
    return ExecutionReport(
        report_id=f"r{seq}", order_id=order, account_id=account, venue=venue,
        source=ReportSource.RPC, instrument_name=instrument, direction=Direction(side),
        fills=[Fill(trade_id=f"T-{seq}", amount=amount, price=price, timestamp=T0 + seq,
                    fee=0.0001)],
    )  # fmt: skip


def at_venue(
    event: OrderEvent, venue: str, submitted_after_ms: int, amount: float = 20.0
) -> OrderEvent:
    """``event`` whose order snapshot trades at ``venue``, accepted there after a delay."""
    assert event.order is not None
    order = event.order.model_copy(
        update={"venue": venue, "amount": amount,
                "submitted_at": event.order.created_at + submitted_after_ms},
    )  # fmt: skip
    return event.model_copy(update={"order": order})


def two_venue_records() -> tuple[list[tuple[Topic, bytes]], Ledger]:
    """acct-1: BTC-PERPETUAL long 100 at Deribit and short 30 at the other venue, plus
    2 BTC_USDC-PERPETUAL at the other venue; acct-2: 500 BTC-PERPETUAL at Deribit."""
    ledger = Ledger({}, {}, kind_of)
    reports = [
        report(1, "o-1", "buy", 100, 50_100.0),  # 20 bps worse than the 50,000 mark
        report(2, "o-2", "sell", 30, 50_050.0, venue=OTHER),  # 10 bps better
        report(3, "o-3", "buy", 2, 48_000.0, venue=OTHER, instrument="BTC_USDC-PERPETUAL"),
        report(4, "o-4", "buy", 500, 50_000.0, account="acct-2"),
    ]
    records: list[PositionRecord] = []
    for r in reports:
        records += ledger.apply_reports([r]).records
    events = [
        # o-1 asked 100 and got it at Deribit, accepted after 40 ms.
        at_venue(order_event("o-1", 5, OrderStatus.FILLED, OrderEventType.FILLED,
                             filled=100.0, created_at=T0), DEFAULT_VENUE, 40, 100.0),
        # o-2 asked 60 and got 30 at the other venue, accepted after 250 ms.
        at_venue(order_event("o-2", 4, OrderStatus.PARTIALLY_FILLED,
                             OrderEventType.PARTIALLY_FILLED, filled=30.0, created_at=T0),
                 OTHER, 250, 60.0),
    ]  # fmt: skip
    ticks = [
        MarketTick(instrument_name="BTC-PERPETUAL", timestamp=T0 - 5_000, mark_price=50_000.0,
                   index_price=50_000.0),
        MarketTick(instrument_name="BTC_USDC-PERPETUAL", timestamp=T0 - 5_000,
                   mark_price=48_000.0, index_price=48_000.0),
    ]  # fmt: skip
    rows = [(Topic.POSITIONS, r.to_bytes()) for r in records]
    rows += [(Topic.EXECUTION_REPORTS, r.to_bytes()) for r in reports]
    rows += [(Topic.ORDER_EVENTS, e.to_bytes()) for e in events]
    rows += [(Topic.MARKET_TICKS, t.to_bytes()) for t in ticks]
    return rows, ledger


def rows_of(client: Client, sql: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in client.query(sql).result_rows]


async def test_two_venues_stay_apart_and_sum_per_currency(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows, ledger = two_venue_records()
    ch = open_client(settings)
    try:
        apply_migrations(ch, settings.sink)
        aclient = AsyncClickHouse(ch)
        await write_batch(aclient, batch(settings, rows))
        # A crash replay, cut differently: every row lands twice.
        await write_batch(aclient, batch(settings, rows[:3], start=100))
        await write_batch(aclient, batch(settings, rows[3:], start=103))
        ch.command("OPTIMIZE TABLE positions_current FINAL")  # a merge keeps venues apart
        assert rows_of(
            ch,
            "SELECT venue, size FROM positions_current FINAL WHERE account_id = 'acct-1' "
            "AND instrument_name = 'BTC-PERPETUAL' ORDER BY venue",
        ) == [(DEFAULT_VENUE, 100.0), (OTHER, -30.0)]
        assert rows_of(
            ch, "SELECT order_id, venue FROM executions FINAL ORDER BY order_id"
        ) == [("o-1", DEFAULT_VENUE), ("o-2", OTHER), ("o-3", OTHER), ("o-4", DEFAULT_VENUE)]
        assert rows_of(ch, "SELECT DISTINCT order_id, venue FROM order_events ORDER BY 1") == [
            ("o-1", DEFAULT_VENUE),
            ("o-2", OTHER),
        ]
        assert rows_of(
            ch,
            "SELECT venue, fills FROM position_daily_stats WHERE account_id = 'acct-1' "
            "AND instrument_name = 'BTC-PERPETUAL' ORDER BY venue",
        ) == [(DEFAULT_VENUE, 1), (OTHER, 1)]
    finally:
        ch.close()  # the read path opens the engine itself

    current = await get_current_positions(settings, "acct-1", "BTC-PERPETUAL")
    assert [(p["venue"], p["size"]) for p in current] == [(DEFAULT_VENUE, 100.0), (OTHER, -30.0)]
    assert ledger.state("acct-1", "BTC-PERPETUAL", OTHER).size == -30
    only_other = await get_current_positions(settings, "acct-1", venue=OTHER)
    assert {p["instrument_name"] for p in only_other} == {"BTC-PERPETUAL", "BTC_USDC-PERPETUAL"}

    by_instrument = {
        r["instrument_name"]: r for r in await get_positions_by_instrument(settings, "acct-1")
    }
    perpetual = by_instrument["BTC-PERPETUAL"]
    assert (perpetual["net_size"], perpetual["gross_size"]) == (70.0, 130.0)
    assert perpetual["venues"] == [DEFAULT_VENUE, OTHER]
    assert by_instrument["BTC_USDC-PERPETUAL"]["venues"] == [OTHER]

    by_currency = await get_positions_by_currency(settings)
    assert [(r["account_id"], r["currency"]) for r in by_currency] == [
        ("acct-1", "BTC"),
        ("acct-2", "BTC"),
    ]
    btc = by_currency[0]
    # Inverse contracts are USD already; the linear one is 2 BTC at the 48,000 mark.
    assert btc["net_exposure_usd"] == pytest.approx(100 - 30 + 2 * 48_000)
    assert btc["gross_exposure_usd"] == pytest.approx(100 + 30 + 2 * 48_000)
    assert (btc["positions"], btc["unpriced_positions"]) == (3, 0)
    assert btc["venues"] == [DEFAULT_VENUE, OTHER]
    assert btc["instruments"] == ["BTC-PERPETUAL", "BTC_USDC-PERPETUAL"]

    stats = await calculate_position_statistics(settings, "acct-1", days=30)
    execution = {r["venue"]: r for r in stats["execution_by_venue"]}
    assert execution[DEFAULT_VENUE]["fill_ratio"] == pytest.approx(1.0)
    assert execution[OTHER]["fill_ratio"] == pytest.approx(0.5)
    assert execution[DEFAULT_VENUE]["avg_submit_latency_ms"] == pytest.approx(40)
    assert execution[OTHER]["avg_submit_latency_ms"] == pytest.approx(250)
    assert execution[DEFAULT_VENUE]["avg_slippage_bps"] == pytest.approx(20)
    assert execution[OTHER]["avg_slippage_bps"] == pytest.approx(-10)
    daily = {(d["instrument_name"], d["venue"]): d for d in stats["daily"]}
    assert daily["BTC-PERPETUAL", OTHER]["fill_ratio"] == pytest.approx(0.5)
    assert daily["BTC-PERPETUAL", DEFAULT_VENUE]["avg_slippage_bps"] == pytest.approx(20)
    assert stats["exposure_by_venue"][OTHER]["exposure_usd"] == pytest.approx(-30 + 96_000)
    assert stats["exposure_by_instrument"]["BTC-PERPETUAL"]["size"] == 70
    one_venue = await calculate_position_statistics(settings, "acct-1", venue=OTHER)
    assert {d["venue"] for d in one_venue["daily"]} == {OTHER}
    assert [r["venue"] for r in one_venue["execution_by_venue"]] == [OTHER]
    assert {p["venue"] for p in one_venue["positions"]} == {OTHER}
    history = await get_order_history(settings, "acct-1", venue=OTHER)
    assert [o["order_id"] for o in history] == ["o-2"]

    # The CLI prints the same aggregate (settings from the environment, as for a user).
    monkeypatch.setenv("OMS_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    try:
        # In a thread: the commands run their own event loop.
        printed = await asyncio.to_thread(
            CliRunner().invoke,
            positions_app, ["list", "--by-currency", "--account", "acct-1", "--json"],
        )
        table = await asyncio.to_thread(
            CliRunner().invoke, positions_app, ["stats", "--account", "acct-1"]
        )
    finally:
        get_settings.cache_clear()
    assert printed.exit_code == 0, printed.output
    assert orjson.loads(printed.output) == [by_currency[0]]
    assert table.exit_code == 0 and "execution by venue" in table.output, table.output

    # A desk sees its own accounts' aggregates only, whatever view it reads.
    reader = open_client(settings, readonly=True)
    try:
        desk = Scope(desk="desk-2", accounts=frozenset({"acct-2"}))
        for view in ("positions_by_currency", "positions_by_instrument", "positions_marked"):
            result = execute_readonly(reader, f"SELECT account_id FROM {view}", scope=desk)
            assert {r["account_id"] for r in result.records()} == {"acct-2"}
    finally:
        reader.close()


def _migrate_to(client: Client, settings: Settings, last: int) -> None:
    """Apply migrations 1..``last`` as a sink of that version did."""
    client.command(SCHEMA_MIGRATIONS)
    for migration in MIGRATIONS:
        if migration.version > last:
            break
        for statement in migration.statements(settings.sink):
            client.command(statement)
        client.insert(
            "schema_migrations", [[migration.version, migration.name]],
            column_names=["version", "name"],
        )  # fmt: skip


def _old_json(record: ExecutionReport | PositionRecord) -> bytes:
    """A message as written before venues existed (no ``venue`` field)."""
    data = record.model_dump(mode="json", exclude={"venue"})
    return orjson.dumps(data)


async def test_migration_8_upgrades_a_database_of_the_previous_migrations(
    settings: Settings,
) -> None:
    ledger = Ledger({}, {}, kind_of)
    old_report = report(1, "o-1", "buy", 100, 50_000.0)
    old_records = ledger.apply_reports([old_report]).records
    old_event = order_event("o-1", 5, OrderStatus.FILLED, OrderEventType.FILLED, filled=100.0)
    assert old_event.order is not None
    ch = open_client(settings)
    try:
        _migrate_to(ch, settings, 7)
        assert "venue" not in str(ch.command("SHOW CREATE TABLE positions_current"))
        # Rows as a sink before migration 8 wrote them: its columns, its JSON path.
        old_orders = [c for c in COLUMNS["orders"] if c != "venue"]
        ch.insert("orders", [order_row(old_event.order, old_event.event_id)[:-1]],
                  column_names=old_orders)  # fmt: skip
        json_settings = {"input_format_skip_unknown_fields": 1}
        for table, message in [
            ("position_changes_json", _old_json(old_records[0])),
            ("executions_json", _old_json(old_report)),
        ]:
            ch.raw_insert(table, insert_block=message, fmt="JSONEachRow", settings=json_settings)

        assert apply_migrations(ch, settings.sink) == [8]
        # Every existing row now reads the default venue, in tables and views alike.
        for table in ("orders", "executions", "position_changes", "positions_current",
                      "positions", "position_daily_stats"):  # fmt: skip
            assert rows_of(ch, f"SELECT DISTINCT venue FROM {table}") == [(DEFAULT_VENUE,)], table
        keys = dict(rows_of(ch, "SELECT name, sorting_key FROM system.tables "
                                "WHERE database = currentDatabase()"))  # fmt: skip
        for table, key in VENUE_KEYED_TABLES.items():
            assert keys[table] == f"{key}, venue"
        # A crash after the statements but before schema_migrations recorded them: the
        # sink runs them again at its next start, harmlessly.
        for statement in MIGRATIONS[-1].statements(settings.sink):
            ch.command(statement)

        # The same position at another venue, written by today's sink, stays its own.
        new_report = report(2, "o-2", "sell", 30, 50_050.0, venue=OTHER)
        new_records = ledger.apply_reports([new_report]).records
        rows = [(Topic.POSITIONS, r.to_bytes()) for r in new_records]
        rows.append((Topic.EXECUTION_REPORTS, new_report.to_bytes()))
        await write_batch(AsyncClickHouse(ch), batch(settings, rows))
        ch.command("OPTIMIZE TABLE positions_current FINAL")
        ch.command("OPTIMIZE TABLE position_daily FINAL")
        assert rows_of(ch, "SELECT venue, size FROM positions ORDER BY venue") == [
            (DEFAULT_VENUE, 100.0),
            (OTHER, -30.0),
        ]
        assert rows_of(ch, "SELECT venue, fills FROM position_daily_stats ORDER BY venue") == [
            (DEFAULT_VENUE, 1),
            (OTHER, 1),
        ]
        assert rows_of(ch, "SELECT net_size, venues FROM positions_by_instrument") == [
            (70.0, [DEFAULT_VENUE, OTHER])
        ]
    finally:
        ch.close()
