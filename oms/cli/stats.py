"""``oms stats``: a worker's order metrics (success rate, latency per stage, retries)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import aiohttp
import orjson
import typer
from rich.console import Console
from rich.table import Table

from oms.settings import get_settings

console = Console()


async def fetch_summary(url: str) -> dict[str, Any]:
    """The JSON summary a worker serves at ``/metrics/summary``."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp,
    ):
        resp.raise_for_status()
        body: dict[str, Any] = await resp.json()
        return body


def stats(
    port: Annotated[int | None, typer.Option(help="worker web port")] = None,
    host: str = "127.0.0.1",
    as_json: Annotated[bool, typer.Option("--json")] = False,
    positions: Annotated[
        bool, typer.Option("--positions", help="position statistics (ClickHouse) instead")
    ] = False,
    account: Annotated[str | None, typer.Option(help="with --positions: one account")] = None,
    days: Annotated[int, typer.Option(help="with --positions: days of daily figures")] = 30,
    venue: Annotated[str | None, typer.Option(help="with --positions: one venue")] = None,
) -> None:
    """Summarize a worker's order metrics (its /metrics/summary endpoint), or with
    ``--positions`` the position statistics (same as ``oms positions stats``)."""
    if positions:
        from oms.cli.positions import print_position_statistics

        print_position_statistics(account, days, as_json, venue)
        return
    port = port or get_settings().worker.web_port
    url = f"http://{host}:{port}/metrics/summary"
    try:
        body = asyncio.run(fetch_summary(url))
    except (aiohttp.ClientError, TimeoutError) as exc:
        console.print(f"[red]cannot reach the worker at {url}: {exc}[/red]")
        raise typer.Exit(1) from None
    if as_json:
        print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    rate = body.get("success_rate")
    console.print(
        f"orders processed {body['orders_processed']}  succeeded {body['orders_succeeded']}  "
        f"failed {body['orders_failed']}  success rate "
        f"{'-' if rate is None else f'{rate:.2%}'}  retries {body['retry_count']}  "
        f"queue {body['queue_length']}"
    )
    table = Table(title="latency per stage (ms)")
    for column in ("stage", "count", "avg", "p50", "p95", "p99"):
        table.add_column(column)
    for stage, row in body["stages"].items():
        table.add_row(
            stage,
            str(row["count"]),
            *(
                "-" if row[k] is None else f"{row[k]:.1f}"
                for k in ("avg_ms", "p50_ms", "p95_ms", "p99_ms")
            ),
        )
    console.print(table)
    lifecycle = body.get("lifecycle") or {}
    if lifecycle:
        console.print("lifecycle: " + "  ".join(f"{k} {v}" for k, v in lifecycle.items()))
