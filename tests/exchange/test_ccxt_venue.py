"""The ccxt adapter (oms.exchange.ccxt) as an Exchange, against the paper exchange through
ccxt's own deribit client, and the venue router that puts it next to the native one.

Every order is checked at the exchange by its label with the exchange's own API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from oms.exchange.ccxt.exchange import CcxtExchange
from oms.exchange.deribit.venue import DeribitVenue
from oms.exchange.errors import InvalidParams, NotOpenOrder, NotSupported
from oms.exchange.paper import PaperExchange
from oms.exchange.paper.testing import RpcClient
from oms.exchange.router import UnknownVenue, VenueRouter
from oms.exchange.venues import create_exchange, venue_settings
from oms.schemas import (
    Direction,
    ExchangeOrderState,
    OrderRecord,
    OrderRequest,
    OrderType,
    ReasonCode,
)
from oms.secrets import Credentials, SecretStore, write_secrets_file
from oms.settings import PaperExchangeSettings, Settings, VenueSettings
from oms.streams.venue_rules import venue_refusal

ACCOUNT = "ccxt-acct"
SECRET = "ccxt-s3cret"


@pytest.fixture
async def px() -> AsyncIterator[PaperExchange]:
    async with PaperExchange(
        settings=PaperExchangeSettings(port=0, tick_interval_s=0.1), rate_limits=False
    ) as exchange:
        # ccxt signs plain HTTP requests, which need an existing account (no auto-creation).
        exchange.accounts.add(ACCOUNT, ACCOUNT, SECRET)
        yield exchange


def _settings(tmp_path: Path, venues: dict[str, VenueSettings], url: str) -> Settings:
    write_secrets_file(tmp_path / "secrets.json", {ACCOUNT: Credentials(ACCOUNT, SECRET)})
    settings = Settings(data_dir=tmp_path)
    exchange = settings.exchange.model_copy(update={"url": url, "venues": venues})
    return settings.model_copy(update={"exchange": exchange})


def _order(n: int, **fields: object) -> OrderRecord:
    values: dict[str, object] = {
        "order_id": f"o-ccxt-{n}",
        "request_id": f"r-{n}",
        "account_id": ACCOUNT,
        "venue": "second",
        "instrument_name": "BTC-PERPETUAL",
        "direction": Direction.BUY,
        "order_type": OrderType.LIMIT,
        "amount": 10.0,
        "price": 1_000.0,
    }
    return OrderRecord.model_validate(values | fields)


@pytest.fixture
async def venue(tmp_path: Path, px: PaperExchange) -> AsyncIterator[CcxtExchange]:
    venues = {
        "deribit": VenueSettings(),
        "second": VenueSettings(kind="ccxt", ccxt_id="deribit", url=f"http://127.0.0.1:{px.port}"),
    }
    settings = _settings(tmp_path, venues, px.ws_url)
    exchange = CcxtExchange(
        venue_settings(settings, "second"), SecretStore(settings.resolved_secrets_file)
    )
    await exchange.start()
    try:
        yield exchange
    finally:
        await exchange.stop()


async def _by_label(px: PaperExchange, label: str) -> list[dict[str, object]]:
    admin = await RpcClient.connect(px.ws_url)
    try:
        await admin.auth(ACCOUNT, SECRET)
        found: list[dict[str, object]] = await admin.result(
            "private/get_order_state_by_label", currency="BTC", label=label
        )
        return found
    finally:
        await admin.close()


async def test_orders_through_ccxt_carry_our_label_and_map_back(
    venue: CcxtExchange, px: PaperExchange
) -> None:
    await venue.instruments.wait_loaded(10)
    spec = venue.instruments.get("BTC-PERPETUAL")
    assert spec is not None and spec.min_trade_amount == 10 and spec.tick_size > 0
    assert spec.contract_size == 10 and spec.base_currency == "BTC"

    resting = _order(1)
    placed = await venue.place(resting)
    assert placed.order_id == resting.order_id and placed.order_state is ExchangeOrderState.OPEN
    assert placed.amount == 10 and placed.price == 1_000 and placed.direction is Direction.BUY
    [at_exchange] = await _by_label(px, resting.order_id)
    assert at_exchange["order_id"] == placed.exchange_order_id

    found = await venue.find(resting)
    assert found is not None and found.exchange_order_id == placed.exchange_order_id
    assert await venue.find(_order(99)) is None  # never sent: not found, no guessing

    with_id = resting.model_copy(update={"exchange_order_id": placed.exchange_order_id})
    assert (await venue.refresh(with_id)).order_state is ExchangeOrderState.OPEN
    listed = await venue.open_orders(ACCOUNT, "BTC")
    assert [r.order_id for r in listed] == [resting.order_id]

    amended = await venue.amend(resting, 20.0, 1_500.0)
    assert amended.amount == 20 and amended.price == 1_500
    assert (await _by_label(px, resting.order_id))[0]["amount"] == 20

    await venue.cancel(resting)
    await venue.cancel(resting)  # idempotent: already gone is fine
    assert (await _by_label(px, resting.order_id))[0]["order_state"] == "cancelled"
    with pytest.raises(NotOpenOrder):
        await venue.amend(resting, 30.0, 1_500.0)

    market = _order(2, order_type=OrderType.MARKET, price=None)
    filled = await venue.place(market)
    assert filled.order_state is ExchangeOrderState.FILLED and filled.filled_amount == 10
    assert filled.fills and sum(f.amount for f in filled.fills) == 10
    assert all(f.direction is Direction.BUY and f.trade_id for f in filled.fills)
    assert filled.exchange_order_id is not None
    fills = await venue.fills(market, filled.exchange_order_id)
    assert {f.trade_id for f in fills} == {f.trade_id for f in filled.fills}


async def test_what_cannot_be_mapped_is_refused_typed(venue: CcxtExchange) -> None:
    await venue.instruments.wait_loaded(10)
    stop = _order(3, order_type=OrderType.STOP_MARKET, price=None, trigger_price=1_000.0)
    with pytest.raises(NotSupported) as refused:
        await venue.place(stop)
    assert refused.value.reason == "not_supported" and not refused.value.retryable
    # ccxt would round these silently: refused instead, before anything is sent.
    with pytest.raises(InvalidParams, match="tick"):
        await venue.place(_order(4, price=1_000.3))
    with pytest.raises(InvalidParams, match="step"):
        await venue.place(_order(4, amount=15.0))
    # The venue's own error code (Deribit's, inside ccxt's message) picks our class.
    with pytest.raises(InvalidParams) as invalid:
        await venue.place(_order(4, price=None))  # a limit order without a price
    assert invalid.value.code != 0
    with pytest.raises(InvalidParams, match="not a market"):
        await venue.place(_order(5, instrument_name="NOPE-PERPETUAL"))


async def test_router_sends_each_order_to_its_venue(tmp_path: Path, px: PaperExchange) -> None:
    venues = {
        "deribit": VenueSettings(),
        "second": VenueSettings(
            kind="ccxt", ccxt_id="deribit", url=f"http://127.0.0.1:{px.port}", accounts=[ACCOUNT]
        ),
    }
    settings = _settings(tmp_path, venues, px.ws_url)
    router = create_exchange(settings, SecretStore(settings.resolved_secrets_file))
    assert isinstance(router, VenueRouter)
    assert isinstance(router.exchange("deribit"), DeribitVenue)
    assert isinstance(router.exchange("second"), CcxtExchange)
    await router.start()
    try:
        await router.instruments.wait_loaded(10)
        await router.exchange("second").instruments.wait_loaded(10)
        assert router.instrument("second", "BTC-PERPETUAL") is not None
        assert router.instrument("elsewhere", "BTC-PERPETUAL") is None
        native = await router.place(_order(6, venue="deribit"))
        via_ccxt = await router.place(_order(7))
        assert native.venue == "deribit" and via_ccxt.venue == "second"
        assert native.exchange_order_id and via_ccxt.exchange_order_id
        assert await router.order_entry_delay(ACCOUNT) >= 0.0
        with pytest.raises(UnknownVenue):
            await router.place(_order(8, venue="elsewhere"))
    finally:
        await router.stop()

    def request(venue: str, account: str = ACCOUNT) -> OrderRequest:
        return OrderRequest(
            request_id="r", account_id=account, venue=venue, instrument_name="BTC-PERPETUAL",
            amount=10.0, direction=Direction.BUY, price=1_000.0,
        )  # fmt: skip

    assert venue_refusal(router, request("second")) is None
    unknown = venue_refusal(router, request("elsewhere"))
    assert unknown is not None and unknown.reason_code is ReasonCode.UNKNOWN_VENUE
    other = venue_refusal(router, request("second", account="someone-else"))
    assert other is not None and other.reason_code is ReasonCode.VENUE_NOT_ALLOWED
    # The default setup knows only the default venue.
    assert venue_refusal(None, request("deribit")) is None
    default = venue_refusal(None, request("second"))
    assert default is not None and default.reason_code is ReasonCode.UNKNOWN_VENUE


def test_venue_settings_are_checked() -> None:
    assert list(Settings().exchange.venues) == ["deribit"]  # today's single venue
    with pytest.raises(ValueError, match="ccxt_id"):
        VenueSettings(kind="ccxt")
    with pytest.raises(ValueError, match="primary venue"):
        Settings().exchange.model_validate(
            {"venues": {"x": {"kind": "ccxt", "ccxt_id": "deribit"}}}
        )


def test_ccxt_errors_become_typed_errors() -> None:
    import ccxt.async_support as ccxt

    from oms.exchange.ccxt.translate import error_from_ccxt
    from oms.exchange.errors import (
        ConnectionLost,
        ExchangeBusy,
        ExchangeError,
        NotEnoughFunds,
        OrderNotFound,
        RateLimited,
        RequestTimeout,
        Unauthorized,
    )

    def typed(exc: Exception) -> ExchangeError:
        return error_from_ccxt(exc, method="create_order")

    # Deribit's own code in ccxt's message: the same class as the native adapter's.
    body = 'deribit {"jsonrpc":"2.0","error":{"code":10009,"message":"not_enough_funds"}}'
    funds = typed(ccxt.InsufficientFunds(body))
    assert type(funds) is NotEnoughFunds and funds.code == 10009
    assert funds.reason == "not_enough_funds" and funds.method == "create_order"
    # Otherwise ccxt's class decides; unknown outcomes stay unknown.
    assert type(typed(ccxt.RateLimitExceeded("slow down"))) is RateLimited
    timeout = typed(ccxt.RequestTimeout("no reply"))
    assert type(timeout) is RequestTimeout and timeout.outcome_unknown
    lost = typed(ccxt.NetworkError("reset by peer"))
    assert type(lost) is ConnectionLost and lost.outcome_unknown and lost.retryable
    assert type(typed(ccxt.OnMaintenance("later"))) is ExchangeBusy
    assert type(typed(ccxt.OrderNotFound("gone"))) is OrderNotFound
    assert type(typed(ccxt.PermissionDenied("no"))) is Unauthorized
    assert type(typed(ccxt.NotSupported("no such call"))) is NotSupported
    other = typed(ccxt.ExchangeError("something"))
    assert type(other) is ExchangeError and not other.retryable and other.reason == "exchange_error"


async def test_router_shows_each_venues_order_book(tmp_path: Path, px: PaperExchange) -> None:
    """Both adapters read the same paper book (``public/get_order_book`` natively,
    ``fetch_order_book`` through ccxt): what a smart order router splits on."""
    venues = {
        "deribit": VenueSettings(),
        "second": VenueSettings(kind="ccxt", ccxt_id="deribit", url=f"http://127.0.0.1:{px.port}"),
    }
    settings = _settings(tmp_path, venues, px.ws_url)
    router = create_exchange(settings, SecretStore(settings.resolved_secrets_file))
    assert isinstance(router, VenueRouter)
    await router.start()
    try:
        await router.exchange("second").instruments.wait_loaded(10)
        native = await router.order_book("deribit", ACCOUNT, "BTC-PERPETUAL", 5)
        via_ccxt = await router.order_book("second", ACCOUNT, "BTC-PERPETUAL", 5)
        with pytest.raises(UnknownVenue):
            await router.order_book("elsewhere", ACCOUNT, "BTC-PERPETUAL", 5)
    finally:
        await router.stop()
    for book in (native, via_ccxt):
        assert 0 < len(book.asks) <= 5 and 0 < len(book.bids) <= 5
        assert book.bids[0].price < book.asks[0].price
        assert [lv.price for lv in book.asks] == sorted(lv.price for lv in book.asks)
        assert book.side("buy") is book.asks and book.side("sell") is book.bids
