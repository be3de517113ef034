"""``oms bench ...``: self-contained benchmarks that print figures against a baseline."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

bench_app = typer.Typer(help="Benchmarks (each starts what it needs).", no_args_is_help=True)
console = Console(stderr=True)


@bench_app.command("e2e")
def e2e(
    orders: Annotated[int, typer.Option(help="orders to submit")] = 2_000,
    rate: Annotated[
        float | None, typer.Option(help="orders/s (default: as fast as possible)")
    ] = None,
    accounts: Annotated[int | None, typer.Option(help="paper accounts to spread over")] = None,
    partitions: Annotated[int, typer.Option()] = 8,
    json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Orders through Kafka, Faust and the paper exchange, against a raw Kafka baseline."""
    from oms.benchmarks.e2e import E2EConfig, dumps, run_e2e

    config = E2EConfig(orders=orders, rate=rate, accounts=accounts, partitions=partitions)
    with console.status("bench e2e") as status:
        result = asyncio.run(run_e2e(config, on_status=lambda s: status.update(f"bench e2e: {s}")))
    if json:
        print(dumps(result))
        return
    from rich.table import Table

    table = Table(title="oms bench e2e")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, str(value))
    Console().print(table)


@bench_app.command("notify")
def notify(
    events: Annotated[int, typer.Option(help="order events to push through")] = 50_000,
    accounts: Annotated[int, typer.Option(help="accounts the events belong to")] = 100,
    partitions: Annotated[int, typer.Option()] = 8,
    bootstrap: Annotated[
        str | None, typer.Option(help="use this broker (default: start one on free ports)")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Order events through the notifier (Kafka, rules, grouping) to the console channel,
    against a raw Kafka consume of the same events."""
    from oms.benchmarks.notify import NotifyBenchConfig, dumps, run_notify_bench
    from oms.logs import configure_logging

    configure_logging("warn")

    config = NotifyBenchConfig(
        events=events, accounts=accounts, partitions=partitions, bootstrap=bootstrap
    )
    with console.status("bench notify") as status:
        result = asyncio.run(
            run_notify_bench(config, on_status=lambda s: status.update(f"bench notify: {s}"))
        )
    if json:
        print(dumps(result))
        return
    from rich.table import Table

    table = Table(title="oms bench notify")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, str(value))
    Console().print(table)
