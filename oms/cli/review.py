"""``oms review list|retry|cancel``: the manual error strategy's human side.

Orders whose submit failed under ``error_handling=manual`` wait in ``needs_review``
(an alert event went out). A reviewer lists them, then retries (the order is looked up by
label first, so it is never sent twice) or cancels them.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from oms.client import OrderClient
from oms.schemas import OrderEvent, OrderEventType
from oms.settings import get_settings

console = Console()
review_app = typer.Typer(help="Orders waiting for a human decision.", no_args_is_help=True)

_COLUMNS = ["order_id", "account_id", "instrument_name", "direction", "amount", "price"]


@review_app.command("list")
def list_orders(
    account: Annotated[str | None, typer.Option(help="filter by account")] = None,
    limit: int = 100,
) -> None:
    """Orders in needs_review (from ClickHouse), with why they were parked."""
    from oms.sinks.queries import get_order_history

    rows: list[dict[str, Any]] = asyncio.run(
        get_order_history(get_settings(), account_id=account, status="needs_review", limit=limit)
    )
    table = Table(title=f"needs review ({len(rows)})")
    for column in [*_COLUMNS, "reason_message", "updated_at"]:
        table.add_column(column)
    for row in rows:
        cells = [*_COLUMNS, "reason_message", "updated_at"]
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in cells))
    console.print(table)


def _decided(event: OrderEvent) -> bool:
    return event.event_type in (
        OrderEventType.OPEN,
        OrderEventType.FILLED,
        OrderEventType.PARTIALLY_FILLED,
        OrderEventType.CANCELLED,
        OrderEventType.REJECTED,
        OrderEventType.NEEDS_REVIEW,
        OrderEventType.COMMAND_REJECTED,
    )


async def _act(account: str, order_id: str, action: str, wait: float) -> int:
    async with OrderClient(account, follow_events=wait > 0) as client:
        if action == "retry":
            await client.retry_order(order_id)
        else:
            await client.review_cancel(order_id)
        if wait <= 0:
            return 0
        try:
            event = await client.wait_for_event(order_id, _decided, timeout=wait)
        except TimeoutError:
            console.print("[yellow]no answer yet[/yellow]")
            return 1
        reason = f" ({event.reason_code.value})" if event.reason_code else ""
        console.print(f"{order_id}: {event.event_type.value}{reason} {event.message or ''}")
        return 1 if event.event_type is OrderEventType.COMMAND_REJECTED else 0


@review_app.command("retry")
def retry(
    order_id: Annotated[str, typer.Argument()],
    account: Annotated[str, typer.Option()] = "demo",
    wait: float = 15.0,
) -> None:
    """Send a parked order again (after a label lookup at the exchange)."""
    raise typer.Exit(asyncio.run(_act(account, order_id, "retry", wait)))


@review_app.command("cancel")
def cancel(
    order_id: Annotated[str, typer.Argument()],
    account: Annotated[str, typer.Option()] = "demo",
    wait: float = 15.0,
) -> None:
    """Give up on a parked order (cancelled, reason manual_review)."""
    raise typer.Exit(asyncio.run(_act(account, order_id, "cancel", wait)))
