"""Batch recording: records are buffered, and a shutdown flushes every one of them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from oms.schemas import PositionRecord, Topic
from tests.positions.helpers import (
    ACCOUNTS,
    TopicTail,
    Trader,
    keeper_stats,
    position_settings,
    position_stack,
)

pytestmark = pytest.mark.kafka


async def test_batch_mode_buffers_and_flushes_everything_on_shutdown(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = position_settings(
        tmp_path,
        kafka_bootstrap,
        recording_mode="batch",
        batch_size=10_000,
        batch_flush_interval_s=120.0,
        reconcile=False,
    )
    async with position_stack(settings) as services:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        records = await TopicTail(kafka_bootstrap, settings.topic(Topic.POSITIONS)).start()
        try:
            async with Trader(settings, ACCOUNTS[0], producer) as trader:
                for i in range(6):
                    await trader.trade("buy" if i % 2 else "sell", "BTC-PERPETUAL", 10 * (i + 1))
                trades = {f.trade_id for r in trader.reports for f in r.fills}
                deadline = time.monotonic() + 60
                while (stats := await keeper_stats(settings))["ledger"]["applied"] < len(trades):
                    assert time.monotonic() < deadline, stats
                    await asyncio.sleep(0.2)
                assert stats["recorder"]["mode"] == "batch"
                assert stats["recorder"]["buffered"] == len(trades)
                assert stats["recorder"]["published"] == 0
                await asyncio.to_thread(services["positions"].stop, 30.0)

                def all_in(value: bytes) -> bool:
                    got = {PositionRecord.from_bytes(v).trade_id for v in records.seen}
                    return trades <= got

                await records.wait_for(all_in, 30)
        finally:
            await records.stop()
            await producer.stop()
