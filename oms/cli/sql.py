"""``oms sql``: read-only SQL against the sink's ClickHouse."""

from __future__ import annotations

import asyncio
import csv
import sys
from enum import StrEnum

import orjson
import typer
from rich.console import Console
from rich.table import Table

from oms.settings import get_settings
from oms.sinks.errors import QueryError
from oms.sinks.query import QueryResult, run_query


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


def _cell(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def render(result: QueryResult, fmt: OutputFormat, console: Console | None = None) -> None:
    """Print a result as a rich table, JSON (one object) or CSV with a header."""
    if fmt is OutputFormat.JSON:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
    elif fmt is OutputFormat.CSV:
        writer = csv.writer(sys.stdout)
        writer.writerow(result.columns)
        # Empty field for NULL, as most CSV readers expect.
        writer.writerows(["" if v is None else _cell(v) for v in row] for row in result.rows)
    else:
        console = console or Console()
        table = Table(*result.columns, caption=f"{len(result.rows)} rows, {result.elapsed_ms} ms")
        for row in result.rows:
            table.add_row(*(_cell(v) for v in row))
        console.print(table)


def sql(
    query: str = typer.Argument(..., help="one SELECT/WITH/SHOW/DESCRIBE/EXPLAIN statement"),
    format: OutputFormat = typer.Option(
        OutputFormat.TABLE, "--format", "-f", help="table, json or csv"
    ),
) -> None:
    """Run read-only SQL against the sink's ClickHouse.

    Embedded: through the running sink's endpoint, else opens the data read-only.

    Add FINAL for exact counts after replays, e.g. SELECT count() FROM executions FINAL.
    """
    try:
        result = asyncio.run(run_query(get_settings(), query))
    except QueryError as exc:
        typer.echo(f"oms sql: {exc}", err=True)
        raise typer.Exit(1) from None
    render(result, format)
