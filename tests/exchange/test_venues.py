"""What the processes other than the worker get from a venue (oms.exchange.venues): read-only
account sessions and the live feed, here Deribit's against the paper exchange."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from oms.exchange.deribit.accounts import (
    DeribitAccounts,
    margin_from_deribit,
    position_from_deribit,
)
from oms.exchange.deribit.feed import DeribitFeed
from oms.exchange.instruments import InstrumentCatalog
from oms.exchange.interface import MarginSummary, VenuePosition
from oms.exchange.paper import PaperExchange
from oms.exchange.paper.testing import RpcClient
from oms.exchange.venues import create_accounts, create_feed, create_instrument_catalog
from oms.schemas import ExecutionReport, MarketTick, ReportSource
from oms.secrets import Credentials, SecretStore, write_secrets_file
from oms.settings import PaperExchangeSettings, Settings

ACCOUNT = "venue-a"


def _settings(tmp_path: Path, venue: str = "deribit", url: str | None = None) -> Settings:
    settings = Settings(data_dir=tmp_path)
    exchange = {"venue": venue} | ({"url": url} if url else {})
    return settings.model_copy(update={"exchange": settings.exchange.model_copy(update=exchange)})


def test_each_venue_provides_accounts_feed_and_instruments(tmp_path: Path) -> None:
    write_secrets_file(tmp_path / "secrets.json", {ACCOUNT: Credentials("cid", "secret")})
    secrets = SecretStore(tmp_path / "secrets.json")
    for name in ("deribit", "paper"):
        settings = _settings(tmp_path, name)
        accounts = create_accounts(settings, secrets)
        assert isinstance(accounts, DeribitAccounts)  # the paper exchange speaks Deribit
        assert accounts.open("nobody", name="t") is None  # no credentials
        assert accounts.open(ACCOUNT, name="t") is not None
        assert isinstance(create_feed(settings, secrets), DeribitFeed)
        assert isinstance(create_instrument_catalog(settings), InstrumentCatalog)
    with pytest.raises(ValueError, match="unknown exchange"):
        create_accounts(_settings(tmp_path, "mtgox"), secrets)


def test_deribit_payloads_become_venue_neutral_values() -> None:
    position = position_from_deribit(
        {
            "instrument_name": "BTC-PERPETUAL",
            "size": -500,
            "average_price": 50_000,
            "mark_price": 50_100.5,
            "floating_profit_loss": -0.0001,
            "realized_profit_loss": None,
        }
    )
    assert position == VenuePosition("BTC-PERPETUAL", -500.0, 50_000.0, 50_100.5, -0.0001, None)
    assert position_from_deribit({"instrument_name": "ETH-PERPETUAL"}).size == 0.0
    margin = margin_from_deribit("BTC", {"maintenance_margin": 0.5, "margin_balance": 2})
    assert margin == MarginSummary("BTC", 0.5, 2.0) and margin.ratio == 0.25
    # Without a margin balance the equity stands in.
    assert margin_from_deribit("BTC", {"maintenance_margin": 1, "equity": 4}).ratio == 0.25


def test_margin_ratio_when_the_balance_is_gone() -> None:
    assert MarginSummary("BTC", 0.1, 0.0).ratio == float("inf")
    assert MarginSummary("BTC", 0.0, -1.0).ratio == 0.0


@pytest.fixture
async def px() -> AsyncIterator[PaperExchange]:
    async with PaperExchange(
        settings=PaperExchangeSettings(port=0, tick_interval_s=0.1), rate_limits=False
    ) as exchange:
        yield exchange


async def test_account_sessions_and_feed_against_the_paper_exchange(
    tmp_path: Path, px: PaperExchange
) -> None:
    settings = _settings(tmp_path, "paper", px.ws_url)
    write_secrets_file(tmp_path / "secrets.json", {ACCOUNT: Credentials(ACCOUNT, "s3cret")})
    secrets = SecretStore(tmp_path / "secrets.json")
    admin = await RpcClient.connect(px.ws_url)
    await admin.auth(ACCOUNT, "s3cret")
    session = create_accounts(settings, secrets).open(ACCOUNT, name="test")
    feed = create_feed(settings, secrets)
    ticks: list[MarketTick] = []
    reports: list[ExecutionReport] = []
    ticked, reported = asyncio.Event(), asyncio.Event()

    async def on_tick(tick: MarketTick) -> None:
        ticks.append(tick)
        ticked.set()

    async def on_reports(batch: list[ExecutionReport]) -> None:
        reports.extend(batch)
        if any(r.order_id == "o-venue-test" for r in batch):
            reported.set()

    assert session is not None
    try:
        await admin.result("admin/set_position", instrument_name="BTC-PERPETUAL", size=1_000)
        positions = {p.instrument_name: p for p in await session.positions()}
        assert positions["BTC-PERPETUAL"].size == 1_000
        margin = await session.margin("BTC")
        assert margin.currency == "BTC" and margin.margin_balance > 0

        await feed.follow_market(["BTC-PERPETUAL"], on_tick)
        await asyncio.wait_for(ticked.wait(), 10)
        assert ticks[0].instrument_name == "BTC-PERPETUAL"

        assert await feed.follow_account("nobody", on_reports) is False
        assert await feed.follow_account(ACCOUNT, on_reports) is True
        await admin.result(
            "private/buy",
            instrument_name="BTC-PERPETUAL",
            amount=10,
            type="limit",
            price=1_000.0,
            label="o-venue-test",
        )
        await asyncio.wait_for(reported.wait(), 10)
        report = next(r for r in reports if r.order_id == "o-venue-test")
        assert report.account_id == ACCOUNT and report.source is ReportSource.SUBSCRIPTION
    finally:
        await feed.close()
        await session.close()
        await admin.close()
