"""CLI commands that act on orders: submit, cancel, amend, list, watch."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from oms.client import OrderClient, fetch_queue_statistics
from oms.conditions.expressions import ExpressionError, parse_expression
from oms.schemas import OrderEvent
from oms.settings import get_settings

console = Console()

_STYLE = {
    "rejected": "red",
    "command_rejected": "red",
    "cancelled": "yellow",
    "filled": "green",
    "partially_filled": "cyan",
    "open": "blue",
    "duplicate": "magenta",
    "waiting": "bright_black",
    "queued": "bright_black",
    "triggered": "bright_cyan",
    "expired": "yellow",
}


def _ts(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M:%S.%f")[:-3]


def event_line(event: OrderEvent) -> str:
    """One readable line per event."""
    style = _STYLE.get(event.event_type.value, "white")
    parts = [
        f"[dim]{_ts(event.timestamp)}[/dim]",
        f"[{style}]{event.event_type.value:<16}[/{style}]",
        event.order_id,
        event.account_id,
        event.instrument_name or "",
    ]
    if event.direction and event.amount is not None:
        parts.append(f"{event.direction.value} {event.amount:g}@{event.price or 'mkt'}")
    if event.filled_amount:
        parts.append(f"filled {event.filled_amount:g} avg {event.average_price}")
    if event.reason_code:
        parts.append(f"[red]{event.reason_code.value}[/red]: {event.message or ''}")
    return " ".join(str(p) for p in parts if p)


def submit(
    instrument: Annotated[str, typer.Argument(help="e.g. BTC-PERPETUAL")],
    direction: Annotated[str, typer.Argument(help="buy or sell")],
    amount: Annotated[float, typer.Argument(help="in the instrument's units (USD for BTC perps)")],
    price: Annotated[float | None, typer.Option(help="limit price")] = None,
    order_type: Annotated[str, typer.Option("--type", help="limit, market, ...")] = "limit",
    account: Annotated[str, typer.Option(help="account id")] = "demo",
    request_id: Annotated[str | None, typer.Option(help="idempotency key")] = None,
    post_only: bool = False,
    reduce_only: bool = False,
    time_in_force: str = "good_til_cancelled",
    queued: Annotated[
        bool, typer.Option("--queued", help="through the priority queue, not at once")
    ] = False,
    priority: Annotated[str, typer.Option(help="high, normal or low (queued orders)")] = "normal",
    when: Annotated[
        list[str] | None,
        typer.Option(
            "--when",
            help="condition, repeatable: 'BTC-PERPETUAL.last_price >= 70000', "
            "'time >= 2026-12-01T08:00Z'",
        ),
    ] = None,
    match: Annotated[str, typer.Option(help="all or any of the --when conditions")] = "all",
    delay: Annotated[float | None, typer.Option(help="seconds before it is released")] = None,
    execute_at: Annotated[
        str | None, typer.Option(help="release time (ISO 8601 or ms since epoch)")
    ] = None,
    expire: Annotated[
        float | None, typer.Option(help="seconds after which a waiting order expires")
    ] = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for the outcome (0: none)")] = 10.0,
) -> None:
    """Submit an order through Kafka and show what happens to it."""
    try:
        conditions = [parse_expression(text) for text in when or []]
    except ExpressionError as exc:
        raise typer.BadParameter(str(exc), param_hint="--when") from None
    held = bool(conditions) or delay is not None or execute_at is not None

    async def run() -> None:
        async with OrderClient(account, follow_events=wait > 0) as client:
            order_id = await client.submit_advanced_order(
                instrument_name=instrument,
                amount=amount,
                direction=direction,
                order_type=order_type,
                price=price,
                request_id=request_id,
                post_only=post_only,
                reduce_only=reduce_only,
                time_in_force=time_in_force,
                execute_immediately=not (queued or held),
                priority=priority,
                conditions=conditions,
                condition_match=match,
                delay=delay,
                execute_at=execute_at,
                expiration=expire,
            )
            console.print(f"submitted [bold]{order_id}[/bold]")
            if wait > 0:
                await _show_outcome(client, order_id, wait)

    asyncio.run(run())


def queue(
    worker: Annotated[
        list[str] | None,
        typer.Option(help="worker base URL, repeatable (default: this machine's worker)"),
    ] = None,
) -> None:
    """Queue statistics: depth and oldest age per priority, rates, waiting orders."""

    urls = worker or [f"http://127.0.0.1:{get_settings().worker.web_port}"]
    stats = asyncio.run(fetch_queue_statistics(urls))
    table = Table(title=f"priority queues ({stats['workers']} worker(s))")
    table.add_column("priority")
    table.add_column("depth", justify="right")
    table.add_column("oldest age", justify="right")
    for priority, depth in stats["depth"].items():
        age = stats["oldest_age_ms"].get(priority)
        table.add_row(priority, str(depth), "" if age is None else f"{age / 1000:.1f} s")
    console.print(table)
    console.print(
        f"waiting (delayed/conditional): {stats['waiting']}   "
        f"dequeued: {stats['dequeued_total']} ({stats['dequeue_rate_per_s']:.2f}/s)   "
        f"rejected (queue full): {stats['rejected_total']}   "
        f"triggered: {stats['triggered_total']}"
    )
    if stats["unreachable"]:
        console.print(f"[yellow]unreachable: {', '.join(stats['unreachable'])}[/yellow]")


async def _show_outcome(client: OrderClient, order_id: str, wait: float) -> None:
    try:
        await client.wait_for_event(order_id, timeout=wait)
    except TimeoutError:
        console.print(f"[yellow]no outcome within {wait:g}s (is the stack running?)[/yellow]")
    for event in client.events_of(order_id):
        console.print(event_line(event))


def cancel(
    order_id: Annotated[str, typer.Argument()],
    account: Annotated[str, typer.Option()] = "demo",
    wait: float = 10.0,
) -> None:
    """Cancel an order."""

    async def run() -> None:
        async with OrderClient(account, follow_events=wait > 0) as client:
            await client.cancel_order(order_id)
            if wait > 0:
                try:
                    await client.wait_for_event(order_id, timeout=wait)
                except TimeoutError:
                    console.print("[yellow]no answer yet[/yellow]")
                for event in client.events_of(order_id):
                    console.print(event_line(event))

    asyncio.run(run())


def amend(
    order_id: Annotated[str, typer.Argument()],
    amount: Annotated[float | None, typer.Option()] = None,
    price: Annotated[float | None, typer.Option()] = None,
    account: Annotated[str, typer.Option()] = "demo",
    wait: float = 10.0,
) -> None:
    """Change the amount and/or price of an open order."""

    async def run() -> None:
        async with OrderClient(account, follow_events=wait > 0) as client:
            await client.amend_order(order_id, amount=amount, price=price)
            if wait > 0:
                await _show_outcome(client, order_id, wait)

    asyncio.run(run())


def orders(
    account: Annotated[str | None, typer.Option(help="filter by account")] = None,
    instrument: Annotated[str | None, typer.Option()] = None,
    state: Annotated[str | None, typer.Option("--state", help="filter by status")] = None,
    limit: int = 50,
) -> None:
    """List orders (latest state) from ClickHouse."""
    from oms.sinks.queries import get_order_history

    rows: list[dict[str, Any]] = asyncio.run(
        get_order_history(
            get_settings(),
            account_id=account,
            instrument_name=instrument,
            status=state,
            limit=limit,
        )
    )
    table = Table(title=f"orders ({len(rows)})")
    columns = [
        "order_id",
        "account_id",
        "instrument_name",
        "direction",
        "amount",
        "price",
        "status",
        "filled_amount",
        "average_price",
        "reason_code",
        "updated_at",
    ]
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) if row.get(c) is not None else "" for c in columns))
    console.print(table)


watch_app = typer.Typer(help="Follow live streams.", no_args_is_help=True)


@watch_app.command("events")
def watch_events(
    account: Annotated[str | None, typer.Option(help="only this account")] = None,
) -> None:
    """Print order events as they happen (Ctrl-C to stop)."""

    async def run() -> None:
        async with OrderClient(account or "demo") as client:
            console.print("[dim]watching order events; Ctrl-C to stop[/dim]")
            async for event in client.events():
                if account is None or event.account_id == account:
                    console.print(event_line(event))

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
