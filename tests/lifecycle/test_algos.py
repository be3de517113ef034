"""Execution algorithms through the real stack: TWAP children sum exactly to the parent
(and a re-published slice is a duplicate, never a second order); a post-only chase is
re-quoted up to its limit and stops there."""

from __future__ import annotations

import asyncio

import pytest

from oms.algos import twap
from oms.schemas import OrderEventType, OrderStatus, ReasonCode
from tests.lifecycle.conftest import LifecycleStack

pytestmark = pytest.mark.kafka


async def test_twap_children_sum_exactly_to_the_parent(stack: LifecycleStack) -> None:
    parent_id = await stack.client.submit_advanced_order(
        "BTC-PERPETUAL",
        70,
        "buy",
        order_type="market",
        metadata={"algo": "twap", "twap_duration": 2, "twap_slices": 3, "twap_randomize": 0.3},
    )
    working = await stack.wait(parent_id, OrderEventType.OPEN)
    assert working.details.get("algo") == "twap"
    filled = await stack.wait(parent_id, OrderEventType.FILLED, timeout=30)
    assert filled.filled_amount == 70
    assert filled.order is not None
    children = filled.order.children
    assert len(children) == 3
    # Exactly one order per child at the exchange; none for the parent.
    assert await stack.exchange_orders(parent_id) == []
    amounts, notional = [], 0.0
    for child_id in children:
        [at_exchange] = await stack.exchange_orders(child_id)
        assert at_exchange["order_state"] == "filled"
        amounts.append(at_exchange["filled_amount"])
        notional += at_exchange["filled_amount"] * at_exchange["average_price"]
    assert sorted(amounts) == [20, 20, 30]
    assert filled.average_price == pytest.approx(notional / 70, rel=1e-12)

    # A restarted worker publishing a slice again: a duplicate at intake, not a new order.
    assert working.order is not None
    again = twap.child_request(working.order, 0, 30)
    await stack.client.send(again)
    duplicate = await stack.wait(again.key, OrderEventType.DUPLICATE)
    assert duplicate.reason_code is ReasonCode.DUPLICATE_REQUEST
    assert len(await stack.exchange_orders(again.key)) == 1


async def test_twap_rejects_more_slices_than_lots(stack: LifecycleStack) -> None:
    parent_id = await stack.client.submit_advanced_order(
        "BTC-PERPETUAL",
        20,
        "buy",
        order_type="market",
        metadata={"algo": "twap", "twap_duration": 2, "twap_slices": 3},
    )
    event = await stack.wait(parent_id)
    assert event.event_type is OrderEventType.REJECTED
    assert event.reason_code is ReasonCode.AMOUNT_TOO_SMALL


async def test_chase_requotes_up_to_its_limit_and_stops(stack: LifecycleStack) -> None:
    best_bid = float((await stack.ticker())["best_bid_price"])
    # Far below the market, so the touch stays above the limit for the whole test.
    start, limit = best_bid - 3_000, best_bid - 2_000
    order_id = await stack.client.submit_advanced_order(
        "BTC-PERPETUAL",
        10,
        "buy",
        price=start,
        post_only=True,
        metadata={"algo": "chase", "chase_limit": limit},
    )
    opened = await stack.wait(order_id)
    assert opened.event_type is OrderEventType.OPEN
    amended = await stack.wait(order_id, OrderEventType.AMENDED, timeout=30)
    assert amended.price == limit
    # The amend is chase's own request, unless the exchange's order stream reported the edit
    # before the amend's reply did: that report carries no request id, and the event then
    # names the order's own (the reply, coming second, changes nothing). Nobody else amends
    # this order.
    assert amended.request_id is not None, amended
    assert amended.request_id.startswith("chase.") or amended.request_id == opened.request_id
    # Several more chase passes: it stays at its limit.
    await asyncio.sleep(2)
    [at_exchange] = await stack.exchange_orders(order_id)
    assert at_exchange["price"] == limit
    amends = [e for e in stack.client.events_of(order_id) if e.event_type is OrderEventType.AMENDED]
    assert [e.price for e in amends] == [limit]
    await stack.client.cancel_order(order_id)
    cancelled = await stack.wait(order_id, OrderEventType.CANCELLED)
    assert cancelled.status is OrderStatus.CANCELLED


async def test_chase_needs_post_only(stack: LifecycleStack) -> None:
    order_id = await stack.client.submit_advanced_order(
        "BTC-PERPETUAL",
        10,
        "buy",
        price=1_000.0,
        metadata={"algo": "chase", "chase_limit": 2_000.0},
    )
    event = await stack.wait(order_id)
    assert event.event_type is OrderEventType.REJECTED
    assert event.reason_code is ReasonCode.SCHEMA_INVALID


async def test_cancelling_a_twap_parent_cancels_its_children(stack: LifecycleStack) -> None:
    parent_id = await stack.client.submit_advanced_order(
        "BTC-PERPETUAL",
        40,
        "buy",
        price=1_000.0,  # children rest far below the market
        metadata={"algo": "twap", "twap_duration": 4, "twap_slices": 4},
    )
    working = await stack.wait(parent_id, OrderEventType.OPEN)
    assert working.order is not None
    first_child = twap.child_order_id(working.order, 0)
    assert (await stack.wait(first_child, OrderEventType.OPEN)).event_type is OrderEventType.OPEN
    await stack.client.cancel_order(parent_id)
    cancelled = await stack.wait(parent_id, OrderEventType.CANCELLED)
    assert cancelled.filled_amount == 0
    child_cancel = await stack.wait(first_child, OrderEventType.CANCELLED)
    assert child_cancel.reason_code is ReasonCode.LINKED_ORDER_CANCELLED
    # Past the last slice's time: no child is left working at the exchange.
    await asyncio.sleep(4)
    for index in range(4):
        for order in await stack.exchange_orders(twap.child_order_id(working.order, index)):
            assert order["order_state"] == "cancelled"
