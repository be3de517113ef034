"""The keeper against the paper exchange, through real Kafka and Faust processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from oms.schemas import Fill
from tests.positions.helpers import (
    ACCOUNTS,
    Trader,
    keeper_positions,
    keeper_stats,
    position_settings,
    position_stack,
    wait_equal,
)

pytestmark = pytest.mark.kafka


async def test_keeper_equals_exchange_and_counts_each_trade_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = position_settings(tmp_path, kafka_bootstrap)
    async with position_stack(settings):
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            async with (
                Trader(settings, ACCOUNTS[0], producer) as a,
                Trader(settings, ACCOUNTS[1], producer) as b,
            ):
                # Adds, a reduction, a flip long -> short, a close, on an inverse perpetual.
                first = await a.trade("buy", "BTC-PERPETUAL", 1000)
                await a.trade("buy", "BTC-PERPETUAL", 500)
                await a.trade("sell", "BTC-PERPETUAL", 300)
                await a.trade("sell", "BTC-PERPETUAL", 2000)
                # A partially filled limit order (immediate-or-cancel, so no fill comes later
                # without a report: this test runs no gateway).
                book = await a.client.call(
                    "public/get_order_book", {"instrument_name": "ETH-PERPETUAL", "depth": 3}
                )
                best_ask = book["asks"][0][0]
                partial = await a.trade(
                    "buy",
                    "ETH-PERPETUAL",
                    book["asks"][0][1] + 10_000,
                    price=best_ask,
                    time_in_force="immediate_or_cancel",
                )
                assert partial.fills and partial.filled_amount < (partial.amount or 0)
                await a.trade("sell", "ETH-PERPETUAL", 5)
                # Another account, same instrument: positions are per account.
                await b.trade("sell", "BTC-PERPETUAL", 700)
                await b.trade("buy", "BTC-PERPETUAL", 200)
                assert len({f.trade_id for r in a.reports for f in r.fills}) >= 5

                # The same trades again: replayed RPC report and the subscription's copy.
                originals = list(a.reports)
                await a.publish(first)
                for report in originals:
                    await a.publish_as_subscription(report)
                repeated = len(first.fills) + sum(len(r.fills) for r in originals)
                # Same trade id, different amount: refused, never counted.
                bad = first.model_copy(
                    update={
                        "report_id": "bad",
                        "fills": [first.fills[0].model_copy(update={"amount": 12345.0})],
                    }
                )
                await a.publish(bad)
                # A fill without a usable price.
                broken = first.model_copy(
                    update={
                        "report_id": "broken",
                        "fills": [Fill(trade_id="x-1", amount=10, price=0.0)],
                    }
                )
                await a.publish(broken)

                diff = await wait_equal(settings, [a, b])
                assert diff == []
                trades = {f.trade_id for t in (a, b) for r in t.reports for f in r.fills}
                # The refused copies change no position: wait until the keeper counted them.
                stats = await keeper_stats(settings)
                for _ in range(100):
                    ledger = stats["ledger"]
                    if ledger["inconsistent"] >= 2 and ledger["duplicates"] >= repeated:
                        break
                    await asyncio.sleep(0.2)
                    stats = await keeper_stats(settings)
                # Each distinct valid trade applied exactly once; the rest are duplicates or
                # refused (the mismatched copy and the zero-price fill).
                assert stats["ledger"]["applied"] == len(trades) - 1
                assert stats["ledger"]["inconsistent"] == 2
                assert stats["ledger"]["duplicates"] == repeated
                recorded = await keeper_positions(settings)
                flagged = recorded[(ACCOUNTS[0], "BTC-PERPETUAL")]
                assert flagged["needs_review"] is True
        finally:
            await producer.stop()
