"""Metrics: the collector's arithmetic, the worker's /metrics, probes, `oms stats`, and the
samples that reach ClickHouse's ``metrics`` table through the sink."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from oms.metrics import OrderMetricsCollector
from oms.schemas import OrderEvent, OrderEventType, OrderStatus, ReasonCode
from oms.sinks.query import run_query
from tests.lifecycle.conftest import LifecycleStack
from tests.lifecycle.test_error_strategies import _oms_cli


def _event(order_id: str, kind: OrderEventType, at: int, created: int = 0) -> OrderEvent:
    return OrderEvent(
        event_id=f"{order_id}:{kind.value}",
        event_type=kind,
        order_id=order_id,
        account_id="a",
        status=OrderStatus(kind.value),
        reason_code=ReasonCode.NOT_ENOUGH_FUNDS if kind is OrderEventType.REJECTED else None,
        timestamp=at,
        request_created_at=created,
    )


def test_success_rate_and_averages_count_each_order_once() -> None:
    metrics = OrderMetricsCollector()
    # Interleaved: ok, failed, ok, failed, failed. A running average divided by the processed
    # count only would be wrong here; rate = 2/5 and the average covers all five outcomes.
    for i, ok in enumerate([True, False, True, False, False]):
        oid = f"o{i}"
        metrics.observe_event(_event(oid, OrderEventType.SUBMITTED, 1_010, created=1_000))
        outcome = OrderEventType.OPEN if ok else OrderEventType.REJECTED
        metrics.observe_event(_event(oid, outcome, 1_000 + 100 * (i + 1), created=1_000))
        # Repeated news about the same order is not a second outcome.
        metrics.observe_event(_event(oid, outcome, 1_000 + 100 * (i + 1), created=1_000))
    snap = metrics.snapshot()
    assert (snap["orders_processed"], snap["orders_succeeded"], snap["orders_failed"]) == (5, 2, 3)
    assert snap["success_rate"] == pytest.approx(0.4)
    assert snap["average_processing_ms"] == pytest.approx(300.0)  # mean of 100..500
    assert snap["stages"]["intake"]["count"] == 5
    assert snap["stages"]["intake"]["p50_ms"] == pytest.approx(10.0)
    assert snap["stages"]["acknowledged"]["count"] == 5
    text = metrics.prometheus().decode()
    assert 'oms_orders_failed_total{reason="not_enough_funds"} 3.0' in text


@pytest.mark.kafka
async def test_worker_exports_metrics_probes_and_samples(stack: LifecycleStack) -> None:
    order_id = await stack.client.submit_advanced_order(
        "BTC-PERPETUAL", 10, "buy", order_type="market"
    )
    assert (await stack.wait(order_id)).event_type is OrderEventType.FILLED
    base = f"http://127.0.0.1:{stack.settings.worker.web_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
        async with session.get(f"{base}/ready") as resp:
            assert resp.status == 200
            assert (await resp.json())["ready"] is True
        async with session.get(f"{base}/live") as resp:
            assert resp.status == 200
    assert "oms_orders_processed_total" in text
    assert 'oms_stage_latency_seconds_bucket{le="+Inf",stage="filled"}' in text
    assert "oms_order_success_rate" in text

    result = _oms_cli(stack, "stats")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "success rate" in result.stdout and "end_to_end" in result.stdout

    # Sampled every second into ClickHouse through the sink.
    rows: list[list[object]] = []
    for _ in range(60):
        found = await run_query(
            stack.settings,
            "SELECT name, max(value) FROM metrics FINAL "
            "WHERE name IN ('orders_processed', 'stage.filled.count') GROUP BY name ORDER BY name",
        )
        rows = found.rows
        if len(rows) == 2 and all(float(r[1]) >= 1 for r in rows):  # type: ignore[arg-type]
            break
        await asyncio.sleep(0.5)
    assert [r[0] for r in rows] == ["orders_processed", "stage.filled.count"], rows
