"""SIGKILL of the keeper during a burst of fills: after a restart the positions equal the
exchange's (nothing lost, nothing counted twice) and every trade has its record."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from oms.schemas import PositionRecord, PositionRecordType, Topic
from tests.positions.helpers import (
    ACCOUNTS,
    TopicTail,
    Trader,
    keeper_ready,
    position_settings,
    position_stack,
    wait_equal,
)

pytestmark = pytest.mark.kafka

TRADES = 60
KILL_AFTER = 20


async def test_sigkill_during_a_burst_then_restart_equals_exchange(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = position_settings(tmp_path, kafka_bootstrap)
    async with position_stack(settings) as services:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        records = await TopicTail(kafka_bootstrap, settings.topic(Topic.POSITIONS)).start()
        try:
            async with (
                Trader(settings, ACCOUNTS[0], producer) as a,
                Trader(settings, ACCOUNTS[1], producer) as b,
            ):
                keeper = services["positions"]
                for i in range(TRADES):
                    trader = a if i % 3 else b
                    side = "buy" if (i // 4) % 2 == 0 else "sell"
                    instrument = "BTC-PERPETUAL" if i % 2 else "ETH-PERPETUAL"
                    await trader.trade(side, instrument, 10 * (1 + i % 7))
                    if i % 5 == 0:  # the subscription's copy as well
                        await trader.publish_as_subscription(trader.reports[-1])
                    if i == KILL_AFTER:
                        await asyncio.to_thread(keeper.kill)
                assert keeper.starts == 1 and not keeper.alive
                keeper.start()
                await keeper_ready(settings)
                assert await wait_equal(settings, [a, b], within=90) == []
                trades = {f.trade_id for t in (a, b) for r in t.reports for f in r.fills}

                def done(value: bytes) -> bool:
                    record = PositionRecord.from_bytes(value)
                    seen = {
                        PositionRecord.from_bytes(v).trade_id
                        for v in records.seen
                        if PositionRecord.from_bytes(v).record_type is PositionRecordType.EXECUTION
                    }
                    return record.trade_id is not None and trades <= seen

                await records.wait_for(done, 30)
        finally:
            await records.stop()
            await producer.stop()
