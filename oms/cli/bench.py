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


@bench_app.command("chaos")
def chaos(
    orders: Annotated[int, typer.Option(help="orders to submit")] = 1_000,
    rate: Annotated[float, typer.Option(help="orders/s")] = 50.0,
    drop_every: Annotated[float, typer.Option(help="cut every connection this often, s")] = 3.0,
    rate_limit_fraction: Annotated[float, typer.Option(help="order requests refused 10028")] = 0.1,
    bootstrap: Annotated[
        str | None, typer.Option(help="use this running Kafka instead of starting one")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Orders under dropped connections and rate limits: one terminal state each, no label
    twice at the exchange. Exits 1 if any check fails."""
    from oms.benchmarks.chaos import ChaosConfig, run_chaos
    from oms.benchmarks.e2e import dumps

    config = ChaosConfig(
        orders=orders,
        rate=rate,
        drop_every_s=drop_every,
        rate_limit_fraction=rate_limit_fraction,
        bootstrap=bootstrap,
    )
    with console.status("bench chaos") as status:
        result = asyncio.run(
            run_chaos(config, on_status=lambda s: status.update(f"bench chaos: {s}"))
        )
    if json:
        print(dumps(result))
    else:
        from rich.table import Table

        table = Table(title="oms bench chaos")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for key, value in result.items():
            table.add_row(key, str(value))
        Console().print(table)
    raise typer.Exit(0 if result["ok"] else 1)
