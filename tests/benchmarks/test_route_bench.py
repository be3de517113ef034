"""``oms bench route`` prints its figures (a tiny run)."""

from __future__ import annotations

from typer.testing import CliRunner

from oms.cli.bench import bench_app
from oms_dev.benchmarks.route import RouteConfig, run_route_bench


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
