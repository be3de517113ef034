"""``oms up``: the whole local stack in the foreground."""

from __future__ import annotations

from typing import Annotated

import typer

from oms.cli.dev import require_dev_install


def up(
    workers: Annotated[int, typer.Option(min=1, help="number of order-processing workers")] = 1,
    sink: Annotated[bool, typer.Option(help="run the ClickHouse sink")] = True,
    live: Annotated[
        bool | None, typer.Option(help="live status table (default: when stdout is a terminal)")
    ] = None,
    secure: Annotated[
        bool,
        typer.Option(
            help="Kafka over SASL_SSL with a principal per component and least-privilege ACLs"
        ),
    ] = False,
) -> None:
    """Run Kafka, the paper exchange, gateway, N workers, the position keeper, the sink, the
    notifier and the fan-out to per-account topics until Ctrl-C.

    Fetches and starts a local Kafka if needed, creates the topics and a demo secrets file
    (.local/secrets.json), restarts crashed processes, logs each to .local/logs/<name>.log.
    Ctrl-C or SIGTERM stops everything in reverse order; data stays under .local/.
    OMS_ACCESS__PER_ACCOUNT_TOPICS=false leaves the fan-out out.
    """
    require_dev_install("oms up")
    from oms_dev.devstack.stack import run_up

    code = run_up(workers=workers, sink=sink, live=live, secure=secure)
    if code:
        raise typer.Exit(code)
