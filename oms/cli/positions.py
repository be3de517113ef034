"""``oms positions ...`` (keeper, list, history, ack) and ``oms stats``."""

from __future__ import annotations

import asyncio
import getpass
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from oms.settings import get_settings

positions_app = typer.Typer(help="Positions: the keeper, current book, review.")
console = Console()

LIST_COLUMNS = [
    "account_id", "instrument_name", "venue", "size", "average_price", "realized_pnl",
    "unrealized_pnl", "mark_price", "exposure_usd", "fills", "needs_review", "updated_at",
]  # fmt: skip


CURRENCY_COLUMNS = [
    "account_id", "currency", "net_exposure_usd", "gross_exposure_usd", "positions",
    "venues", "instruments", "unpriced_positions", "needs_review",
]  # fmt: skip


def _table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    return table


@positions_app.command("run")
def run(
    web_port: Annotated[int | None, typer.Option(help="web port (health, stats)")] = None,
    loglevel: Annotated[str, typer.Option(help="crit, error, warn, info, debug")] = "info",
) -> None:
    """Run the position keeper (Faust app ``<worker.app_id>-positions``)."""
    from oms.logs import configure_logging
    from oms.positions.keeper import PositionKeeper

    settings = get_settings()
    if web_port is not None:
        settings = settings.model_copy(
            update={"positions": settings.positions.model_copy(update={"web_port": web_port})}
        )
    configure_logging(loglevel, settings.log_json)
    PositionKeeper(settings).run(loglevel=loglevel)


@positions_app.command("list")
def list_positions(
    account: Annotated[str | None, typer.Option(help="only this account")] = None,
    instrument: Annotated[str | None, typer.Option(help="only this instrument")] = None,
    flat: Annotated[bool, typer.Option("--all", help="include flat positions")] = False,
    venue: Annotated[str | None, typer.Option(help="only this venue")] = None,
    by_currency: Annotated[
        bool,
        typer.Option("--by-currency", help="net USD exposure per account and currency, "
                     "summed over instruments and venues"),
    ] = False,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Current positions from ClickHouse (one row per account, instrument and venue), with
    mark, unrealized PnL and review flag; or with ``--by-currency`` the exposure summed
    over venues."""
    from oms.positions.queries import get_current_positions, get_positions_by_currency

    if by_currency:
        totals = asyncio.run(get_positions_by_currency(get_settings(), account))
        if json:
            print(orjson.dumps(totals).decode())
            return
        console.print(_table(f"exposure by currency ({len(totals)})", totals, CURRENCY_COLUMNS))
        return
    rows = asyncio.run(get_current_positions(get_settings(), account, instrument, flat, venue))
    if json:
        print(orjson.dumps(rows).decode())
        return
    console.print(_table(f"positions ({len(rows)})", rows, LIST_COLUMNS))


@positions_app.command("history")
def history(
    account: str,
    instrument: str,
    limit: Annotated[int, typer.Option()] = 100,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every recorded change of one position (audit trail)."""
    from oms.positions.queries import get_position_history

    rows = asyncio.run(get_position_history(get_settings(), account, instrument, limit=limit))
    if json:
        print(orjson.dumps(rows).decode())
        return
    columns = [
        "timestamp", "record_type", "trade_id", "order_id", "direction", "trade_amount",
        "trade_price", "size_before", "size", "average_price", "realized_pnl", "actor",
        "message",
    ]  # fmt: skip
    console.print(_table(f"{account} {instrument} ({len(rows)})", rows, columns))


@positions_app.command("ack")
def ack(
    account: str,
    instrument: str,
    actor: Annotated[str | None, typer.Option(help="who reviewed it")] = None,
) -> None:
    """Acknowledge a position flagged for review (mismatch with the exchange, bad fill)."""
    from oms.positions.commands import acknowledge

    who = actor or getpass.getuser()
    asyncio.run(acknowledge(get_settings(), account, instrument, who))
    console.print(f"acknowledged {account} {instrument} (by {who})")


@positions_app.command("stats")
def stats(
    account: Annotated[str | None, typer.Option(help="only this account")] = None,
    days: Annotated[int, typer.Option(help="days of daily figures")] = 30,
    venue: Annotated[str | None, typer.Option(help="only this venue")] = None,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Position statistics from ClickHouse: per day and venue, exposure, PnL, fill ratio,
    submit latency, slippage."""
    print_position_statistics(account, days, json, venue)


def print_position_statistics(
    account: str | None, days: int, json: bool, venue: str | None = None
) -> None:
    """Print ``calculate_position_statistics`` (also used by ``oms stats --positions``)."""
    from oms.positions.queries import calculate_position_statistics

    result = asyncio.run(calculate_position_statistics(get_settings(), account, days, venue))
    if json:
        print(orjson.dumps(result).decode())
        return
    render_position_statistics(result)


def render_position_statistics(result: dict[str, Any]) -> None:
    """The statistics as terminal tables: per day, exposure, and money totals per unit."""
    daily_columns = [
        "day", "account_id", "instrument_name", "venue", "fills", "turnover", "realized_pnl",
        "fees", "orders", "fill_ratio", "avg_submit_latency_ms", "avg_slippage_bps",
        "corrections",
    ]  # fmt: skip
    console.print(_table("daily", result["daily"], daily_columns))
    venue_columns = [
        "venue", "orders", "fill_ratio", "avg_submit_latency_ms", "avg_slippage_bps",
        "slippage_fills",
    ]  # fmt: skip
    console.print(_table("execution by venue", result["execution_by_venue"], venue_columns))
    exposure = [{"instrument_name": k, **v} for k, v in result["exposure_by_instrument"].items()]
    exposure_columns = ["instrument_name", "size", "exposure_usd", "unrealized_pnl", "pnl_currency"]
    console.print(_table("exposure by instrument", exposure, exposure_columns))
    by_currency = [{"currency": k, **v} for k, v in result["exposure_by_currency"].items()]
    console.print(_table("exposure by currency", by_currency, ["currency", "exposure_usd"]))
    money = result["totals_by_currency"]
    money_columns = [
        "currency", "fills", "realized_pnl", "fees", "unrealized_pnl", "turnover", "turnover_unit",
    ]  # fmt: skip
    console.print(_table("totals by currency", money, money_columns))
    console.print(_table("totals", [result["totals"]], list(result["totals"])))
