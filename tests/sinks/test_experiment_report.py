"""The experiment report: per-order figures from the stored orders and fills, and the
variants compared, on a history written by the sink's own writer into embedded ClickHouse.

Every expected figure below is worked out by hand from the prices, amounts and times the
test writes (see the comments), not read back from the report's code.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from oms.cli.main import app
from oms.schemas import (
    Direction,
    ExecutionReport,
    Fill,
    OrderEvent,
    OrderEventType,
    OrderRecord,
    OrderStatus,
    OrderType,
    ReportSource,
    Topic,
)
from oms.settings import Settings, get_settings
from oms.sinks.clickhouse.client import AsyncClickHouse, open_client
from oms.sinks.clickhouse.migrations import apply_migrations
from oms.sinks.experiments import REPORT_SQL, OrderOutcome, build_report, experiment_report
from oms.sinks.scope import Scope, prepare_statement
from oms.sinks.writer import write_batch
from tests.sinks.factories import T0, batch

MARK = 50_000.0
EXP = "exec-ab"


def snapshot_event(
    order_id: str,
    *,
    direction: Direction = Direction.BUY,
    amount: float = 20.0,
    filled: float = 0.0,
    average: float | None = None,
    status: OrderStatus = OrderStatus.FILLED,
    metadata: dict[str, Any],
    version: int = 3,
) -> OrderEvent:
    order = OrderRecord(
        order_id=order_id,
        request_id=f"req-{order_id}",
        account_id="acct-1",
        instrument_name="BTC-PERPETUAL",
        direction=direction,
        order_type=OrderType.MARKET,
        amount=amount,
        status=status,
        filled_amount=filled,
        average_price=average,
        metadata=metadata,
        created_at=T0 - 500,  # the client's clock: before acceptance (arrival_at)
        updated_at=T0 + 10_000,
        version=version,
    )
    return OrderEvent(
        event_id=f"{order_id}:{version}",
        event_type=OrderEventType.FILLED,
        order_id=order_id,
        account_id="acct-1",
        instrument_name="BTC-PERPETUAL",
        status=status,
        filled_amount=filled,
        version=version,
        timestamp=T0 + 10_000,
        order=order,
    )


def fills(order_id: str, *trades: tuple[float, float, float, int]) -> ExecutionReport:
    """A report with fills (amount, price, fee, ms after T0)."""
    return ExecutionReport(
        report_id=f"{order_id}:fills",
        order_id=order_id,
        account_id="acct-1",
        source=ReportSource.SUBSCRIPTION,
        instrument_name="BTC-PERPETUAL",
        exchange_timestamp=T0,
        fills=[
            Fill(trade_id=f"{order_id}-t{i}", amount=a, price=p, fee=f, timestamp=T0 + ms)
            for i, (a, p, f, ms) in enumerate(trades)
        ],
    )


def arm(variant: str, experiment: str = EXP) -> dict[str, Any]:
    return {"experiment": experiment, "variant": variant, "arrival_mark": MARK, "arrival_at": T0}


EVENTS, REPORTS = Topic.ORDER_EVENTS, Topic.EXECUTION_REPORTS
TWAP = {"algo": "twap"}


def child(parent: str, index: int, price: float) -> OrderEvent:
    """A filled 10-unit TWAP slice of ``parent``."""
    meta: dict[str, Any] = {"parent_id": parent, "twap_slice": index}
    return snapshot_event(f"{parent}c{index}", amount=10, filled=10, average=price, metadata=meta)


HISTORY: list[tuple[Topic, OrderEvent | ExecutionReport]] = [
    # plain p1: buy 20, fills 10 @ 50000 and 10 @ 50020 (avg 50010: +2 bps), last at +1 s,
    # fees 0.001 + 0.001.
    (EVENTS, snapshot_event("p1", filled=20, average=50_010.0, metadata=arm("plain"))),
    (REPORTS, fills("p1", (10, 50_000.0, 0.001, 400), (10, 50_020.0, 0.001, 1_000))),
    # plain p2: buy 20 @ 50020 (+4 bps) at +3 s, fee 0.003.
    (EVENTS, snapshot_event("p2", filled=20, average=50_020.0, metadata=arm("plain"))),
    (REPORTS, fills("p2", (20, 50_020.0, 0.003, 3_000))),
    # plain p3: sell 20 @ 49970 (30 below the mark: +6 bps, worse for a sell) at +2 s, fee 0.002.
    (
        EVENTS,
        snapshot_event(
            "p3", direction=Direction.SELL, filled=20, average=49_970.0, metadata=arm("plain")
        ),
    ),
    (REPORTS, fills("p3", (20, 49_970.0, 0.002, 2_000))),
    # twap t1: parent buy 20 filled by two children, 10 @ 50000 (+2 s) and 10 @ 50010
    # (+6 s): avg 50005 (+1 bps), 6 s to fill, fees 0.0005 + 0.0005 on the children.
    (EVENTS, snapshot_event("t1", filled=20, average=50_005.0, metadata={**arm("twap"), **TWAP})),
    (EVENTS, child("t1", 0, 50_000.0)),
    (EVENTS, child("t1", 1, 50_010.0)),
    (REPORTS, fills("t1c0", (10, 50_000.0, 0.0005, 2_000))),
    (REPORTS, fills("t1c1", (10, 50_010.0, 0.0005, 6_000))),
    # twap t2: half filled then cancelled: 10 of 20 @ 50000 (0 bps) by a child, fee 0.0005;
    # fill ratio 0.5, no time to fill.
    (
        EVENTS,
        snapshot_event(
            "t2",
            filled=10,
            average=50_000.0,
            status=OrderStatus.CANCELLED,
            metadata={**arm("twap"), **TWAP},
        ),
    ),
    (EVENTS, child("t2", 0, 50_000.0)),
    (REPORTS, fills("t2c0", (10, 50_000.0, 0.0005, 4_000))),
    # twap t3: rejected, nothing filled (fill ratio 0).
    (EVENTS, snapshot_event("t3", status=OrderStatus.REJECTED, metadata={**arm("twap"), **TWAP})),
    # Not in the experiment: another experiment's order, and one without any.
    (EVENTS, snapshot_event("x1", filled=20, average=60_000.0, metadata=arm("plain", "other"))),
    (REPORTS, fills("x1", (20, 60_000.0, 1.0, 9_000))),
    (EVENTS, snapshot_event("x2", filled=20, average=60_000.0, metadata={})),
]

# By hand, from the comments above.
EXPECTED = {
    "plain": {
        "orders": 3,
        "rejected": 0,
        "filled": 3,
        "fill_ratio": [1.0, 1.0, 1.0],
        "time_to_fill_s": [1.0, 3.0, 2.0],
        "slippage_bps": [2.0, 4.0, 6.0],
        "fee": [0.002, 0.003, 0.002],
    },
    "twap": {
        "orders": 3,
        "rejected": 1,
        "filled": 1,
        "fill_ratio": [1.0, 0.5, 0.0],
        "time_to_fill_s": [6.0],
        "slippage_bps": [1.0, 0.0],
        "fee": [0.001, 0.0005],
    },
}


@pytest.fixture
async def history(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path, clickhouse_url=None)
    client = open_client(settings)
    try:
        apply_migrations(client, settings.sink)
        records = [(topic, record.to_bytes()) for topic, record in HISTORY]
        await write_batch(AsyncClickHouse(client), batch(settings, records))
    finally:
        client.close()
    return settings


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


async def test_the_report_reads_each_variant_from_the_history(history: Settings) -> None:
    report = await experiment_report(history, EXP)
    assert report.baseline == "plain"  # not configured: by name
    by_name = {v.variant: v for v in report.variants}
    assert set(by_name) == {"plain", "twap"}
    for name, expected in EXPECTED.items():
        summary = by_name[name]
        assert (summary.orders, summary.rejected, summary.filled) == (
            expected["orders"],
            expected["rejected"],
            expected["filled"],
        )
        for metric in ("fill_ratio", "time_to_fill_s", "slippage_bps", "fee"):
            values = expected[metric]
            assert isinstance(values, list)
            est = summary.metrics[metric]
            assert est.n == len(values), (name, metric)
            assert est.mean == pytest.approx(_mean(values)), (name, metric)
    # Plain slippage by hand: mean 4, sample variance 4, se sqrt(4/3), t(0.975, 2) = 4.3027.
    slip = by_name["plain"].metrics["slippage_bps"]
    assert slip.low == pytest.approx(4 - 4.3027 * math.sqrt(4 / 3), abs=1e-3)
    assert slip.high == pytest.approx(4 + 4.3027 * math.sqrt(4 / 3), abs=1e-3)
    # twap - plain slippage: mean 0.5 - 4 = -3.5.
    [diff] = [c for c in report.comparisons if c.metric == "slippage_bps"]
    assert diff.variant == "twap" and diff.baseline == "plain"
    assert diff.difference.difference == pytest.approx(-3.5)
    assert diff.difference.verdict in ("significant", "not yet significant")


def test_the_cli_prints_the_report_as_json(
    history: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMS_DATA_DIR", str(history.data_dir))
    twap = {
        "name": "twap",
        "weight": 1,
        "algo": "twap",
        "params": {"twap_duration": 6, "twap_slices": 3},
    }
    plain = {"name": "plain", "weight": 1, "algo": "none"}
    configured = [{"name": EXP, "variants": [twap, plain]}]
    monkeypatch.setenv("OMS_EXPERIMENTS", orjson.dumps(configured).decode())
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["experiments", "report", EXP, "--json"])
        table = CliRunner().invoke(app, ["experiments", "report", EXP])
        missing = CliRunner().invoke(app, ["experiments", "report", EXP, "--baseline", "nope"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    body = orjson.loads(result.stdout)
    # Configured: variants in the settings' order, the first is the baseline.
    assert body["baseline"] == "twap" and [v["variant"] for v in body["variants"]] == [
        "twap",
        "plain",
    ]
    fill = next(c for c in body["comparisons"] if c["metric"] == "fill_ratio")
    # plain - twap fill ratio: 1 - 0.5 = 0.5
    assert fill["variant"] == "plain" and fill["difference"] == pytest.approx(0.5)
    assert table.exit_code == 0 and "against twap" in table.stdout
    assert missing.exit_code == 1 and "'nope' has no orders" in missing.output


def outcome(variant: str, slippage_bps: float, filled: float = 20.0) -> OrderOutcome:
    """A bought order whose average price is ``slippage_bps`` above the mark."""
    return OrderOutcome(
        order_id=f"{variant}-{slippage_bps}",
        variant=variant,
        direction="buy",
        amount=20.0,
        filled_amount=filled,
        average_price=MARK * (1 + slippage_bps / 10_000),
        status="filled",
        arrival_mark=MARK,
        arrival_at=T0,
        created_ms=T0,
        fill_count=1,
        fees=0.0,
        last_fill_ms=T0 + 1_000,
    )


def test_a_clear_difference_is_reported_significant() -> None:
    # a: 1..5 bps, b: 6..10 bps: difference 5, Welch interval 5 +- 2.306 (df 8)
    rows = [outcome("a", s) for s in (1, 2, 3, 4, 5)] + [outcome("b", s) for s in (6, 7, 8, 9, 10)]
    report = build_report(EXP, rows)
    [slip] = [c for c in report.comparisons if c.metric == "slippage_bps"]
    assert slip.difference.difference == pytest.approx(5.0)
    assert slip.difference.low == pytest.approx(5 - 2.306004, abs=1e-4)
    assert slip.difference.verdict == "significant"
    # Every order filled in both: fill ratios are equal constants, no difference.
    [fill] = [c for c in report.comparisons if c.metric == "fill_ratio"]
    assert fill.difference.difference == 0.0 and fill.difference.verdict == "not yet significant"


def test_a_small_difference_is_not_yet_significant() -> None:
    # a: 1..5 bps, b: 2..6 bps: difference 1, interval 1 +- 2.306 contains 0
    rows = [outcome("a", s) for s in (1, 2, 3, 4, 5)] + [outcome("b", s) for s in (2, 3, 4, 5, 6)]
    [slip] = [c for c in build_report(EXP, rows).comparisons if c.metric == "slippage_bps"]
    assert slip.difference.difference == pytest.approx(1.0)
    assert slip.difference.significant is False
    assert slip.difference.verdict == "not yet significant"


def test_the_cli_lists_experiments_and_refuses_bad_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    twap = {"name": "twap", "weight": 3, "algo": "twap", "params": {"twap_duration": 6}}
    plain = {"name": "plain", "weight": 1, "algo": "none"}
    good = [
        {"name": EXP, "variants": [plain, {**twap, "params": {**twap["params"], "twap_slices": 3}}]}
    ]
    bad = [{"name": EXP, "variants": [plain, twap]}]  # twap_slices missing
    runner = CliRunner()
    try:
        monkeypatch.setenv("OMS_EXPERIMENTS", orjson.dumps(good).decode())
        get_settings.cache_clear()
        listed = runner.invoke(app, ["experiments", "list"])
        monkeypatch.setenv("OMS_EXPERIMENTS", orjson.dumps(bad).decode())
        get_settings.cache_clear()
        refused = runner.invoke(app, ["experiments", "list"])
    finally:
        get_settings.cache_clear()
    assert listed.exit_code == 0, listed.output
    assert "exec-ab" in listed.stdout and "75.0%" in listed.stdout and "25.0%" in listed.stdout
    assert refused.exit_code == 1
    assert "experiment 'exec-ab', variant 'twap'" in refused.output
    assert "twap_slices" in refused.output


def test_a_desk_reads_the_report_of_its_own_accounts_only() -> None:
    # The report's SQL passes the desk scoping of ad-hoc SQL: each table it reads is
    # filtered to the desk's accounts.
    scoped = prepare_statement(REPORT_SQL, Scope("desk-1", frozenset({"acct-1"})))
    assert scoped.count("account_id IN ('acct-1')") == 3
