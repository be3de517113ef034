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
    secure: Annotated[
        bool, typer.Option(help="signed requests + every pre-trade risk check (issue 9)")
    ] = False,
    compare_secure: Annotated[
        bool, typer.Option(help="run without, then with signing + risk checks; print both")
    ] = False,
) -> None:
    """Orders through Kafka, Faust and the paper exchange, against a raw Kafka baseline."""
    from oms.benchmarks.e2e import E2EConfig, dumps, run_e2e

    def run(secure_mode: bool) -> dict[str, object]:
        config = E2EConfig(
            orders=orders, rate=rate, accounts=accounts, partitions=partitions, secure=secure_mode
        )
        with console.status("bench e2e") as status:
            return asyncio.run(
                run_e2e(config, on_status=lambda s: status.update(f"bench e2e: {s}"))
            )

    if compare_secure:
        plain, secured = run(False), run(True)
        a, b = plain["throughput_per_s"], secured["throughput_per_s"]
        assert isinstance(a, float) and isinstance(b, float)
        result: dict[str, object] = {
            "plain": plain,
            "secure": secured,
            "secure_vs_plain_throughput": round(b / a, 3) if a else None,
        }
    else:
        result = run(secure)
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
