"""Position records through the sink's batches into embedded ClickHouse: audit trail,
current positions, daily statistics (replay-safe) and the SDK queries over them."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from oms.cli import positions as cli_positions
from oms.client import OrderClient
from oms.positions.ledger import Ledger
from oms.positions.math import PositionKind, kind_of
from oms.positions.queries import (
    calculate_position_statistics,
    get_current_positions,
    get_position_history,
    get_position_records,
)
from oms.schemas import (
    Direction,
    ExecutionReport,
    Fill,
    MarketTick,
    OrderEventType,
    OrderStatus,
    PositionRecord,
    ReportSource,
    Topic,
    now_ms,
)
from oms.settings import PositionSettings, Settings, SinkSettings
from oms.sinks.clickhouse.client import AsyncClickHouse, open_client
from oms.sinks.clickhouse.migrations import apply_migrations, sync_position_retention
from oms.sinks.writer import write_batch
from tests.sinks.factories import batch, order_event

DAY = 86_400_000
# 01:00 UTC three days ago: recent enough for the retention TTL, two whole days of records.
T0 = now_ms() - now_ms() % DAY - 3 * DAY + 3_600_000
FILLS = [  # (order, instrument, side, amount, price, day offset)
    ("o-1", "BTC-PERPETUAL", "buy", 100, 50_000.0, 0),
    ("o-1", "BTC-PERPETUAL", "buy", 200, 40_000.0, 0),
    ("o-2", "BTC-PERPETUAL", "sell", 150, 45_000.0, 0),
    ("o-3", "BTC-PERPETUAL", "sell", 400, 47_000.0, 1),
    ("o-4", "BTC_USDC-PERPETUAL", "buy", 2, 46_000.0, 1),
    ("o-4", "BTC_USDC-PERPETUAL", "buy", 1, 47_000.0, 1),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _records() -> tuple[list[PositionRecord], Ledger, list[ExecutionReport]]:
    ledger = Ledger({}, {}, lambda name: kind_of(name))
    records: list[PositionRecord] = []
    reports: list[ExecutionReport] = []
    for i, (order, instrument, side, amount, price, day) in enumerate(FILLS):
        ts = T0 + day * DAY + i * 1000
        report = ExecutionReport(
            report_id=f"r{i}", order_id=order, account_id="acct-1", source=ReportSource.RPC,
            instrument_name=instrument, direction=Direction(side),
            fills=[Fill(trade_id=f"BTC-{i + 1}", amount=amount, price=price, timestamp=ts,
                        fee=0.0001)],
        )  # fmt: skip
        records += ledger.apply_reports([report]).records
        reports.append(report)
    return records, ledger, reports


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        clickhouse_url=None,
        sink=SinkSettings(query_port=_free_port()),
        positions=PositionSettings(retention_days=30, audit_retention_days=400),
    )


async def test_records_views_statistics_and_queries(settings: Settings) -> None:
    records, ledger, reports = _records()
    ch = open_client(settings)
    try:
        apply_migrations(ch, settings.sink)
        sync_position_retention(ch, *settings.positions.ttl_days)
        ddl = str(ch.command("SHOW CREATE TABLE position_changes"))
        assert "'execution', 30, 400" in ddl.replace("\\'", "'")
        aclient = AsyncClickHouse(ch)
        rows = [(Topic.POSITIONS, r.to_bytes()) for r in records]
        marks = [
            MarketTick(instrument_name="BTC-PERPETUAL", timestamp=T0 - 5000, mark_price=48_000.0,
                       index_price=48_000.0),
            MarketTick(instrument_name="BTC-PERPETUAL", timestamp=T0 + 2 * DAY,
                       mark_price=50_000.0, index_price=50_000.0),
            MarketTick(instrument_name="BTC_USDC-PERPETUAL", timestamp=T0 + 2 * DAY,
                       mark_price=48_000.0, index_price=48_000.0),
        ]  # fmt: skip
        rows += [(Topic.MARKET_TICKS, t.to_bytes()) for t in marks]
        # o-1 asked for 300 and got all of it (fill ratio 1 on day 0).
        ev = order_event("o-1", 5, OrderStatus.FILLED, OrderEventType.FILLED, account_id="acct-1",
                         filled=20.0, created_at=T0)  # fmt: skip
        rows.append((Topic.ORDER_EVENTS, ev.to_bytes()))
        rows += [(Topic.EXECUTION_REPORTS, r.to_bytes()) for r in reports]
        await write_batch(aclient, batch(settings, rows))
        # A crash replay, cut differently: every record lands twice.
        await write_batch(aclient, batch(settings, rows[:3], start=100))
        await write_batch(aclient, batch(settings, rows[3:], start=103))
        assert ch.command("SELECT count() FROM position_changes") > len(records)
    finally:
        ch.close()  # the read path opens the engine itself

    btc = ledger.state("acct-1", "BTC-PERPETUAL")
    usdc = ledger.state("acct-1", "BTC_USDC-PERPETUAL")
    current = {p["instrument_name"]: p for p in await get_current_positions(settings, "acct-1")}
    assert current["BTC-PERPETUAL"]["size"] == btc.size == -250
    assert current["BTC-PERPETUAL"]["average_price"] == pytest.approx(btc.average_price)
    assert current["BTC-PERPETUAL"]["realized_pnl"] == pytest.approx(btc.realized_pnl)
    assert current["BTC-PERPETUAL"]["kind"] == PositionKind.INVERSE.value
    # Short 250 USD at 47,000 marked at 50,000: 200 * (1/50,000 - 1/47,000) < 0.
    assert current["BTC-PERPETUAL"]["unrealized_pnl"] == pytest.approx(
        -250 * (1 / 47_000 - 1 / 50_000)
    )
    assert current["BTC_USDC-PERPETUAL"]["unrealized_pnl"] == pytest.approx(
        3 * (48_000 - usdc.average_price)
    )

    history = await get_position_history(settings, "acct-1", "BTC-PERPETUAL")
    assert [r["trade_id"] for r in history] == ["BTC-1", "BTC-2", "BTC-3", "BTC-4"]
    assert [r["size"] for r in history] == [100, 300, 150, -250]
    assert [r["size_before"] for r in history] == [0, 100, 300, 150]
    latest = await get_position_records(settings, "acct-1", include_history=False)
    assert sorted((r["instrument_name"], r["version"]) for r in latest) == [
        ("BTC-PERPETUAL", 4),
        ("BTC_USDC-PERPETUAL", 2),
    ]
    day1 = await get_position_records(settings, "acct-1", start_time=T0 + DAY)
    assert len(day1) == 3

    stats = await calculate_position_statistics(settings, "acct-1", days=30)
    daily = {(d["instrument_name"], d["day"]): d for d in stats["daily"]}
    days = sorted({d for _, d in daily})
    first = daily[("BTC-PERPETUAL", days[0])]
    assert (first["fills"], first["turnover"]) == (3, 450)
    assert first["fill_ratio"] == pytest.approx(1.0)
    second = daily[("BTC-PERPETUAL", days[1])]
    assert second["fills"] == 1
    assert first["realized_pnl"] + second["realized_pnl"] == pytest.approx(btc.realized_pnl)
    assert daily[("BTC_USDC-PERPETUAL", days[1])]["turnover"] == pytest.approx(2 * 46_000 + 47_000)
    # Slippage against the mark when o-1 was requested (48,000): bought at 50,000 and 40,000.
    assert first["avg_slippage_bps"] == pytest.approx(
        ((50_000 - 48_000) + (40_000 - 48_000)) / 2 / 48_000 * 1e4
    )
    assert stats["totals"]["fills"] == len(FILLS)
    assert stats["exposure_by_currency"]["BTC"]["exposure_usd"] == pytest.approx(-250 + 3 * 48_000)
    # Money adds up within one unit only: BTC PnL with USD turnover (inverse), USDC for linear.
    money = {(t["currency"], t["turnover_unit"]): t for t in stats["totals_by_currency"]}
    assert sorted(money) == [("BTC", "USD"), ("USDC", "USDC")]
    assert (money["BTC", "USD"]["fills"], money["BTC", "USD"]["turnover"]) == (4, 850)
    assert money["BTC", "USD"]["realized_pnl"] == pytest.approx(btc.realized_pnl)
    assert money["USDC", "USDC"]["turnover"] == pytest.approx(2 * 46_000 + 47_000)
    usdc_position = stats["exposure_by_instrument"]["BTC_USDC-PERPETUAL"]
    assert usdc_position["pnl_currency"] == "USDC"
    assert money["USDC", "USDC"]["unrealized_pnl"] == pytest.approx(usdc_position["unrealized_pnl"])
    with cli_positions.console.capture() as printed:
        cli_positions.render_position_statistics(stats)
    assert "totals by currency" in printed.get() and "USDC" in printed.get()

    # The SDK's methods are these queries, defaulting to the client's account.
    sdk = OrderClient("acct-1", settings=settings, follow_events=False)
    assert await sdk.get_current_positions() == await get_current_positions(settings, "acct-1")
    assert len(await sdk.get_position_history("BTC-PERPETUAL")) == 4
    assert len(await sdk.get_position_records(include_history=False)) == 2
    assert len(await sdk.get_position_records(start_time=T0 + DAY, end_time=T0 + 2 * DAY)) == 3
    assert (await sdk.calculate_position_statistics())["totals"]["fills"] == len(FILLS)
