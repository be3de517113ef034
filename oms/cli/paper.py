"""``oms paper-exchange``: run the local Deribit-compatible exchange."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated

import typer

from oms.exchange.paper import Faults, serve_forever
from oms.logs import configure_logging
from oms.settings import get_settings


def paper_exchange(
    host: Annotated[str | None, typer.Option(help="interface to bind")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (0: any free port)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the synthetic market")] = None,
    accounts_file: Annotated[
        Path | None, typer.Option(help='JSON {"accounts": {id: {client_id, client_secret, tier}}}')
    ] = None,
    tick_interval: Annotated[float | None, typer.Option(help="market tick, seconds")] = None,
    drop_every: Annotated[float, typer.Option(help="drop all connections every N s")] = 0.0,
    latency_ms: Annotated[float, typer.Option(help="added latency per request, ms")] = 0.0,
    reject_fraction: Annotated[float, typer.Option(help="fraction of orders rejected")] = 0.0,
    rate_limit_fraction: Annotated[
        float, typer.Option(help="fraction of orders answered 10028")
    ] = 0.0,
    delay_fraction: Annotated[float, typer.Option(help="fraction of replies delayed")] = 0.0,
    delay_s: Annotated[float, typer.Option(help="delay of those replies, s")] = 0.0,
    reply_first: Annotated[
        bool, typer.Option(help="send a request's reply before its own notifications")
    ] = False,
    no_rate_limits: Annotated[bool, typer.Option(help="disable Deribit rate limits")] = False,
    no_auto_create: Annotated[
        bool, typer.Option(help="refuse unknown client_ids instead of creating accounts")
    ] = False,
    min_heartbeat: Annotated[
        float, typer.Option(help="smallest public/set_heartbeat interval accepted, s")
    ] = 10.0,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="where the durable state lives (default: <data_dir>/paper)"),
    ] = None,
    reset: Annotated[
        bool,
        typer.Option(help="discard the stored state and start fresh (ids are still never reused)"),
    ] = False,
    in_memory: Annotated[
        bool, typer.Option(help="keep nothing across restarts (no state directory)")
    ] = False,
) -> None:
    """Run the paper exchange (Deribit API v2 over WebSocket and HTTP) until Ctrl-C.

    Durable by default: orders, trades, positions, balances, accounts and id counters survive
    a restart (even SIGKILL) under the state directory.
    """
    settings = get_settings()
    paper = settings.paper.model_copy()
    overrides = {
        "host": host,
        "port": port,
        "seed": seed,
        "tick_interval_s": tick_interval,
    }
    for name, value in overrides.items():
        if value is not None:
            setattr(paper, name, value)
    if no_auto_create:
        paper.auto_create_accounts = False
    if state_dir is not None:
        paper.state_dir = state_dir
    if in_memory:
        paper.durable = False
    configure_logging(settings.log_level, settings.log_json)
    faults = Faults(
        drop_every_s=drop_every,
        latency_ms=latency_ms,
        reject_fraction=reject_fraction,
        rate_limit_fraction=rate_limit_fraction,
        delay_fraction=delay_fraction,
        delay_s=delay_s,
        reply_first=1.0 if reply_first else 0.0,
    )
    accounts = accounts_file
    if accounts is None and settings.resolved_secrets_file.exists():
        accounts = settings.resolved_secrets_file
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve_forever(
                paper,
                accounts,
                faults,
                rate_limits=not no_rate_limits,
                min_heartbeat_s=min_heartbeat,
                state_dir=paper.resolved_state_dir(settings.data_dir) if paper.durable else None,
                reset=reset,
            )
        )
