"""Read-only ccxt sessions to accounts (:class:`~oms.exchange.interface.VenueAccounts`):
positions through ccxt's unified ``fetch_positions``, for the position keeper's
reconciliation of a ccxt venue."""

from __future__ import annotations

from typing import Any

import ccxt.async_support as ccxt

from oms.exchange.ccxt.clients import new_client
from oms.exchange.ccxt.translate import (
    error_from_ccxt,
    market_id_of,
    not_supported,
    position_from_ccxt,
)
from oms.exchange.interface import MarginSummary, OnReconnect, VenuePosition
from oms.secrets import Credentials, SecretStore
from oms.settings import Settings, VenueSettings


class CcxtAccount:
    """One account's read-only session: a REST client of its own (no connection to drop, so
    nothing ever comes back after a drop)."""

    def __init__(self, config: VenueSettings, credentials: Credentials) -> None:
        self._ccxt_id = config.ccxt_id
        self._client: Any = new_client(ccxt, config, credentials)

    async def positions(self) -> list[VenuePosition]:
        """Every position of the account (``fetch_positions``), by the venue's instrument
        names."""
        client = self._client
        try:
            if not client.markets:
                await client.load_markets()
            items = await client.fetch_positions()
        except ccxt.BaseError as exc:
            raise error_from_ccxt(exc, method="fetch_positions") from exc
        return [position_from_ccxt(p, market_id_of(p, client.markets)) for p in items]

    async def margin(self, currency: str) -> MarginSummary:
        """Not mapped: ccxt's unified balance has no maintenance margin."""
        raise not_supported(
            f"ccxt {self._ccxt_id}: margins (no maintenance margin in ccxt's balance)",
            method="fetch_balance",
        )

    async def close(self) -> None:
        """Close the client's connections."""
        await self._client.close()


class CcxtAccounts:
    """Opens :class:`CcxtAccount` sessions with the accounts' credentials at the venue."""

    def __init__(self, settings: Settings, secrets: SecretStore) -> None:
        # The venue settings hold this venue alone (oms.exchange.venues.venue_settings).
        ((_, config),) = settings.exchange.venues.items()
        self._config = config
        self._secrets = secrets

    def open(
        self, account_id: str, *, name: str, on_reconnect: OnReconnect | None = None
    ) -> CcxtAccount | None:
        """A session to the account (None without credentials); ``on_reconnect`` never runs
        (REST has no session to lose)."""
        credentials = self._secrets.credentials(account_id)
        if credentials is None:
            return None
        return CcxtAccount(self._config, credentials)
