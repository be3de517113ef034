"""Execution tuned from history: a seeded synthetic history made by the paper exchange's
matching engine (``oms bench history``'s generator), written by the sink's writer into
embedded ClickHouse, counted by the tuning SQL, picked by the tuner, applied as plugin
settings the registry loads; plus the tuner's rules on hand-made counts."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from oms.algos import chase
from oms.algos.chase import ChaseStrategy, Offset
from oms.algos.registry import StrategyRegistry
from oms.algos.tuner import (
    CHASE_OFFSET,
    RETRY_SCHEDULE,
    TWAP_MAX_SLICE,
    TunerLimits,
    pick_offset,
    retry_picks,
    settings_patch,
    slice_picks,
)
from oms.algos.tuning_math import (
    RetryBucket,
    SliceBucket,
    delay_bucket,
    retry_metric_name,
    wilson,
)
from oms.algos.twap import TwapStrategy
from oms.cli import tune as tune_cli
from oms.cli.main import app
from oms.orders.params import TwapParams
from oms.schemas import (
    CommandType,
    Direction,
    InstrumentSpec,
    MarketTick,
    MetricsSample,
    OrderRecord,
    OrderRequest,
    OrderType,
    ReasonCode,
    Topic,
)
from oms.settings import LifecycleSettings, Settings, TuningSettings, get_settings
from oms.sinks.tuning import tuning_report
from oms.streams.execution import retry_wait
from oms_dev.benchmarks.history import (
    History,
    HistoryConfig,
    simulate,
    write_history,
    write_history_async,
)

PERP = "BTC-PERPETUAL"
KINDS = ("attempts", "succeeded")
T0 = 1_790_000_000_000


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, clickhouse_url=None)


def _instrument_pick(report: object) -> object:
    picks = [p for p in report.picks if p.figure == CHASE_OFFSET and "hour" not in p.scope]  # type: ignore[attr-defined]
    assert len(picks) == 1
    return picks[0]


def test_the_tuner_picks_the_offset_the_engine_filled_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Synchronous: the CLI below runs its own event loop.
    history = simulate(HistoryConfig(rounds=160, slice_rounds=160, seed=11))
    best = history.best_offset()
    assert best == -2.0  # two bps inside the spread: the engine filled it most often
    settings = _settings(tmp_path)
    write_history(settings, history)

    _, report = asyncio.run(tuning_report(settings))
    pick = _instrument_pick(report)
    assert pick.picked and pick.value == {"offset_bps": best, "tick_size": 0.5}  # type: ignore[attr-defined]
    assert "fills best" in pick.reason and "clear of the next best" in pick.reason  # type: ignore[attr-defined]
    evidence = {e["offset_bps"]: e for e in pick.evidence}  # type: ignore[attr-defined]
    assert set(evidence) == {-2.0, 0.0, 2.0, 5.0}
    for offset, (n, k) in history.by_offset.items():
        # SQL counts what the engine did: every placed order, every fill within the horizon.
        assert (evidence[offset]["n"], evidence[offset]["successes"]) == (n, k)

    # `oms tune show --json` says the same, and `apply` writes settings the registry loads.
    monkeypatch.setenv("OMS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("OMS_TUNING__MAX_SLIPPAGE_BPS", "1.0")
    strategies = tmp_path / "strategies.json"
    strategies.write_text(json.dumps({"chase": {"settings": {"requote_again_ms": 1000}}}))
    monkeypatch.setattr(tune_cli.console, "width", 400)  # one line per table row
    get_settings.cache_clear()
    try:
        shown = CliRunner().invoke(app, ["tune", "show", "--json"])
        table = CliRunner().invoke(app, ["tune", "show"])
        applied = CliRunner().invoke(app, ["tune", "apply", "--file", str(strategies)])
    finally:
        get_settings.cache_clear()
    assert shown.exit_code == 0, shown.output
    out = orjson.loads(shown.output)
    shown_pick = next(
        p for p in out["picks"] if p["figure"] == CHASE_OFFSET and "hour" not in p["scope"]
    )
    assert shown_pick["value"]["offset_bps"] == best and shown_pick["reason"] == pick.reason  # type: ignore[attr-defined]
    assert "retry.schedule" in out["unavailable"]
    slice_pick = next(p for p in out["picks"] if p["figure"] == TWAP_MAX_SLICE)
    assert slice_pick["picked"], slice_pick["reason"]
    assert table.exit_code == 0 and pick.reason in table.output  # type: ignore[attr-defined]
    assert applied.exit_code == 0, applied.output

    registry = StrategyRegistry(config_file=strategies)
    registry.refresh()
    # Each version runs as a private copy of its module: its own classes, read by attribute.
    loaded = registry.current("chase")
    assert loaded is not None and type(loaded.strategy).__name__ == "ChaseStrategy"
    strategy: Any = loaded.strategy
    assert strategy.requote_again_ms == 1000  # the file's other settings are kept
    # The instrument's own pick holds in every hour without one of its own. Which hours of
    # the day the simulated history covers follows the wall clock, so look for such an hour.
    tick_size, _, hours = strategy.offsets[PERP]
    quiet_hour = next(h for h in range(24) if h not in hours)
    offset = strategy.offset(PERP, quiet_hour * 3_600_000)
    assert (offset.bps, offset.tick_size, tick_size) == (best, 0.5, 0.5)
    twap = registry.current("twap")
    assert twap is not None
    twap_strategy: Any = twap.strategy
    assert twap_strategy.max_slice_amount[PERP] == slice_pick["value"]["max_slice_amount"]


async def test_with_too_few_samples_the_tuner_declines(tmp_path: Path) -> None:
    history = simulate(HistoryConfig(rounds=20, slice_rounds=10, seed=11))
    settings = _settings(tmp_path)
    await write_history_async(settings, history)
    _, report = await tuning_report(settings)
    pick = _instrument_pick(report)
    assert not pick.picked  # type: ignore[attr-defined]
    assert "too few samples" in pick.reason  # type: ignore[attr-defined]
    assert all(not p.picked for p in report.picks)
    assert settings_patch(report) == {}


async def test_without_recorded_touch_the_stored_ticks_serve(tmp_path: Path) -> None:
    """Orders placed before intake recorded the touch: the market ticks give it (ASOF), the
    pick is the same, but with no tick size it is shown and not applied."""
    history = simulate(HistoryConfig(rounds=160, slice_rounds=0, seed=11, record_touch=False))
    settings = _settings(tmp_path)
    await write_history_async(settings, history)
    _, report = await tuning_report(settings)
    pick = _instrument_pick(report)
    assert pick.value == {"offset_bps": -2.0}  # type: ignore[attr-defined]
    assert "chase" not in settings_patch(report)


async def test_retry_outcomes_sampled_by_workers_make_the_retry_schedule(tmp_path: Path) -> None:
    """Cumulative counters in the workers' metric samples (as the executor counts them), a
    restart under the same worker name counted as a reset."""
    at_1s = [retry_metric_name("deribit", "rate_limited", 1.0, k) for k in KINDS]
    at_2s = [retry_metric_name("deribit", "rate_limited", 2.0, k) for k in KINDS]
    samples = [
        ("w-a", 1, dict(zip(at_1s, (10.0, 6.0), strict=True))),
        ("w-a", 2, dict(zip(at_1s, (20.0, 12.0), strict=True))),
        ("w-a", 3, dict(zip(at_1s, (5.0, 5.0), strict=True))),  # restarted: counts from 0
        ("w-b", 1, dict(zip(at_2s, (30.0, 28.0), strict=True))),
        ("w-b", 2, {"stage.sent.count": 4.0}),  # other metrics are not read
    ]
    records = [
        (Topic.METRICS, MetricsSample(worker=w, timestamp=T0 + i * 10_000, values=v))
        for w, i, v in samples
    ]
    settings = Settings(
        data_dir=tmp_path,
        clickhouse_url=None,
        tuning=TuningSettings(min_samples=20),
        lifecycle=LifecycleSettings(retry_delay=0.5, retry_max_delay=10.0, retry_attempts=2),
    )
    await write_history_async(settings, History(records=records))
    stats, report = await tuning_report(settings)
    assert stats.retries == [
        RetryBucket("deribit", "rate_limited", 1.0, 25, 17),
        RetryBucket("deribit", "rate_limited", 2.0, 30, 28),
    ]
    [pick] = [p for p in report.picks if p.figure == RETRY_SCHEDULE]
    # 17/25 per 1 s = 0.68/s beats 28/30 per 2 s = 0.47/s; both fit in two attempts.
    assert pick.value == [1.0, 2.0] and "0.68/s" in pick.reason
    assert settings_patch(report)["lifecycle"] == {"retry_schedule": {"rate_limited": [1.0, 2.0]}}
    assert "retry.schedule" not in report.unavailable


def test_a_wait_is_counted_at_its_ladder_step() -> None:
    assert [delay_bucket(w) for w in (0.0, 0.1, 0.11, 0.7, 1.0, 29.0, 999.0)] == [
        0.1, 0.1, 0.25, 1.0, 1.0, 30.0, 300.0,
    ]  # fmt: skip
    assert retry_metric_name("deribit", "rate_limited", 0.25, "attempts") == (
        "retry.deribit.rate_limited.250.attempts"
    )


# -- the rules, on hand-made counts ------------------------------------------------------------


def test_wilson_interval() -> None:
    r = wilson(8, 10)
    assert r.rate == 0.8
    assert r.low == pytest.approx(0.4902, abs=1e-4) and r.high == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 0).rate is None


def test_offsets_the_data_cannot_tell_apart_go_to_the_most_passive() -> None:
    limits = TunerLimits(min_samples=30)
    pick = pick_offset({0.0: (100, 50), 1.0: (100, 46), 3.0: (100, 10)}, {}, limits, 0.5)
    assert pick.value == {"offset_bps": 1.0, "tick_size": 0.5}
    assert "fill alike" in pick.reason
    one = pick_offset({0.0: (100, 50), 1.0: (10, 9)}, {}, limits)
    assert not one.picked and "too few samples" in one.reason


def test_retry_schedule_prefers_success_per_second_within_bounds() -> None:
    limits = TunerLimits(
        min_samples=20, retry_min_delay_s=0.5, retry_max_delay_s=10, retry_attempts=2
    )
    buckets = [
        RetryBucket("deribit", "rate_limited", 0.1, 100, 90),  # below the minimum delay
        RetryBucket("deribit", "rate_limited", 1.0, 100, 60),  # 0.6/s
        RetryBucket("deribit", "rate_limited", 2.0, 100, 95),  # 0.475/s
        RetryBucket("deribit", "rate_limited", 5.0, 100, 99),  # 0.198/s
        RetryBucket("deribit", "rate_limited", 20.0, 100, 100),  # above the maximum
        RetryBucket("deribit", "exchange_unavailable", 1.0, 5, 5),  # too few
    ]
    picks = {p.scope["reason"]: p for p in retry_picks(buckets, limits)}
    assert picks["rate_limited"].value == [1.0, 2.0]
    assert not picks["exchange_unavailable"].picked


def test_slice_limit_stops_at_the_first_size_over_the_slippage_bound() -> None:
    limits = TunerLimits(min_samples=10, max_slippage_bps=1.0)
    rows = [
        SliceBucket(PERP, 0.5, 40, 0.1, 0.04, 1000.0),
        SliceBucket(PERP, 1.0, 40, 0.5, 0.25, 1000.0),
        SliceBucket(PERP, 2.0, 40, 1.5, 0.25, 1000.0),
        SliceBucket(PERP, 3.0, 40, 0.2, 0.01, 1000.0),  # past a failing size: not used
    ]
    (pick,) = slice_picks(rows, limits)
    assert pick.value == {"max_slice_amount": 1000.0, "depth_ratio": 1.0}


def _chase_order(direction: Direction, price: float, limit: float) -> OrderRecord:
    return OrderRecord(
        order_id="o-1",
        request_id="r",
        account_id="a",
        instrument_name=PERP,
        direction=direction,
        order_type=OrderType.LIMIT,
        amount=10,
        price=price,
        post_only=True,
        metadata={"algo": "chase", "chase_limit": limit},
        version=3,
    )


def test_chase_rests_at_its_offset_on_the_tick() -> None:
    tick = MarketTick(
        instrument_name=PERP, timestamp=1, best_bid_price=1000.0, best_ask_price=1001.0
    )
    buy = _chase_order(Direction.BUY, 990.0, 1100.0)
    # 5 bps behind 1000 = 999.5, on a 0.5 tick.
    assert chase.target_price(buy, tick, Offset(5.0, 0.5)) == 999.5
    # Inside the spread: 2 bps above 1000 on a 0.1 tick; 20 bps would cross the ask.
    assert chase.target_price(buy, tick, Offset(-2.0, 0.1)) == pytest.approx(1000.2)
    assert chase.target_price(buy, tick, Offset(-20.0, 0.5)) == 1000.5  # never at the ask
    # Already the touch itself: stays rather than outbid itself.
    at_touch = _chase_order(Direction.BUY, 1000.0, 1100.0)
    assert chase.target_price(at_touch, tick, Offset(-2.0, 0.1)) == 1000.0
    sell = _chase_order(Direction.SELL, 1010.0, 900.0)
    # 5 bps behind 1001 = 1001.5005: a sell rounds up, away from the touch.
    assert chase.target_price(sell, tick, Offset(5.0, 0.5)) == 1002.0
    # Hours override the instrument's offset.
    strategy = ChaseStrategy(
        {"offsets": {PERP: {"offset_bps": 5.0, "tick_size": 0.5, "hours": {"1": 0.0}}}}
    )
    assert strategy.offset(PERP, 0) == Offset(5.0, 0.5)
    assert strategy.offset(PERP, 3_600_000) == Offset(0.0, 0.5)
    assert strategy.offset("ETH-PERPETUAL", 0) is None


def test_twap_refuses_slices_over_the_tuned_limit() -> None:
    strategy = TwapStrategy({"max_slice_amount": {PERP: 1000.0}})
    spec = InstrumentSpec(
        instrument_name=PERP,
        kind="future",
        base_currency="BTC",
        quote_currency="USD",
        tick_size=0.5,
        min_trade_amount=10.0,
        contract_size=10.0,
    )
    request = OrderRequest(
        command=CommandType.SUBMIT,
        request_id="r1",
        account_id="a",
        instrument_name=PERP,
        direction=Direction.BUY,
        order_type=OrderType.MARKET,
        amount=5000.0,
        metadata={"algo": "twap", "twap_duration": 60, "twap_slices": 4},
    )
    params = TwapParams.from_metadata(request.metadata)
    refused = strategy.check(request, spec, params)
    assert refused is not None and refused.reason_code is ReasonCode.INVALID_AMOUNT
    assert "at least 5 slices" in refused.message
    five = TwapParams.from_metadata({**request.metadata, "twap_slices": 5})
    assert strategy.check(request, spec, five) is None


def test_retry_schedule_setting_is_kept_within_the_lifecycle_bounds() -> None:
    settings = LifecycleSettings(
        retry_delay=0.5, retry_max_delay=4.0, retry_schedule={"rate_limited": [0.1, 2.0, 9.0]}
    )
    assert [retry_wait(settings, a, "rate_limited") for a in range(4)] == [0.5, 2.0, 4.0, 4.0]
    assert retry_wait(settings, 0, "exchange_unavailable") is None


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (removed afterwards)."""
    where = Path(tempfile.mkdtemp(prefix="h-"))
    yield where
    shutil.rmtree(where, ignore_errors=True)


def test_bench_history_picks_the_better_offset_and_refuses_a_used_directory(
    short_dir: Path,
) -> None:
    # A short path: the refusal names the directory, and a long one (pytest's) is cut short
    # in the 80-column error panel, "not empty" included.
    where = short_dir / "history"
    args = ["bench", "history", "--rounds", "160", "--slice-rounds", "0", "--seed", "11"]
    result = CliRunner().invoke(app, [*args, "--data-dir", str(where), "--json"])
    assert result.exit_code == 0, result.output
    out = orjson.loads(result.output)
    assert out["ok"] and out["picked_offset_bps"] == out["expected_offset_bps"] == -2.0
    assert "fills best" in out["reason"]
    again = CliRunner().invoke(app, [*args, "--data-dir", str(where)])
    assert again.exit_code != 0 and "not empty" in again.output
