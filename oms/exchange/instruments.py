"""Instrument specifications fetched from the exchange (``public/get_instruments``).

Validation uses the exchange's own tick sizes and contract sizes rather than constants, so a
new listing or a tick-size change needs no code change.
"""

from __future__ import annotations

import asyncio

import structlog

from oms.exchange.deribit.client import DeribitClient, reconnect_backoff
from oms.schemas import InstrumentSpec
from oms.settings import ExchangeSettings

log = structlog.get_logger(__name__)

CURRENCIES = ("BTC", "ETH", "USDC")


class InstrumentCatalog:
    """The active instruments, refreshed periodically."""

    def __init__(self, settings: ExchangeSettings, refresh_s: float = 600.0) -> None:
        self._settings = settings
        self._refresh_s = refresh_s
        self._specs: dict[str, InstrumentSpec] = {}
        self._loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None  # a reference keeps the task alive

    def get(self, instrument_name: str | None) -> InstrumentSpec | None:
        if instrument_name is None:
            return None
        return self._specs.get(instrument_name)

    def currency_of(self, instrument_name: str) -> str:
        """The ``currency`` parameter Deribit expects for an instrument's private calls."""
        spec = self._specs.get(instrument_name)
        if spec is None:
            return instrument_name.split("-")[0].split("_")[0]
        return spec.settlement_currency or spec.base_currency

    def __len__(self) -> int:
        return len(self._specs)

    async def load(self) -> None:
        """Fetch every currency's instruments once."""
        async with DeribitClient(self._settings.url, None, settings=self._settings) as client:
            specs: dict[str, InstrumentSpec] = {}
            for currency in CURRENCIES:
                try:
                    items = await client.call(
                        "public/get_instruments", {"currency": currency, "expired": False}
                    )
                except Exception as exc:  # one currency failing must not hide the others
                    log.warning("instruments.fetch_failed", currency=currency, error=str(exc))
                    continue
                for item in items:
                    spec = InstrumentSpec.model_validate(item)
                    specs[spec.instrument_name] = spec
        if specs:
            self._specs = specs
            self._loaded.set()
            log.info("instruments.loaded", count=len(specs))

    async def wait_loaded(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await asyncio.wait_for(self._loaded.wait(), timeout)

    async def start(self) -> None:
        """Load now (retrying until the exchange answers), then refresh in the background."""
        self._task = asyncio.create_task(self._run(), name="instrument-catalog")

    async def _run(self) -> None:
        # Not a tenacity loop: it never ends. Until the first load it backs off like a
        # reconnect; after that a refresh, failed or not, comes every refresh_s.
        delays = reconnect_backoff(self._settings).delays()
        while True:
            try:
                await self.load()
            except Exception as exc:
                log.warning("instruments.load_failed", error=str(exc))
            await asyncio.sleep(self._refresh_s if self._loaded.is_set() else next(delays))
