"""Error strategies through the real stack, with the paper exchange's fault knobs:
retry on a transient failure, never on a business rejection, retries exhausted, the manual
review flow, and a submit whose reply was lost (no duplicate)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from oms.schemas import OrderEventType, OrderStatus, ReasonCode
from oms_dev.harness import settings_env
from tests.lifecycle.conftest import LifecycleStack

pytestmark = pytest.mark.kafka

RATE_LIMITED = 10028
NOT_ENOUGH_FUNDS = 10009
RESTING_BUY = {
    "instrument_name": "BTC-PERPETUAL",
    "amount": 10,
    "direction": "buy",
    "price": 1_000.0,
}


async def _retry_counts(stack: LifecycleStack) -> dict[str, int]:
    """The executor's retry outcomes (``retry.<venue>.<reason>.<wait ms>.<kind>``) summed
    per kind: what its metric samples carry into ClickHouse for `oms tune`."""
    executor = (await stack.worker_summary())["executor"]
    counts = {"attempts": 0, "succeeded": 0}
    for name, value in executor.items():
        if name.startswith("retry."):
            counts[name.rsplit(".", 1)[1]] += value
    return counts


async def test_transient_failure_is_retried_then_succeeds(stack: LifecycleStack) -> None:
    buys = await stack.method_count("private/buy")
    retries = await _retry_counts(stack)
    await stack.admin("admin/set_faults", reject_next=2, reject_code=RATE_LIMITED)
    order_id = await stack.client.submit_advanced_order(**RESTING_BUY)
    event = await stack.wait(order_id)
    assert event.event_type is OrderEventType.OPEN
    # Two refused attempts, then the one that rests: three sends, one order at the exchange.
    assert await stack.method_count("private/buy") - buys == 3
    assert len(await stack.exchange_orders(order_id)) == 1
    assert not [e for e in stack.client.events_of(order_id) if e.status is OrderStatus.REJECTED]
    # Two retries counted for the tuner: the first refused again, the second went through.
    after = await _retry_counts(stack)
    assert after["attempts"] - retries["attempts"] == 2
    assert after["succeeded"] - retries["succeeded"] == 1


async def test_business_rejection_is_never_retried(stack: LifecycleStack) -> None:
    buys = await stack.method_count("private/buy")
    await stack.admin("admin/set_faults", reject_next=1, reject_code=NOT_ENOUGH_FUNDS)
    order_id = await stack.client.submit_advanced_order(**RESTING_BUY)
    event = await stack.wait(order_id)
    assert event.event_type is OrderEventType.REJECTED
    assert event.reason_code is ReasonCode.NOT_ENOUGH_FUNDS
    assert await stack.method_count("private/buy") - buys == 1
    assert await stack.exchange_orders(order_id) == []


async def test_retries_exhausted_rejects_with_an_alert(stack: LifecycleStack) -> None:
    buys = await stack.method_count("private/buy")
    await stack.admin("admin/set_faults", reject_next=100, reject_code=RATE_LIMITED)
    order_id = await stack.client.submit_advanced_order(**RESTING_BUY)
    event = await stack.wait(order_id)
    assert event.event_type is OrderEventType.REJECTED
    assert event.reason_code is ReasonCode.RETRIES_EXHAUSTED
    assert event.details.get("alert") is True
    # retry_attempts=2: the first send and two retries.
    assert await stack.method_count("private/buy") - buys == 3
    assert await stack.exchange_orders(order_id) == []


async def test_cancel_strategy_gives_up_at_once(stack: LifecycleStack) -> None:
    buys = await stack.method_count("private/buy")
    await stack.admin("admin/set_faults", reject_next=100, reject_code=RATE_LIMITED)
    order_id = await stack.client.submit_advanced_order(
        **RESTING_BUY, metadata={"error_handling": "cancel"}
    )
    event = await stack.wait(order_id)
    assert event.event_type is OrderEventType.REJECTED
    assert event.reason_code is ReasonCode.RATE_LIMITED
    assert await stack.method_count("private/buy") - buys == 1


def _oms_cli(stack: LifecycleStack, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``oms`` CLI, configured like an operator would (environment)."""
    return subprocess.run(
        [sys.executable, "-m", "oms.cli.main", *args],
        env={**os.environ, **settings_env(stack.settings), "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=90,
    )


async def test_manual_review_flow(stack: LifecycleStack) -> None:
    await stack.admin("admin/set_faults", reject_next=2, reject_code=RATE_LIMITED)
    manual = {"error_handling": "manual"}
    retried = await stack.client.submit_advanced_order(**RESTING_BUY, metadata=manual)
    given_up = await stack.client.submit_advanced_order(**RESTING_BUY, metadata=manual)
    for order_id in (retried, given_up):
        parked = await stack.wait(order_id)
        assert parked.event_type is OrderEventType.NEEDS_REVIEW
        assert parked.reason_code is ReasonCode.MANUAL_REVIEW
        assert parked.details.get("alert") is True
        assert await stack.exchange_orders(order_id) == []

    # The reviewer sees both (ClickHouse, through the sink) ...
    listed = ""
    for _ in range(40):
        result = _oms_cli(stack, "review", "list", "--account", stack.client.account_id)
        assert result.returncode == 0, result.stderr
        listed = result.stdout
        if retried in listed and given_up in listed:
            break
    assert retried in listed and given_up in listed, listed

    # ... retries one: looked up by label, sent once, now resting.
    result = _oms_cli(stack, "review", "retry", retried, "--account", stack.client.account_id)
    assert result.returncode == 0, result.stdout + result.stderr
    opened = await stack.wait(retried, OrderEventType.OPEN)
    assert opened.status is OrderStatus.OPEN
    assert len(await stack.exchange_orders(retried)) == 1

    # ... and gives up on the other.
    result = _oms_cli(stack, "review", "cancel", given_up, "--account", stack.client.account_id)
    assert result.returncode == 0, result.stdout + result.stderr
    cancelled = await stack.wait(given_up, OrderEventType.CANCELLED)
    assert cancelled.reason_code is ReasonCode.MANUAL_REVIEW
    assert await stack.exchange_orders(given_up) == []

    # A retry of an order that is not waiting for review is refused.
    await stack.client.retry_order(retried)
    refused = await stack.wait(retried, OrderEventType.COMMAND_REJECTED)
    assert refused.reason_code is ReasonCode.ORDER_NOT_OPEN
    await stack.client.cancel_order(retried)
    await stack.wait(retried, OrderEventType.CANCELLED)


async def test_reply_lost_mid_submit_sends_no_duplicate(stack: LifecycleStack) -> None:
    # The exchange executes the buy, then the connection dies before the reply goes out.
    await stack.admin("admin/set_faults", drop_after_next=1)
    order_id = await stack.client.submit_advanced_order(**RESTING_BUY)
    event = await stack.wait(order_id, timeout=45)
    assert event.event_type is OrderEventType.OPEN
    assert len(await stack.exchange_orders(order_id)) == 1
    stats = await stack.admin("admin/get_stats", include_labels=False)
    assert order_id not in stats["duplicate_labels"]
    faults = await stack.admin("admin/get_faults")
    assert faults["drop_after_next"] == 0  # the fault did fire


async def test_invalid_lifecycle_override_is_refused_with_its_reason(
    stack: LifecycleStack,
) -> None:
    buys = await stack.method_count("private/buy")
    order_id = await stack.client.submit_advanced_order(
        **RESTING_BUY, metadata={"error_handling": "pray"}
    )
    event = await stack.wait(order_id)
    assert event.event_type is OrderEventType.REJECTED
    assert event.reason_code is ReasonCode.SCHEMA_INVALID
    assert event.message and "error_handling" in event.message
    assert await stack.method_count("private/buy") == buys
