"""Conformance of the paper exchange's results with Deribit's OpenAPI spec (v2.1.1).

Every implemented Deribit method is called for real over the WebSocket and its ``result`` is
validated against ``paths./{method}.get.responses.200 -> content.application/json.schema
-> properties.result`` with every ``$ref`` resolved through a referencing registry.
OpenAPI 3.0's ``nullable`` is turned into JSON Schema's ``null`` type. Places where the spec
disagrees with what Deribit really sends are patched in :data:`SPEC_CORRECTIONS`, each with
its reason.

Spec path covered by each call: see :data:`CALLS` (method name == spec path without ``/``).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from oms.exchange.paper import PaperExchange
from oms.exchange.paper.methods import METHODS
from oms.exchange.paper.testing import RpcClient
from oms.settings import PaperExchangeSettings

# Deribit's OpenAPI spec, kept in the repository so the check runs everywhere.
SPEC_PATH = Path(__file__).resolve().parents[2] / "reference/deribit-openapi.json"
SPEC_URI = "urn:deribit-openapi"
PERP = "BTC-PERPETUAL"


# (JSON pointer inside the spec, key, value, reason)
SPEC_CORRECTIONS: list[tuple[str, str, Any, str]] = [
    (
        "/components/schemas/instrument/properties/quote_currency",
        "enum",
        ["USD", "BTC", "ETH", "USDC"],
        "options are quoted in the coin (Deribit's own get_instrument example says BTC)",
    ),
]


def _load_spec() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    for pointer, key, value, _reason in SPEC_CORRECTIONS:
        node: Any = spec
        for part in pointer.strip("/").split("/"):
            node = node[part]
        node[key] = value
    return _to_json_schema(spec)


def _to_json_schema(node: Any) -> Any:
    """Absolute ``$ref``s (so fragments resolve against the whole spec) and ``nullable``."""
    if isinstance(node, list):
        return [_to_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items()}
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        out["$ref"] = SPEC_URI + ref
    if out.pop("nullable", False):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


SPEC = _load_spec()
REGISTRY: Registry = Registry().with_resource(
    SPEC_URI, Resource(contents=SPEC, specification=DRAFT4)
)


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        pointer = node["$ref"].split("#", 1)[1]
        target: Any = SPEC
        for part in pointer.strip("/").split("/"):
            target = target[part]
        node = target
    return node


def result_schema(method: str) -> dict[str, Any] | None:
    """The spec's schema of ``result`` for ``method`` (None: the spec gives none)."""
    op = SPEC["paths"]["/" + method]["get"]
    response = _resolve(op["responses"]["200"])
    if "content" not in response:
        return None
    schema = _resolve(response["content"]["application/json"]["schema"])
    result = schema.get("properties", {}).get("result")
    return copy.deepcopy(result) if result is not None else None


def validate(method: str, result: Any) -> None:
    schema = result_schema(method)
    if schema is None:
        return
    validator = jsonschema.Draft4Validator(schema, registry=REGISTRY)
    problems = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(result)
    ]
    assert not problems, f"{method}: " + "; ".join(problems[:10])


# method -> params; "$order" / "$label" are filled in by the scenario.
CALLS: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
async def recorded() -> AsyncIterator[dict[str, list[Any]]]:
    """Run every implemented method against a live paper exchange; method -> results."""
    out: dict[str, list[Any]] = {}
    async with PaperExchange(
        settings=PaperExchangeSettings(port=0, tick_interval_s=0.05), rate_limits=False
    ) as px:
        c = await RpcClient.connect(px.ws_url)

        async def call(method: str, **params: Any) -> Any:
            response = await c.call(method, **params)
            assert response["jsonrpc"] == "2.0" and "result" in response, (method, response)
            assert {"usIn", "usOut", "usDiff", "testnet"} <= response.keys()
            out.setdefault(method, []).append(response["result"])
            CALLS.setdefault(method, params)
            return response["result"]

        await call(
            "public/auth",
            grant_type="client_credentials",
            client_id="spec",
            client_secret="spec-secret",
        )
        ts = time.time_ns() // 1_000_000
        await call(
            "public/auth",
            grant_type="client_signature",
            client_id="spec",
            timestamp=ts,
            nonce="spec-nonce",
            data="",
            signature=hmac.new(
                b"spec-secret", f"{ts}\nspec-nonce\n".encode(), hashlib.sha256
            ).hexdigest(),
        )
        await call("public/get_time")
        await call("public/test")
        await call("public/hello", client_name="oms-tests", client_version="1")
        await call("public/status")
        await call("public/set_heartbeat", interval=10)
        await call("public/disable_heartbeat")
        await call("public/get_currencies")
        instruments = await call("public/get_instruments", currency="BTC")
        await call("public/get_instruments", currency="ETH", kind="future")
        await call("public/get_instruments")
        await call("public/get_instruments", currency="any", kind="option", expired=False)
        option = next(i["instrument_name"] for i in instruments if i["kind"] == "option")
        await call("public/get_instrument", instrument_name=option)
        ticker = await call("public/ticker", instrument_name=PERP)
        await call("public/ticker", instrument_name=option)
        await call("public/get_order_book", instrument_name=PERP, depth=5)
        await call("public/get_index_price", index_name="btc_usd")
        await call("public/subscribe", channels=[f"ticker.{PERP}.100ms"])
        await call("public/unsubscribe", channels=[f"ticker.{PERP}.100ms"])
        await call("public/unsubscribe_all")
        await call("private/subscribe", channels=["user.orders.any.any.raw"])
        await call("private/unsubscribe", channels=["user.orders.any.any.raw"])
        await call("private/unsubscribe_all")
        ask, bid = ticker["best_ask_price"], ticker["best_bid_price"]
        filled = await call(
            "private/buy",
            instrument_name=PERP,
            amount=50,
            type="limit",
            price=ask,
            label="spec-fill",
        )
        await call("private/sell", instrument_name=PERP, amount=20, type="market", label="spec-mkt")
        resting = await call(
            "private/buy",
            instrument_name=PERP,
            amount=10,
            price=bid - 500,
            label="spec-rest",
            post_only=True,
        )
        await call("private/sell", instrument_name=option, amount=0.1, price=0.5, label="spec-opt")
        await call(
            "private/sell",
            instrument_name=PERP,
            amount=10,
            type="stop_market",
            trigger_price=bid - 2000,
            trigger="mark_price",
            label="spec-stop",
        )
        await call(
            "private/sell", instrument_name=PERP, amount=10, type="trailing_stop",
            trigger="mark_price", trigger_offset=500, label="spec-trail",
        )
        await call(
            "private/buy", instrument_name=PERP, amount=10, price=bid - 1000,
            label="spec-otoco", linked_order_type="one_triggers_one_cancels_other",
            otoco_config=[
                {"direction": "sell", "amount": 10, "price": ask + 1000, "reduce_only": True},
                {"direction": "sell", "amount": 10, "type": "stop_market",
                 "trigger": "mark_price", "trigger_price": bid - 3000, "reduce_only": True},
            ],
        )
        rid = resting["order"]["order_id"]
        await call("private/edit", order_id=rid, amount=20, price=bid - 400)
        await call("private/edit_by_label", label="spec-rest", instrument_name=PERP, amount=30)
        await call("private/get_order_state", order_id=rid)
        await call("private/get_order_state_by_label", currency="BTC", label="spec-rest")
        await call("private/get_open_orders")
        await call("private/get_open_orders_by_instrument", instrument_name=PERP)
        await call("private/get_open_orders_by_currency", currency="BTC")
        await call("private/get_open_orders_by_label", currency="BTC", label="spec-rest")
        await call("private/get_user_trades_by_order", order_id=filled["order"]["order_id"])
        await call("private/get_user_trades_by_instrument", instrument_name=PERP)
        await call("private/get_user_trades_by_currency", currency="BTC", kind="future")
        first_trade = filled["trades"][0]["trade_id"]
        await call("private/get_user_trades_by_currency", currency="BTC", start_id=first_trade)
        now = time.time_ns() // 1_000_000
        await call(
            "private/get_user_trades_by_currency_and_time",
            currency="BTC", start_timestamp=now - 60_000, end_timestamp=now + 1_000,
        )
        await call(
            "private/get_user_trades_by_instrument_and_time",
            instrument_name=PERP, start_timestamp=now - 60_000, end_timestamp=now + 1_000,
        )
        await call("public/get_last_trades_by_instrument", instrument_name=PERP, count=5)
        await call("public/get_book_summary_by_currency", currency="BTC")
        await call("public/get_book_summary_by_instrument", instrument_name=PERP)
        await call("public/get_book_summary_by_instrument", instrument_name=option)
        await call(
            "public/get_tradingview_chart_data",
            instrument_name=PERP, start_timestamp=now - 3_600_000, end_timestamp=now,
            resolution="1",
        )
        await call(
            "public/get_funding_rate_value",
            instrument_name=PERP, start_timestamp=now - 8 * 3_600_000, end_timestamp=now,
        )
        await call("public/get_historical_volatility", currency="BTC")
        await call(
            "public/get_funding_rate_history",
            instrument_name=PERP, start_timestamp=now - 8 * 3_600_000, end_timestamp=now,
        )
        await call(
            "public/get_last_trades_by_instrument_and_time",
            instrument_name=PERP, start_timestamp=now - 60_000, end_timestamp=now + 1_000,
        )
        await call("private/get_margins", instrument_name=PERP, amount=100, price=ask)
        await call("private/get_margins", instrument_name=option, amount=0.1, price=0.05)
        await call("private/get_order_history_by_currency", currency="BTC", include_unfilled=True)
        await call("private/get_order_history_by_instrument", instrument_name=PERP)
        await call("private/get_position", instrument_name=PERP)
        await call("private/close_position", instrument_name=PERP, type="market")
        await call("private/get_position", instrument_name=option)
        await call("private/get_positions", currency="BTC")
        await call("private/get_account_summary", currency="BTC")
        await call("private/get_account_summaries")
        await call("private/enable_cancel_on_disconnect", scope="connection")
        await call("private/get_cancel_on_disconnect")
        await call("private/disable_cancel_on_disconnect")
        await call("private/cancel", order_id=rid)
        await call("private/cancel_by_label", label="spec-opt")
        await call("private/cancel_all_by_instrument", instrument_name=PERP)
        await call("private/cancel_all_by_currency", currency="BTC")
        await call("private/cancel_all_by_kind_or_type", currency="BTC", kind="future")
        await call("private/cancel_all")
        await call("private/logout")
        await c.close()
        yield out


DERIBIT_METHODS = sorted(name for name, m in METHODS.items() if not m.admin)


@pytest.mark.parametrize("method", DERIBIT_METHODS)
async def test_result_matches_spec(method: str, recorded: dict[str, list[Any]]) -> None:
    assert "/" + method in SPEC["paths"], f"{method} is not a Deribit method"
    assert method in recorded, f"{method} is implemented but not exercised"
    for result in recorded[method]:
        validate(method, result)


async def test_notifications_match_spec() -> None:
    """Ticker notifications use the same object as public/ticker."""
    async with PaperExchange(settings=PaperExchangeSettings(port=0, tick_interval_s=0.05)) as px:
        c = await RpcClient.connect(px.ws_url)
        try:
            await c.result("public/subscribe", channels=[f"ticker.{PERP}.raw"])
            validate("public/ticker", await c.notification(f"ticker.{PERP}.raw"))
        finally:
            await c.close()


def test_user_trades_match_spec_user_trade(recorded: dict[str, list[Any]]) -> None:
    """The spec gives no result schema for get_user_trades_by_order: check its items
    against ``user_trade``."""
    validator = jsonschema.Draft4Validator(
        {"type": "array", "items": {"$ref": SPEC_URI + "#/components/schemas/user_trade"}},
        registry=REGISTRY,
    )
    trades = recorded["private/get_user_trades_by_order"][0]
    assert trades
    assert not list(validator.iter_errors(trades))
