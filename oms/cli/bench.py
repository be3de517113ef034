"""``oms bench ...``: self-contained benchmarks that print figures against a baseline."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
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
    from oms.benchmarks.e2e import E2EConfig, run_e2e

    config = E2EConfig(orders=orders, rate=rate, accounts=accounts, partitions=partitions)
    with console.status("bench e2e") as status:
        result = asyncio.run(run_e2e(config, on_status=lambda s: status.update(f"bench e2e: {s}")))
    show(result, "oms bench e2e", as_json=json)


@bench_app.command("positions")
def positions(
    fills: Annotated[int, typer.Option(help="fills to push through the keeper")] = 200_000,
    accounts: Annotated[int, typer.Option(help="accounts (x2 instruments = positions)")] = 20,
    partitions: Annotated[int, typer.Option()] = 8,
    json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Fills through Kafka and the position keeper; sink vs direct ClickHouse inserts."""
    from oms.benchmarks.positions import PositionBenchConfig, run_positions_bench

    config = PositionBenchConfig(fills=fills, accounts=accounts, partitions=partitions)
    with console.status("bench positions") as status:
        result = asyncio.run(
            run_positions_bench(config, on_status=lambda s: status.update(f"bench positions: {s}"))
        )
    show(result, "oms bench positions", as_json=json)


def show(result: dict[str, Any], title: str, *, as_json: bool) -> None:
    """Print a benchmark's figures as one JSON object or as a table."""
    if as_json:
        print(orjson.dumps(result).decode())
        return
    from rich.table import Table

    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, str(value))
    Console().print(table)
