"""Reconciliation: a position changed behind the OMS's back is detected within one
monitoring interval, corrected, alerted and held for review until acknowledged."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from oms.positions.commands import acknowledge
from oms.positions.reconcile import CONFIRM_DELAY_S
from oms.schemas import (
    OrderEvent,
    OrderEventType,
    PositionRecord,
    PositionRecordType,
    ReasonCode,
    Topic,
)
from tests.positions.helpers import (
    ACCOUNTS,
    TopicTail,
    Trader,
    keeper_positions,
    position_settings,
    position_stack,
    wait_equal,
)

pytestmark = pytest.mark.kafka

INTERVAL_S = 3.0


async def test_injected_discrepancy_is_detected_corrected_and_held_for_review(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = position_settings(tmp_path, kafka_bootstrap, monitoring_interval_s=INTERVAL_S)
    key = f"{ACCOUNTS[0]}|BTC-PERPETUAL"
    async with position_stack(settings):
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        events = await TopicTail(kafka_bootstrap, settings.topic(Topic.ORDER_EVENTS)).start()
        records = await TopicTail(kafka_bootstrap, settings.topic(Topic.POSITIONS)).start()
        try:
            async with Trader(settings, ACCOUNTS[0], producer) as trader:
                await trader.trade("buy", "BTC-PERPETUAL", 300)
                assert await wait_equal(settings, [trader]) == []
                assert not (await keeper_positions(settings))[(ACCOUNTS[0], "BTC-PERPETUAL")][
                    "needs_review"
                ]
                # Behind the OMS's back: the exchange now says 1,000 USD long at 60,000.
                await trader.client.call(
                    "admin/set_position",
                    {
                        "account_id": ACCOUNTS[0],
                        "instrument_name": "BTC-PERPETUAL",
                        "size": 1000,
                        "average_price": 60_000.0,
                    },
                )
                # One interval, the confirmation look, and room for a loaded machine.
                within = INTERVAL_S + CONFIRM_DELAY_S + 5.0
                raw = await events.wait_for(
                    lambda v: (
                        OrderEvent.from_bytes(v).event_type is OrderEventType.POSITION_MISMATCH
                    ),
                    within,
                )
                event = OrderEvent.from_bytes(raw)
                assert event.order_id == f"position:{key}"
                assert event.reason_code is ReasonCode.POSITION_MISMATCH
                assert event.details["severity"] == "emergency"
                assert event.details["recorded_size"] == 300
                assert event.details["exchange_size"] == 1000
                correction = PositionRecord.from_bytes(
                    await records.wait_for(
                        lambda v: (
                            PositionRecord.from_bytes(v).record_type
                            is PositionRecordType.CORRECTION
                        ),
                        10,
                    )
                )
                assert (correction.size_before, correction.size) == (300, 1000)
                assert correction.average_price == 60_000.0 and correction.needs_review
                state = (await keeper_positions(settings))[(ACCOUNTS[0], "BTC-PERPETUAL")]
                assert state["size"] == 1000 and state["needs_review"] is True

                # The book now equals the exchange: later checks raise nothing new, and the
                # flag stays until an operator acknowledges it.
                await acknowledge(settings, ACCOUNTS[0], "BTC-PERPETUAL", "tester")
                adjustment = PositionRecord.from_bytes(
                    await records.wait_for(
                        lambda v: (
                            PositionRecord.from_bytes(v).record_type
                            is PositionRecordType.ADJUSTMENT
                        ),
                        10,
                    )
                )
                assert adjustment.actor == "tester" and not adjustment.needs_review
                state = (await keeper_positions(settings))[(ACCOUNTS[0], "BTC-PERPETUAL")]
                assert state["needs_review"] is False
                mismatches = [
                    v
                    for v in events.seen
                    if OrderEvent.from_bytes(v).event_type is OrderEventType.POSITION_MISMATCH
                ]
                assert len(mismatches) == 1
        finally:
            await events.stop()
            await records.stop()
            await producer.stop()
