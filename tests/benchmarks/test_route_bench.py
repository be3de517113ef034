"""``oms bench route`` prints its figures (tiny runs: in process, and through a stack)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from oms.cli.bench import bench_app
from oms_dev.benchmarks.route import RouteConfig, RouteE2EConfig, run_route_bench, run_route_e2e


def test_route_bench_figures() -> None:
    result = run_route_bench(RouteConfig(decisions=200, venues=2, levels=5))
    assert result["decisions"] == 200
    assert result["decisions_per_s"] > 0 and result["split_only_per_s"] > 0
    assert 0 < result["allocated_share"] <= 1


def test_route_bench_cli_prints_json() -> None:
    args = ["route", "--decisions", "100", "--e2e-orders", "0", "--json"]
    out = CliRunner().invoke(bench_app, args)
    assert out.exit_code == 0, out.output
    assert '"decisions_per_s"' in out.stdout


@pytest.mark.kafka
async def test_route_bench_times_routed_against_single_venue_orders(kafka_bootstrap: str) -> None:
    # A tiny run through a real two-venue stack: both kinds fill, and the route's cost is
    # the difference of the two medians, as printed.
    result = await run_route_e2e(
        RouteE2EConfig(orders=2, warmup=1, bootstrap=kafka_bootstrap), on_status=lambda _: None
    )
    assert result["outcomes"] == {"single": {"filled": 2}, "routed": {"filled": 2}}
    single, routed = result["single_venue_ms"], result["routed_ms"]
    assert 0 < single["p50"] and 0 < routed["p50"]
    assert result["route_adds_ms"]["p50"] == round(routed["p50"] - single["p50"], 2)
