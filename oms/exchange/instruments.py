"""Instrument specifications fetched from the exchange, kept fresh.

Validation uses the exchange's own tick sizes and contract sizes rather than constants, so a
new listing or a tick-size change needs no code change. How the specifications are fetched is
the venue's business (``fetch``; Deribit's is
:func:`oms.exchange.deribit.instruments.fetch_instruments`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from oms.backoff import Backoff
from oms.component import Component
from oms.schemas import InstrumentSpec

log = structlog.get_logger(__name__)

FetchInstruments = Callable[[], Awaitable[list[InstrumentSpec]]]


class InstrumentCatalog(Component):
    """The active instruments, refreshed periodically once started."""

    def __init__(self, fetch: FetchInstruments, retry: Backoff, refresh_s: float = 600.0) -> None:
        """``retry``: the waits between failed loads until the first one succeeds."""
        super().__init__("instrument-catalog")
        self._fetch = fetch
        self._retry = retry
        self._refresh_s = refresh_s
        self._specs: dict[str, InstrumentSpec] = {}
        self._loaded = asyncio.Event()

    def get(self, instrument_name: str | None) -> InstrumentSpec | None:
        if instrument_name is None:
            return None
        return self._specs.get(instrument_name)

    def currency_of(self, instrument_name: str) -> str:
        """The instrument's settlement currency (its base currency if none): what an account's
        orders are listed by (Deribit's ``currency`` parameter). Guessed from the name while
        the instrument is not in the catalog."""
        spec = self._specs.get(instrument_name)
        if spec is None:
            return instrument_name.split("-")[0].split("_")[0]
        return spec.settlement_currency or spec.base_currency

    def base_currency(self, instrument_name: str) -> str | None:
        """The instrument's base currency, or None while it is not in the catalog."""
        spec = self._specs.get(instrument_name)
        return spec.base_currency if spec is not None else None

    @property
    def loaded(self) -> bool:
        """Whether the instruments have been fetched at least once."""
        return self._loaded.is_set()

    def __len__(self) -> int:
        return len(self._specs)

    async def load(self) -> None:
        """Fetch the instruments once."""
        specs = {spec.instrument_name: spec for spec in await self._fetch()}
        if specs:
            self._specs = specs
            self._loaded.set()
            log.info("instruments.loaded", count=len(specs))

    async def wait_loaded(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await asyncio.wait_for(self._loaded.wait(), timeout)

    async def on_start(self) -> None:
        """Load now (retrying until the exchange answers), then refresh in the background."""
        self.spawn(self._run(), "refresh")

    async def _run(self) -> None:
        # Not a tenacity loop: it never ends. Until the first load it backs off like a
        # reconnect; after that a refresh, failed or not, comes every refresh_s.
        delays = self._retry.delays()
        while True:
            try:
                await self.load()
            except Exception as exc:
                log.warning("instruments.load_failed", error=str(exc))
            await asyncio.sleep(self._refresh_s if self._loaded.is_set() else next(delays))
