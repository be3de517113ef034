"""``oms tune show|apply``: execution tuned from the order history in ClickHouse.

``show`` prints every tuned figure (chase offset, retry schedule, TWAP slice limit) with its
pick, a one-line reason and the evidence (sample sizes, rates, 95% intervals); ``--json``
prints the same as one object. ``apply`` writes the picked plugin settings into the
strategies file, which workers re-read every ``strategies.reload_interval_s`` (new orders get
the new settings, orders in flight keep the version they started with), and prints the
lifecycle setting of the retry schedule (read at worker start).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from oms.algos.tuner import Pick, TuningReport, settings_patch
from oms.settings import Settings, get_settings
from oms.sinks.errors import QueryError
from oms.sinks.tuning import TuningStatistics, tuning_report

console = Console()
tune_app = typer.Typer(help="Execution tuned from the order history.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="one JSON object instead of tables")]


def _report(settings: Settings) -> tuple[TuningStatistics, TuningReport]:
    try:
        return asyncio.run(tuning_report(settings))
    except QueryError as exc:
        typer.echo(f"oms tune: {exc}", err=True)
        raise typer.Exit(1) from None


def report_dict(stats: TuningStatistics, report: TuningReport) -> dict[str, Any]:
    """What ``show --json`` prints."""
    return {
        "parameters": stats.parameters,
        **report.as_dict(),
        "patch": settings_patch(report),
    }


def _value(pick: Pick) -> str:
    if not pick.picked:
        return "-"
    if isinstance(pick.value, dict):
        return ", ".join(f"{k}={v}" for k, v in pick.value.items())
    return str(pick.value)


def _scope(pick: Pick) -> str:
    return " ".join(f"{k}={v}" for k, v in pick.scope.items())


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _evidence(pick: Pick) -> Table:
    table = Table(title=f"{pick.figure} {_scope(pick)}: evidence", title_justify="left")
    if pick.figure.startswith("chase"):
        for col in ("offset (bps)", "orders", "filled", "fill rate [95% CI]", "enough"):
            table.add_column(col)
        for e in pick.evidence:
            table.add_row(
                f"{e['offset_bps']:+g}",
                str(e["n"]),
                str(e["successes"]),
                f"{_pct(e['rate'])} [{_pct(e['low'])}, {_pct(e['high'])}]",
                "yes" if e["enough"] else "no",
            )
    elif pick.figure.startswith("twap"):
        for col in ("slice / depth", "slices", "slippage bps [95% CI]", "enough"):
            table.add_column(col)
        for e in pick.evidence:
            s = e["slippage_bps"]
            interval = "-" if s["low"] is None else f"[{s['low']:.2f}, {s['high']:.2f}]"
            mean = "-" if s["mean"] is None else f"{s['mean']:.2f}"
            table.add_row(
                f"<= {e['depth_ratio']:g}x",
                str(s["n"]),
                f"{mean} {interval}",
                "yes" if e["enough"] else "no",
            )
    else:
        for col in ("delay (s)", "retries", "succeeded", "rate [95% CI]", "per s of waiting"):
            table.add_column(col)
        for e in pick.evidence:
            per_s = "-" if e["success_per_s"] is None else f"{e['success_per_s']:.3g}"
            table.add_row(
                f"{e['delay_s']:g}",
                str(e["n"]),
                str(e["successes"]),
                f"{_pct(e['rate'])} [{_pct(e['low'])}, {_pct(e['high'])}]",
                per_s,
            )
    return table


def print_report(stats: TuningStatistics, report: TuningReport, out: Console) -> None:
    """Each figure, its pick and reason, then the evidence behind each pick."""
    params = ", ".join(f"{k}={v}" for k, v in stats.parameters.items())
    out.print(f"[bold]execution tuning[/bold] ({params})")
    table = Table("figure", "scope", "pick", "reason", title="picks")
    for pick in report.picks:
        table.add_row(pick.figure, _scope(pick), _value(pick), pick.reason)
    if not report.picks:
        out.print("no passive orders or TWAP slices in the history yet")
    out.print(table)
    for figure, why in report.unavailable.items():
        out.print(f"{figure}: no pick: {why}")
    for pick in report.picks:
        if "hour" not in pick.scope:  # hours repeat the instrument's table; --json has them
            out.print(_evidence(pick))


@tune_app.command("show")
def show(as_json: JsonOption = False) -> None:
    """Every tuned figure with its pick, reason and evidence."""
    stats, report = _report(get_settings())
    if as_json:
        print(orjson.dumps(report_dict(stats, report), option=orjson.OPT_INDENT_2).decode())
        return
    print_report(stats, report, console)


def merge_strategies_file(path: Path, patch: dict[str, Any], base: dict[str, Any]) -> dict:
    """The strategies file with the picked settings merged into each strategy's settings
    (``base``: the settings the strategy has without the file). Written atomically."""
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    for name in ("chase", "twap"):
        if name not in patch:
            continue
        entry = data.setdefault(name, {})
        settings = dict(entry.get("settings", base.get(name, {})))
        settings.update(patch[name])
        entry["settings"] = settings
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return data


@tune_app.command("apply")
def apply(
    file: Annotated[
        Path | None,
        typer.Option(help="strategies file to write (default: OMS_STRATEGIES__CONFIG_FILE)"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write the picked chase offsets and TWAP slice limits into the strategies file (workers
    reload it without a restart); print the retry schedule's lifecycle setting."""
    settings = get_settings()
    path = file or settings.strategies.config_file
    if path is None:
        typer.echo(
            "oms tune apply: no strategies file: pass --file or set "
            "OMS_STRATEGIES__CONFIG_FILE (the workers must read the same file)",
            err=True,
        )
        raise typer.Exit(2)
    _, report = _report(settings)
    patch = settings_patch(report)
    plugin = {k: v for k, v in patch.items() if k in ("chase", "twap")}
    if plugin:
        try:
            merge_strategies_file(path, plugin, settings.strategies.settings)
        except (OSError, ValueError) as exc:
            typer.echo(f"oms tune apply: {exc}", err=True)
            raise typer.Exit(1) from None
    retry = patch.get("lifecycle", {}).get("retry_schedule")
    env = (
        None
        if retry is None
        else f"OMS_LIFECYCLE__RETRY_SCHEDULE='{json.dumps(retry, separators=(',', ':'))}'"
    )
    if as_json:
        out = {"file": str(path), "written": plugin, "retry_schedule_env": env}
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        return
    if plugin:
        console.print(f"wrote {', '.join(sorted(plugin))} settings to {path}: {plugin}")
    else:
        console.print("nothing picked for the plugins: the strategies file is unchanged")
    for pick in report.picks:
        if "hour" not in pick.scope:
            console.print(f"- {pick.figure} {_scope(pick)}: {pick.reason}")
    if env is not None:
        console.print(f"retry schedule (lifecycle, read at worker start): {env}")
    else:
        console.print("retry schedule: no pick (see `oms tune show`)")
