"""CLI commands that run the long-lived services of the OMS."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Annotated

import typer

from oms.logs import configure_logging
from oms.settings import get_settings


def worker(
    web_port: Annotated[int | None, typer.Option(help="Faust web port (health, stats)")] = None,
    loglevel: Annotated[str, typer.Option(help="crit, error, warn, info, debug")] = "info",
) -> None:
    """Run an order-processing worker (Faust): intake, execution, order state."""
    from oms.streams.worker import OrderWorker

    settings = get_settings()
    if web_port is not None:
        settings = settings.model_copy(
            update={"worker": settings.worker.model_copy(update={"web_port": web_port})}
        )
    configure_logging(loglevel, settings.log_json)
    OrderWorker(settings).run(loglevel=loglevel)


def gateway(
    loglevel: Annotated[str, typer.Option()] = "info",
) -> None:
    """Run the exchange gateway: market ticks and user order/trade streams into Kafka."""
    from oms.exchange.gateway import ExchangeGateway
    from oms.exchange.venues import create_feed, venue_accounts
    from oms.kafka.security import KafkaConnection
    from oms.secrets import SecretStore

    settings = get_settings()
    configure_logging(loglevel, settings.log_json)

    async def run() -> None:
        secrets = SecretStore(settings.resolved_secrets_file, settings.risk.exchange_accounts())
        accounts = venue_accounts(settings, secrets.trading_accounts(settings.accounts))
        feeds = {venue: create_feed(settings, secrets, venue) for venue in accounts}
        kafka = KafkaConnection.from_settings(settings)
        service = ExchangeGateway(settings, feeds, accounts, kafka)
        await run_until_signalled(service.start, service.stop)

    asyncio.run(run())


def fanout(
    loglevel: Annotated[str, typer.Option()] = "info",
) -> None:
    """Run the fan-out: order events, positions and notifications copied to each account's
    own topics (oms.acct.<account>.events|positions|notifications), at least once."""
    from oms.fanout.service import AccountFanout

    settings = get_settings()
    configure_logging(loglevel, settings.log_json)
    if not settings.access.per_account_topics:
        typer.echo("per-account topics are off (OMS_ACCESS__PER_ACCOUNT_TOPICS=false)", err=True)
        raise typer.Exit(2)

    async def run() -> None:
        service = AccountFanout(settings)
        await run_until_signalled(service.start, service.stop)

    asyncio.run(run())


async def run_until_signalled(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> None:
    """Start a service, wait for SIGINT/SIGTERM, stop it cleanly."""
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    await start()
    try:
        await done.wait()
    finally:
        await stop()
