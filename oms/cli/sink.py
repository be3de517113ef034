"""``oms sink``: the ClickHouse sink service."""

from __future__ import annotations

import asyncio

import typer

from oms.logs import configure_logging
from oms.settings import get_settings
from oms.sinks.lock import ChdbPathBusy
from oms.sinks.service import SinkAborted, run_sink


def sink() -> None:
    """Store order events, fills, sampled ticks and dead letters in ClickHouse.

    Embedded chDB under the data dir unless OMS_CLICKHOUSE_URL is set.

    Serves read-only SQL on sink.query_host:sink.query_port (used by `oms sql`).
    """
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    try:
        asyncio.run(run_sink(settings))
    except ChdbPathBusy as exc:
        typer.echo(f"oms sink: {exc}", err=True)
        raise typer.Exit(2) from None
    except SinkAborted as exc:
        typer.echo(f"oms sink: {exc}; it will be replayed on the next start", err=True)
        raise typer.Exit(1) from None
