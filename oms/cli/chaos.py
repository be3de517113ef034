"""``oms chaos run``: the chaos suite, one verdict line per scenario."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from oms.cli.dev import dev_commands

chaos_app = dev_commands("oms chaos", "Chaos scenarios (each starts what it needs).")
console = Console(stderr=True)


@chaos_app.command("run")
def run(
    scenario: Annotated[
        list[str] | None,
        typer.Option("--scenario", "-s", help="run only this scenario; repeat for several"),
    ] = None,
    quick: Annotated[bool, typer.Option(help="short flows (about 5 minutes in all)")] = False,
    json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    out_dir: Annotated[Path, typer.Option(help="where chaos-latest.json/.md are written")] = Path(
        "bench/results"
    ),
) -> None:
    """Run the chaos scenarios; prints a verdict line each and a summary table, writes
    chaos-latest.json and chaos-latest.md. Exits 1 if any scenario fails."""
    from oms.logs import configure_logging
    from oms_dev.chaos.config import ChaosConfig
    from oms_dev.chaos.scenarios import SCENARIOS
    from oms_dev.chaos.suite import run_scenarios, write_report
    from oms_dev.chaos.verdict import COUNT_COLUMNS, count_cell, verdict_line

    configure_logging("warn")
    # The suite's own Kafka clients log every failed reconnect while a broker is down: the
    # verdicts say whether anything was lost.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    names = scenario or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise typer.BadParameter(
            f"unknown: {', '.join(unknown)} (known: {', '.join(SCENARIOS)})",
            param_hint="--scenario",
        )

    def on_result(result: dict[str, Any]) -> None:
        style = "green" if result["ok"] else "bold red"
        line = verdict_line(result)
        console.print(line, style=style, markup=False, highlight=False, soft_wrap=True)

    with console.status("chaos") as status:
        report = asyncio.run(
            run_scenarios(
                names,
                ChaosConfig(quick=quick),
                on_status=lambda s: status.update(f"chaos {s}"),
                on_result=on_result,
            )
        )
    paths = write_report(report, out_dir)
    if json:
        import orjson

        print(orjson.dumps(report, option=orjson.OPT_INDENT_2, default=str).decode())
    else:
        table = Table(title=f"oms chaos run{' --quick' if quick else ''}: {report['seconds']} s")
        for column in ("scenario", "verdict", "requests", "terminal", "lost", "dup @exch",
                       "wrong", "positions", "notif lost", "notif doubled", "s"):  # fmt: skip
            table.add_column(column, justify="left" if column == "scenario" else "right")
        for r in report["results"]:
            table.add_row(
                r["scenario"],
                f"[{'green' if r['ok'] else 'bold red'}]{r['verdict']}[/]",
                *(count_cell(r[key]) for key, _ in COUNT_COLUMNS),
                str(r["seconds"]),
            )
        Console().print(table)
        console.print(f"written: {', '.join(str(p) for p in paths)}")
    raise typer.Exit(0 if report["ok"] else 1)
