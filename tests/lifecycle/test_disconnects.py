"""Exchange disconnects: the executor's sessions reconnect, reconcile live orders by label,
honour cancel-on-disconnect per account, and hold commands back until reconciled."""

from __future__ import annotations

import asyncio

import pytest

from oms.client import OrderClient
from oms.schemas import OrderEventType
from tests.lifecycle.conftest import COD_ACCOUNT, LifecycleStack

pytestmark = pytest.mark.kafka

RESTING = {"instrument_name": "BTC-PERPETUAL", "amount": 10, "direction": "buy", "price": 1_000.0}


async def test_reconnect_reconciles_and_cancel_on_disconnect(stack: LifecycleStack) -> None:
    async with OrderClient(COD_ACCOUNT, settings=stack.settings) as cod_client:
        guarded = await cod_client.submit_advanced_order(**RESTING)
        assert (await cod_client.wait_for_event(guarded)).event_type is OrderEventType.OPEN
        kept = await stack.client.submit_advanced_order(**RESTING)
        to_cancel = await stack.client.submit_advanced_order(**RESTING)
        for order_id in (kept, to_cancel):
            assert (await stack.wait(order_id)).event_type is OrderEventType.OPEN
        before = (await stack.worker_summary())["lifecycle"].get("reconnect_reconciliations", 0)

        # Every connection (executor sessions and gateway) is cut, twice; a cancel is asked
        # in the middle of it.
        await stack.admin("admin/set_faults", drop_every_s=0.4)
        await asyncio.sleep(0.5)
        await stack.client.cancel_order(to_cancel)
        await asyncio.sleep(0.4)
        await stack.admin("admin/set_faults")

        # Cancel-on-disconnect: the exchange cancelled the guarded account's order when its
        # connection died; the OMS learns it from the reconciliation (or the re-check).
        cancelled = await cod_client.wait_for_event(
            guarded, lambda e: e.event_type is OrderEventType.CANCELLED, timeout=30
        )
        assert cancelled.reason_code is None  # the exchange's doing, not an OMS rule
        [at_exchange] = await stack.exchange_orders(guarded)
        assert at_exchange["order_state"] == "cancelled"

    # The cancel asked while disconnected went through exactly once, after reconciliation.
    await stack.wait(to_cancel, OrderEventType.CANCELLED, timeout=30)
    assert not [
        e
        for e in stack.client.events_of(to_cancel)
        if e.event_type is OrderEventType.COMMAND_REJECTED
    ]
    # The other account's order was not touched by any of it.
    [kept_at_exchange] = await stack.exchange_orders(kept)
    assert kept_at_exchange["order_state"] == "open"
    assert not [e for e in stack.client.events_of(kept) if e.event_type is OrderEventType.CANCELLED]
    summary = await stack.worker_summary()
    assert summary["lifecycle"]["reconnect_reconciliations"] > before
    await stack.client.cancel_order(kept)
    await stack.wait(kept, OrderEventType.CANCELLED)
