"""Deribit's instrument specifications (``public/get_instruments``), for an
:class:`~oms.exchange.instruments.InstrumentCatalog`."""

from __future__ import annotations

from functools import partial

import structlog

from oms.exchange.deribit.client import DeribitClient, reconnect_backoff
from oms.exchange.instruments import InstrumentCatalog
from oms.schemas import InstrumentSpec
from oms.settings import ExchangeSettings, Settings

log = structlog.get_logger(__name__)

CURRENCIES = ("BTC", "ETH", "USDC")


async def fetch_instruments(settings: ExchangeSettings) -> list[InstrumentSpec]:
    """Every active instrument of every currency, over one anonymous connection."""
    specs: list[InstrumentSpec] = []
    async with DeribitClient(settings.url, None, settings=settings) as client:
        for currency in CURRENCIES:
            try:
                items = await client.call(
                    "public/get_instruments", {"currency": currency, "expired": False}
                )
            except Exception as exc:  # one currency failing must not hide the others
                log.warning("instruments.fetch_failed", currency=currency, error=str(exc))
                continue
            specs.extend(InstrumentSpec.model_validate(item) for item in items)
    return specs


def deribit_catalog(settings: Settings) -> InstrumentCatalog:
    """Deribit's instruments, loaded (retrying with the reconnect backoff) and refreshed."""
    exchange = settings.exchange
    return InstrumentCatalog(partial(fetch_instruments, exchange), reconnect_backoff(exchange))
