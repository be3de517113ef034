"""A ccxt venue's live account feed (ccxt.pro over the exchange's WebSocket) and its read-only
account views, against the paper exchange: what the gateway and the position keeper get from
a venue of kind ``ccxt``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from oms.exchange.ccxt.accounts import CcxtAccounts
from oms.exchange.ccxt.clients import ws_url_of
from oms.exchange.ccxt.feed import CcxtFeed, RecentIds, reports_from_trades
from oms.exchange.ccxt.translate import position_from_ccxt
from oms.exchange.errors import NotSupported
from oms.exchange.interface import VenuePosition
from oms.exchange.paper import PaperExchange
from oms.exchange.paper.testing import RpcClient
from oms.exchange.venues import create_accounts, create_feed, venue_accounts
from oms.schemas import ExchangeOrderState, ExecutionReport, ReportSource
from oms.secrets import Credentials, SecretStore, write_secrets_file
from oms.settings import PaperExchangeSettings, Settings, VenueSettings

ACCOUNT, SECRET = "feed-acct", "feed-s3cret"
TAKER, TAKER_SECRET = "feed-taker", "taker-s3cret"
INSTRUMENT = "BTC-PERPETUAL"


@pytest.fixture
async def px() -> AsyncIterator[PaperExchange]:
    # A still market (no ticks after the first quotes): an order inside the spread stays the
    # best price until the counter-order takes it.
    async with PaperExchange(
        settings=PaperExchangeSettings(port=0, tick_interval_s=3600), rate_limits=False
    ) as exchange:
        # ccxt signs plain HTTP requests, which need an existing account (no auto-creation).
        exchange.accounts.add(ACCOUNT, ACCOUNT, SECRET)
        exchange.accounts.add(TAKER, TAKER, TAKER_SECRET)
        yield exchange


def _settings(tmp_path: Path, px: PaperExchange) -> tuple[Settings, SecretStore]:
    write_secrets_file(tmp_path / "secrets.json", {ACCOUNT: Credentials(ACCOUNT, SECRET)})
    venues = {
        "deribit": VenueSettings(),
        "second": VenueSettings(kind="ccxt", ccxt_id="deribit", url=f"http://127.0.0.1:{px.port}"),
    }
    settings = Settings(data_dir=tmp_path)
    exchange = settings.exchange.model_copy(update={"url": px.ws_url, "venues": venues})
    return (
        settings.model_copy(update={"exchange": exchange}),
        SecretStore(tmp_path / "secrets.json"),
    )


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Wait for the exchange to have registered a subscription (it has no event for that)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.02)


def _subscribed(px: PaperExchange, channel: str) -> bool:
    return any(channel in session.channels for session in px.state.sessions)


async def test_feed_reports_a_resting_order_filled_later_by_someone_else(
    tmp_path: Path, px: PaperExchange
) -> None:
    settings, secrets = _settings(tmp_path, px)
    feed = create_feed(settings, secrets, "second")
    assert isinstance(feed, CcxtFeed) and feed.unavailable is None
    reports: list[ExecutionReport] = []
    changed = asyncio.Event()

    async def on_reports(batch: list[ExecutionReport]) -> None:
        reports.extend(batch)
        changed.set()

    async def wait_for(predicate: Callable[[ExecutionReport], bool]) -> ExecutionReport:
        async with asyncio.timeout(10):
            while True:
                found = next((r for r in reports if predicate(r)), None)
                if found is not None:
                    return found
                changed.clear()
                await changed.wait()

    maker = await RpcClient.connect(px.ws_url)
    taker = await RpcClient.connect(px.ws_url)
    try:
        await maker.auth(ACCOUNT, SECRET)
        await taker.auth(TAKER, TAKER_SECRET)
        assert await feed.follow_account("nobody", on_reports) is False
        assert await feed.follow_account(ACCOUNT, on_reports) is True
        await _until(lambda: _subscribed(px, "user.orders.any.any.raw"))
        await _until(lambda: _subscribed(px, "user.trades.any.any.raw"))

        ticker = await maker.result("public/ticker", instrument_name=INSTRUMENT)
        price = float(ticker["best_ask_price"]) - 1.0  # inside the spread: the best ask
        assert price > float(ticker["best_bid_price"])
        await maker.result(
            "private/sell", instrument_name=INSTRUMENT, amount=10, type="limit", price=price,
            label="o-feed-1",
        )  # fmt: skip
        # An order placed outside the OMS (no label) is not reported.
        await maker.result(
            "private/sell", instrument_name=INSTRUMENT, amount=10, type="limit",
            price=price + 5_000,
        )  # fmt: skip
        opened = await wait_for(lambda r: r.order_state is ExchangeOrderState.OPEN)
        assert (opened.order_id, opened.account_id) == ("o-feed-1", ACCOUNT)
        assert opened.source is ReportSource.SUBSCRIPTION and opened.instrument_name == INSTRUMENT

        # Filled later by another account's order, not by anything the OMS did.
        await taker.result("private/buy", instrument_name=INSTRUMENT, amount=10, type="market")
        filled = await wait_for(lambda r: r.order_state is ExchangeOrderState.FILLED)
        fills = await wait_for(lambda r: bool(r.fills))
    finally:
        await maker.close()
        await taker.close()
        await feed.close()

    assert filled.order_id == "o-feed-1" and filled.filled_amount == 10
    assert filled.source is ReportSource.SUBSCRIPTION
    assert fills.order_id == "o-feed-1" and fills.source is ReportSource.SUBSCRIPTION
    assert [(f.amount, f.price) for f in fills.fills] == [(10.0, price)]
    assert fills.exchange_order_id == filled.exchange_order_id
    assert {r.order_id for r in reports} == {"o-feed-1"}
    assert feed.counters["external_orders"] >= 1
    # Each trade once, though ccxt.pro hands back every trade it holds on each watch.
    assert sum(len(r.fills) for r in reports if r.fills) == 1


async def test_ccxt_account_views_read_the_venues_positions(
    tmp_path: Path, px: PaperExchange
) -> None:
    settings, secrets = _settings(tmp_path, px)
    accounts = create_accounts(settings, secrets, "second")
    assert isinstance(accounts, CcxtAccounts)
    assert accounts.open("nobody", name="t") is None
    session = accounts.open(ACCOUNT, name="t")
    assert session is not None
    admin = await RpcClient.connect(px.ws_url)
    try:
        await admin.auth(ACCOUNT, SECRET)
        await admin.result(
            "admin/set_position", instrument_name=INSTRUMENT, size=-700, average_price=60_000.0
        )
        positions = {p.instrument_name: p for p in await session.positions()}
        assert positions[INSTRUMENT].size == -700
        assert positions[INSTRUMENT].average_price == 60_000.0
        with pytest.raises(NotSupported):
            await session.margin("BTC")
    finally:
        await admin.close()
        await session.close()


def test_accounts_per_venue_follow_the_venue_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    venues = {
        "second": VenueSettings(kind="ccxt", ccxt_id="deribit", accounts=["a"]),
        "deribit": VenueSettings(),
    }
    settings = settings.model_copy(
        update={"exchange": settings.exchange.model_copy(update={"venues": venues})}
    )
    # The primary venue first, whatever the order of the settings.
    assert list(venue_accounts(settings, ["a", "b"]).items()) == [
        ("deribit", ["a", "b"]),
        ("second", ["a"]),
    ]


def test_the_websocket_url_of_a_ccxt_venue() -> None:
    def ws(**fields: object) -> str | None:
        return ws_url_of(VenueSettings.model_validate({"kind": "ccxt"} | fields))

    assert ws(ccxt_id="deribit") is None  # ccxt's own URLs
    assert ws(ccxt_id="deribit", url="http://127.0.0.1:9/") == "ws://127.0.0.1:9/ws/api/v2"
    assert ws(ccxt_id="deribit", url="https://test.deribit.com") == (
        "wss://test.deribit.com/ws/api/v2"
    )
    assert ws(ccxt_id="okx", url="https://x", ws_url="wss://y/ws") == "wss://y/ws"
    with pytest.raises(ValueError, match="ws_url"):
        ws(ccxt_id="okx", url="https://x")


def test_an_exchange_ccxt_pro_cannot_stream_has_no_live_feed(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    venues = {
        "deribit": VenueSettings(),
        "rest": VenueSettings(kind="ccxt", ccxt_id="okx", url="https://okx.invalid"),
    }
    settings = settings.model_copy(
        update={"exchange": settings.exchange.model_copy(update={"venues": venues})}
    )
    feed = create_feed(settings, SecretStore(tmp_path / "none.json"), "rest")
    assert isinstance(feed, CcxtFeed) and feed.unavailable is not None


def test_ccxt_positions_and_trades_map_to_ours() -> None:
    long = {"contracts": 30.0, "side": "long", "entryPrice": 50_000, "markPrice": 50_010}
    assert position_from_ccxt(long, INSTRUMENT) == VenuePosition(
        INSTRUMENT, 30.0, 50_000.0, 50_010.0, None, None
    )
    short = {"contracts": -20.0, "side": "short", "entryPrice": 3_000, "unrealizedPnl": 0.1}
    assert position_from_ccxt(short, "ETH-PERPETUAL").size == -20.0
    assert position_from_ccxt({"contracts": None, "side": "short"}, INSTRUMENT).size == 0.0

    markets = {"BTC/USD:BTC": {"id": INSTRUMENT}}

    def trade(trade_id: str, label: str | None) -> dict[str, object]:
        return {
            "id": trade_id, "order": "77", "symbol": "BTC/USD:BTC", "side": "buy",
            "amount": 10.0, "price": 50_000.0, "timestamp": 1, "info": {"label": label},
        }  # fmt: skip

    seen = RecentIds(limit=2)
    first = reports_from_trades([trade("t1", "o-1"), trade("t2", None)], "a", markets, seen)
    assert [(r.order_id, [f.trade_id for f in r.fills]) for r in first] == [("o-1", ["t1"])]
    assert first[0].instrument_name == INSTRUMENT and first[0].order_state is None
    # The same trades again (ccxt.pro's cache): nothing new.
    assert reports_from_trades([trade("t1", "o-1")], "a", markets, seen) == []
    again = reports_from_trades([trade("t1", "o-1"), trade("t3", "o-1")], "a", markets, seen)
    assert [f.trade_id for r in again for f in r.fills] == ["t3"]
    assert len(seen) == 2  # bounded
