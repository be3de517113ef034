"""Read-only Deribit sessions to accounts: positions (``private/get_positions``) and margins
(``private/get_account_summary``), for the position keeper's reconciliation and the
notifier's margin monitor (:class:`~oms.exchange.interface.VenueAccounts`)."""

from __future__ import annotations

from typing import Any

from oms.exchange.deribit.client import DeribitClient
from oms.exchange.interface import MarginSummary, OnReconnect, VenuePosition
from oms.secrets import Credentials, SecretStore
from oms.settings import ExchangeSettings, Settings


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def position_from_deribit(item: dict[str, Any]) -> VenuePosition:
    """A Deribit ``position`` object as a VenuePosition."""
    return VenuePosition(
        instrument_name=str(item["instrument_name"]),
        size=float(item.get("size") or 0.0),
        average_price=float(item.get("average_price") or 0.0),
        mark_price=_number(item.get("mark_price")),
        floating_pnl=_number(item.get("floating_profit_loss")),
        realized_pnl=_number(item.get("realized_profit_loss")),
    )


def margin_from_deribit(currency: str, summary: dict[str, Any]) -> MarginSummary:
    """A Deribit account summary as a MarginSummary (``equity`` stands in for a missing
    margin balance)."""
    return MarginSummary(
        currency=currency,
        maintenance_margin=float(summary.get("maintenance_margin") or 0.0),
        margin_balance=float(summary.get("margin_balance") or summary.get("equity") or 0.0),
    )


class DeribitAccount:
    """One account's read-only session (its own authenticated connection)."""

    def __init__(
        self,
        settings: ExchangeSettings,
        credentials: Credentials,
        *,
        name: str,
        on_reconnect: OnReconnect | None = None,
    ) -> None:
        self._client = DeribitClient(
            settings.url, credentials, settings=settings, name=name, on_reconnect=on_reconnect
        )

    async def positions(self) -> list[VenuePosition]:
        """Every position of the account (``private/get_positions``, any currency)."""
        await self._client.connect()  # once; later drops reconnect on their own
        items = await self._client.get_positions(currency="any")
        return [position_from_deribit(item) for item in items]

    async def margin(self, currency: str) -> MarginSummary:
        """The account's margin in ``currency`` (``private/get_account_summary``)."""
        await self._client.connect()
        return margin_from_deribit(currency, await self._client.get_account_summary(currency))

    async def close(self) -> None:
        """Close the session's connection."""
        await self._client.close()


class DeribitAccounts:
    """Opens :class:`DeribitAccount` sessions with the accounts' credentials."""

    def __init__(self, settings: Settings, secrets: SecretStore) -> None:
        self._settings = settings.exchange
        self._secrets = secrets

    def open(
        self, account_id: str, *, name: str, on_reconnect: OnReconnect | None = None
    ) -> DeribitAccount | None:
        """A session to the account with its credentials (None without any)."""
        credentials = self._secrets.credentials(account_id)
        if credentials is None:
            return None
        return DeribitAccount(self._settings, credentials, name=name, on_reconnect=on_reconnect)
