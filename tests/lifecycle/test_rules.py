"""Lifecycle rules through the real stack: auto-cancel, each partial-fill policy,
monitoring re-checks when the exchange's stream goes quiet, and amend guards."""

from __future__ import annotations

import pytest

from oms.exchange.deribit.client import DeribitClient
from oms.schemas import OrderEventType, OrderStatus, ReasonCode
from oms.secrets import SecretStore
from tests.lifecycle.conftest import LifecycleStack

pytestmark = pytest.mark.kafka

RESTING = {"instrument_name": "BTC-PERPETUAL", "amount": 10, "direction": "buy", "price": 1_000.0}
# Far more than the market maker quotes at one price: a marketable buy fills partly and the
# rest keeps working on the book.
LARGE = 500_000


async def _partial_buy(stack: LifecycleStack, metadata: dict[str, object]) -> str:
    ticker = await stack.ticker()
    return await stack.client.submit_advanced_order(
        "BTC-PERPETUAL",
        LARGE,
        "buy",
        price=float(ticker["best_ask_price"]),
        metadata=metadata,
    )


async def test_auto_cancel_after_timeout(stack: LifecycleStack) -> None:
    order_id = await stack.client.submit_advanced_order(
        **RESTING, metadata={"auto_cancel_timeout": 2}
    )
    assert (await stack.wait(order_id)).event_type is OrderEventType.OPEN
    cancelled = await stack.wait(order_id, OrderEventType.CANCELLED, timeout=30)
    assert cancelled.reason_code is ReasonCode.AUTO_CANCELLED
    assert cancelled.message
    [at_exchange] = await stack.exchange_orders(order_id)
    assert at_exchange["order_state"] == "cancelled"


async def test_cancel_remaining_after_first_partial_fill(stack: LifecycleStack) -> None:
    order_id = await _partial_buy(stack, {"partial_fill_handling": "cancel_remaining"})
    partial = await stack.wait(order_id, OrderEventType.PARTIALLY_FILLED)
    assert 0 < partial.filled_amount < LARGE
    cancelled = await stack.wait(order_id, OrderEventType.CANCELLED, timeout=30)
    assert cancelled.reason_code is ReasonCode.PARTIAL_FILL_CANCELLED
    [at_exchange] = await stack.exchange_orders(order_id)
    assert at_exchange["order_state"] == "cancelled"
    # Filled amount and average price are the exchange's, exactly.
    assert cancelled.filled_amount == at_exchange["filled_amount"]
    assert cancelled.average_price == at_exchange["average_price"]


async def test_cancel_remaining_waits_for_its_grace_period(stack: LifecycleStack) -> None:
    order_id = await _partial_buy(
        stack, {"partial_fill_handling": "cancel_remaining", "partial_fill_grace": 3}
    )
    partial = await stack.wait(order_id, OrderEventType.PARTIALLY_FILLED)
    cancelled = await stack.wait(order_id, OrderEventType.CANCELLED, timeout=30)
    assert cancelled.reason_code is ReasonCode.PARTIAL_FILL_CANCELLED
    # Not before the grace period (measured on the worker's own clock, in event timestamps).
    assert cancelled.timestamp - partial.timestamp >= 3_000


async def test_wait_remaining_keeps_the_rest_working(stack: LifecycleStack) -> None:
    # The rest keeps working until auto-cancel: the cancel that comes says auto_cancelled,
    # not partial_fill_cancelled.
    order_id = await _partial_buy(
        stack, {"partial_fill_handling": "wait_remaining", "auto_cancel_timeout": 3}
    )
    partial = await stack.wait(order_id, OrderEventType.PARTIALLY_FILLED)
    assert partial.filled_amount < LARGE
    cancelled = await stack.wait(order_id, OrderEventType.CANCELLED, timeout=30)
    assert cancelled.reason_code is ReasonCode.AUTO_CANCELLED
    [at_exchange] = await stack.exchange_orders(order_id)
    assert cancelled.filled_amount == at_exchange["filled_amount"]


async def test_monitoring_rechecks_an_order_whose_news_was_missed(
    stack: LifecycleStack,
) -> None:
    order_id = await stack.client.submit_advanced_order(**RESTING)
    assert (await stack.wait(order_id)).event_type is OrderEventType.OPEN
    # The gateway (our user.orders stream) goes away; the order is cancelled behind our back.
    gateway = stack.services["gateway"]
    gateway.stop()
    try:
        credentials = SecretStore(stack.settings.resolved_secrets_file).credentials(
            stack.client.account_id
        )
        async with DeribitClient(
            stack.settings.exchange.url, credentials, settings=stack.settings.exchange
        ) as direct:
            await direct.call("private/cancel_by_label", {"label": order_id, "currency": "BTC"})
        # Only the monitoring re-check (private/get_order_state) can tell the OMS now.
        cancelled = await stack.wait(order_id, OrderEventType.CANCELLED, timeout=30)
        assert cancelled.details.get("source") == "reconcile"
        assert cancelled.status is OrderStatus.CANCELLED
    finally:
        gateway.start()
    summary = await stack.worker_summary()
    assert summary["lifecycle"]["rechecks"] >= 1


async def test_amend_and_its_guards(stack: LifecycleStack) -> None:
    order_id = await stack.client.submit_advanced_order(**RESTING)
    assert (await stack.wait(order_id)).event_type is OrderEventType.OPEN
    await stack.client.amend_order(order_id, price=1_100.0, amount=20)
    amended = await stack.wait(order_id, OrderEventType.AMENDED)
    assert (amended.price, amended.amount) == (1_100.0, 20)
    [at_exchange] = await stack.exchange_orders(order_id)
    assert (at_exchange["price"], at_exchange["amount"]) == (1_100.0, 20)

    await stack.client.cancel_order(order_id)
    await stack.wait(order_id, OrderEventType.CANCELLED)
    await stack.client.amend_order(order_id, price=1_200.0)
    refused = await stack.wait(order_id, OrderEventType.COMMAND_REJECTED)
    assert refused.reason_code is ReasonCode.ORDER_NOT_OPEN

    # A filled order cannot be edited either.
    filled_id = await stack.client.submit_advanced_order(
        "BTC-PERPETUAL", 10, "buy", order_type="market"
    )
    assert (await stack.wait(filled_id)).event_type is OrderEventType.FILLED
    await stack.client.amend_order(filled_id, amount=20)
    refused = await stack.wait(filled_id, OrderEventType.COMMAND_REJECTED)
    assert refused.reason_code is ReasonCode.ORDER_NOT_OPEN
