"""An A/B experiment through the real components: signed orders of one account enrolled by
the worker's intake (TWAP or plain, by a hash of the order id), executed on the paper
exchange, recorded by the sink in embedded ClickHouse, then compared by the report."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from oms.client import OrderClient
from oms.orders.experiments import Experiments
from oms.schemas import OrderEventType
from oms.settings import ExperimentSettings, Settings
from oms.sinks.experiments import ExperimentReport, experiment_report
from oms_dev.harness import OmsServices
from tests.integration.test_pipeline import final_event, make_settings, start_stack

pytestmark = pytest.mark.kafka

EXP = ExperimentSettings.model_validate(
    {
        "name": "exec-ab",
        "accounts": ["acc-a"],
        "select": "untagged",
        "variants": [
            {"name": "plain", "weight": 1, "algo": "none"},
            # Two slices of one lot, the second about half a second after the first.
            {
                "name": "twap",
                "weight": 1,
                "algo": "twap",
                "params": {"twap_duration": 1, "twap_slices": 2},
            },
        ],
    }
)
ORDERS = 12
ENDED = {OrderEventType.FILLED, OrderEventType.CANCELLED, OrderEventType.REJECTED}


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Settings, OmsServices]]:
    settings = make_settings(Path(tmp_path_factory.mktemp("experiments")), kafka_bootstrap)
    settings = settings.model_copy(update={"experiments": [EXP]})
    services = await start_stack(settings)
    yield settings, services
    services.stop_all()


async def report_when_complete(settings: Settings, orders: int) -> ExperimentReport:
    """The report once the sink holds every order as filled, with its fills (the sink
    flushes asynchronously)."""
    report = await experiment_report(settings, EXP.name)
    for _ in range(60):
        # Snapshots and fills arrive on separate topics: wait for both.
        filled = sum(v.filled for v in report.variants)
        with_fills = sum(v.metrics["fee"].n for v in report.variants)
        if filled == orders and with_fills == orders:
            return report
        await asyncio.sleep(0.5)
        report = await experiment_report(settings, EXP.name)
    raise AssertionError(f"the history never held all {orders} orders: {report.as_dict()}")


async def test_orders_are_split_executed_and_reported_by_variant(
    stack: tuple[Settings, OmsServices],
) -> None:
    settings, services = stack
    try:
        async with OrderClient("acc-a", settings=settings) as client:
            ids = [
                await client.submit_advanced_order(
                    instrument_name="BTC-PERPETUAL",
                    amount=20,
                    direction="buy",
                    order_type="market",
                )
                for _ in range(ORDERS)
            ]
            # A TWAP parent is open first (its slices go out over a second), then filled.
            finals = await asyncio.gather(
                *(client.wait_for_event(oid, lambda e: e.event_type in ENDED, 60) for oid in ids)
            )
            # Another account's order is not in the experiment.
            async with OrderClient("acc-b", settings=settings) as other:
                outside = await other.submit_advanced_order(
                    instrument_name="BTC-PERPETUAL", amount=10, direction="buy", order_type="market"
                )
                await final_event(other, outside)
        assert {e.event_type for e in finals} == {OrderEventType.FILLED}
        report = await report_when_complete(settings, ORDERS)
    except BaseException:
        print(services.diagnostics())
        raise

    # The variants are those the assignment function gives these ids, computed here.
    [experiment] = Experiments.from_settings([EXP]).experiments
    expected = Counter(experiment.assign(oid).name for oid in ids)
    assert {v.variant: v.orders for v in report.variants} == dict(expected)
    for variant in report.variants:
        n = variant.orders
        assert (variant.rejected, variant.filled) == (0, n)
        fill_ratio = variant.metrics["fill_ratio"]
        assert fill_ratio.n == n and fill_ratio.mean == pytest.approx(1.0)
        # Every order carries the mark the worker knew at acceptance: all have slippage.
        assert variant.metrics["slippage_bps"].n == n
        assert variant.metrics["time_to_fill_s"].n == n
    times = {v.variant: v.metrics["time_to_fill_s"].mean for v in report.variants}
    if "twap" in times:
        # The second slice is due about half a second after acceptance.
        assert times["twap"] is not None and times["twap"] >= 0.4
    if len(report.variants) == 2:
        assert {c.metric for c in report.comparisons} == {
            "fill_ratio",
            "time_to_fill_s",
            "slippage_bps",
            "fee",
        }
