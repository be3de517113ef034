"""``oms experiments list|report``: A/B experiments on execution strategies.

``list`` checks the configured experiments (``OMS_EXPERIMENTS``) as a worker would at start;
``report NAME`` compares an experiment's variants from the order history in ClickHouse.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from oms.orders.experiments import ExperimentConfigError, Experiments
from oms.settings import get_settings
from oms.sinks.errors import QueryError
from oms.sinks.experiments import METRICS, ExperimentReport, experiment_report
from oms.sinks.statistics import Estimate

console = Console()
experiments_app = typer.Typer(help="A/B experiments on execution strategies.", no_args_is_help=True)

_LABELS = {
    "fill_ratio": "fill ratio",
    "time_to_fill_s": "time to fill (s)",
    "slippage_bps": "slippage vs arrival mark (bps, + = worse)",
    "fee": "fee per filled order",
}


@experiments_app.command("list")
def list_experiments() -> None:
    """The configured experiments and their variants (validated as a worker does)."""
    settings = get_settings()
    try:
        experiments = Experiments.from_settings(settings.experiments)
    except ExperimentConfigError as exc:
        typer.echo(f"oms experiments: {exc}", err=True)
        raise typer.Exit(1) from None
    if not experiments.experiments:
        console.print("no experiments configured (OMS_EXPERIMENTS)")
        return
    for experiment in experiments.experiments:
        scope = (
            f"accounts {sorted(experiment.accounts) or 'any'}, "
            f"instruments {sorted(experiment.instruments) or 'any'}, select {experiment.select}"
        )
        table = Table("variant", "share", "algo", "params", title=f"{experiment.name}: {scope}")
        total = sum(v.weight for v in experiment.variants)
        for variant in experiment.variants:
            table.add_row(
                variant.name,
                f"{variant.weight / total:.1%}",
                variant.algo,
                orjson.dumps(dict(variant.params)).decode(),
            )
        console.print(table)


@experiments_app.command("report")
def report(
    name: Annotated[str, typer.Argument(help="the experiment's name")],
    baseline: Annotated[
        str | None, typer.Option(help="variant the others are compared with (default: first)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of tables")] = False,
) -> None:
    """Compare an experiment's variants: orders, fill ratio, time to fill, slippage against
    the arrival mark, fees; 95% intervals per figure and per difference (Welch's t)."""
    try:
        result = asyncio.run(experiment_report(get_settings(), name, baseline))
    except (QueryError, ValueError) as exc:
        typer.echo(f"oms experiments report: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        print(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    print_report(result, console)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _estimate(est: Estimate) -> str:
    if est.mean is None:
        return "-"
    if est.low is None or est.high is None:
        return f"{_num(est.mean)} (n={est.n})"
    return f"{_num(est.mean)} [{_num(est.low)}, {_num(est.high)}] (n={est.n})"


def print_report(result: ExperimentReport, out: Console) -> None:
    """The report as tables: figures per variant, then each variant against the baseline."""
    if not result.variants:
        out.print(f"experiment {result.experiment!r}: no orders in the history yet")
        return
    table = Table("variant", "orders", "rejected", "filled", title=f"{result.experiment}")
    for metric in METRICS:
        table.add_column(f"{_LABELS[metric]}\nmean [95% CI]")
    for v in result.variants:
        table.add_row(
            v.variant,
            str(v.orders),
            str(v.rejected),
            str(v.filled),
            *(_estimate(v.metrics[m]) for m in METRICS),
        )
    out.print(table)
    if not result.comparisons:
        out.print("one variant only: nothing to compare")
        return
    diffs = Table(
        "variant", "metric", "difference", "95% CI", "verdict",
        title=f"against {result.baseline} (variant - baseline, Welch's t)",
    )  # fmt: skip
    for c in result.comparisons:
        d = c.difference
        interval = "-" if d.low is None else f"[{_num(d.low)}, {_num(d.high)}]"
        diffs.add_row(c.variant, _LABELS[c.metric], _num(d.difference), interval, d.verdict)
    out.print(diffs)
