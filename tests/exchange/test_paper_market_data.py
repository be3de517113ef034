"""Public market data of the paper exchange as Deribit serves it: currencies, instrument
listings with Deribit's filters, and its answers to bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from oms.exchange.paper import PaperExchange
from oms.exchange.paper.testing import RpcClient, RpcFailed
from oms.settings import PaperExchangeSettings


@pytest.fixture
async def client() -> AsyncIterator[RpcClient]:
    async with PaperExchange(
        settings=PaperExchangeSettings(port=0, tick_interval_s=0.05), rate_limits=False
    ) as px:
        c = await RpcClient.connect(px.ws_url)
        try:
            yield c
        finally:
            await c.close()


async def test_get_currencies(client: RpcClient) -> None:
    currencies = await client.result("public/get_currencies")
    assert [c["currency"] for c in currencies] == ["BTC", "ETH", "USDC"]
    btc = currencies[0]
    assert btc["currency_long"] == "Bitcoin" and btc["coin_type"] == "BITCOIN"


async def test_get_instruments_currency_optional_kind_and_expired(client: RpcClient) -> None:
    everything = await client.result("public/get_instruments")
    names = {i["instrument_name"] for i in everything}
    assert {"BTC-PERPETUAL", "ETH-PERPETUAL"} <= names
    assert {i["base_currency"] for i in everything} == {"BTC", "ETH"}
    assert await client.result("public/get_instruments", currency="any") == everything
    btc = await client.result("public/get_instruments", currency="btc")
    assert btc and all(i["base_currency"] == "BTC" for i in btc)
    options = await client.result("public/get_instruments", currency="BTC", kind="option")
    assert options and all(i["kind"] == "option" for i in options)
    assert len(options) < len(btc)
    assert await client.result("public/get_instruments", currency="USDC") == []
    assert await client.result("public/get_instruments", currency="BTC", expired=True) == []


async def test_get_instruments_unknown_currency_and_kind(client: RpcClient) -> None:
    with pytest.raises(RpcFailed) as info:
        await client.result("public/get_instruments", currency="DOGE")
    assert info.value.code == -32602
    assert info.value.data == {"reason": "invalid currency", "param": "currency"}
    response = await client.call("public/get_instruments", currency="DOGE")
    assert response["error"]["message"] == "Invalid params"
    with pytest.raises(RpcFailed) as info:
        await client.result("public/get_instruments", currency="BTC", kind="swap")
    assert info.value.code == -32602 and info.value.data["param"] == "kind"
