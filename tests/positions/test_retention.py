"""Retention of the keeper's seen-trades table: expired entries are deleted (tombstones in the
changelog), duplicates inside the window still count once, and fills older than the window
are refused as ``stale_fill`` and flagged instead of being counted a second time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from oms.kafka.admin import describe_topic
from oms.kafka.partitioning import partition_of
from oms.kafka.reading import topic_partitions
from oms.positions.keeper import keeper_app_id
from oms.positions.ledger import Ledger
from oms.positions.math import PositionKind
from oms.positions.retention import SeenTradesPruner
from oms.schemas import (
    Direction,
    ExecutionReport,
    Fill,
    PositionRecord,
    ReasonCode,
    ReportSource,
    Topic,
    now_ms,
    position_key,
)
from oms.settings import Settings
from tests.positions.helpers import (
    ACCOUNTS,
    TopicTail,
    keeper_positions,
    keeper_stats,
    position_settings,
    position_stack,
)

HOUR_MS = 3_600_000


def report(trade_ids: list[str], ts: int, account: str = "a", side: str = "buy") -> ExecutionReport:
    return ExecutionReport(
        report_id=f"r-{trade_ids[0]}-{len(trade_ids)}",
        order_id="o-ret",
        account_id=account,
        source=ReportSource.RPC,
        instrument_name="BTC-PERPETUAL",
        direction=Direction(side),
        fills=[
            Fill(trade_id=t, amount=10.0, price=50_000.0, timestamp=ts + i)
            for i, t in enumerate(trade_ids)
        ],
    )


def retained_ledger() -> Ledger:
    return Ledger({}, {}, lambda name: PositionKind.INVERSE, retention_ms=HOUR_MS)


# -- the ledger and the pruner on plain dicts --------------------------------------------------


def test_stale_fill_is_refused_and_flagged_unless_in_the_reorder_window() -> None:
    led = retained_ledger()
    old = now_ms() - 2 * HOUR_MS
    # Older than the retention and unknown: refused, flagged, not counted.
    out = led.apply_reports([report(["BTC-1"], old)])
    assert out.records == []
    assert [p.reason_code for p in out.problems] == [ReasonCode.STALE_FILL]
    state = led.state("a", "BTC-PERPETUAL")
    assert state.size == 0 and state.fills == 0 and state.needs_review
    assert led.counters.stale == 1 and led.counters.inconsistent == 0

    fresh = now_ms()
    led.apply_reports([report(["BTC-2", "BTC-3"], fresh)])
    assert led.state("a", "BTC-PERPETUAL").size == 20
    # Its seen entry gone (pruned), but the trade is still in the position's recent fills:
    # a duplicate, even once the fill is older than the retention.
    del led.seen["BTC-2"]
    led.retention_ms = 1
    time.sleep(0.01)
    again = led.apply_reports([report(["BTC-2"], fresh)])
    assert again.records == [] and again.problems == []
    assert led.counters.duplicates == 1 and led.counters.stale == 1
    # Same trade id in the window with other figures: not a duplicate, refused as stale.
    base = report(["BTC-3"], fresh + 1)
    other = base.model_copy(update={"fills": [base.fills[0].model_copy(update={"amount": 99.0})]})
    del led.seen["BTC-3"]
    refused = led.apply_reports([other])
    assert [p.reason_code for p in refused.problems] == [ReasonCode.STALE_FILL]
    assert led.state("a", "BTC-PERPETUAL").size == 20


def test_pruner_deletes_only_the_expired_trades_of_the_given_partition() -> None:
    partitions = 4
    accounts = [f"acct-{i}" for i in range(40)]
    by_partition: dict[int, str] = {}
    for account in accounts:
        part = partition_of(position_key(account, "BTC-PERPETUAL"), partitions)
        by_partition.setdefault(part, account)
    assert len(by_partition) >= 2
    (p1, acct1), (p2, acct2) = sorted(by_partition.items())[:2]
    now = now_ms()
    seen: dict[str, PositionRecord | None] = {}

    def rec(trade: str, account: str, ts: int) -> PositionRecord:
        return PositionRecord(
            record_id=trade, account_id=account, instrument_name="BTC-PERPETUAL", size=1.0,
            trade_id=trade, timestamp=ts,
        )  # fmt: skip

    seen["old-1"] = rec("old-1", acct1, now - 2 * HOUR_MS)
    seen["new-1"] = rec("new-1", acct1, now)
    seen["old-2"] = rec("old-2", acct2, now - 2 * HOUR_MS)
    pruner = SeenTradesPruner(seen, lambda: iter(seen.items()), partitions, HOUR_MS)
    assert pruner.prune(p1, pruner.cutoff()) == 1
    assert set(seen) == {"new-1", "old-2"}
    # A command may not cut inside the retention, whatever cutoff it carries.
    assert pruner.prune(p1, now + HOUR_MS) == 0
    assert pruner.prune(p2, pruner.cutoff()) == 1
    assert set(seen) == {"new-1"}


# -- the keeper process through real Kafka ---------------------------------------------------

# Long enough for a loaded machine to apply a fill and its duplicate inside the window.
RETENTION_S = 10.0
WINDOW_FILLS = 65  # one more than the reorder window (REORDER_WINDOW = 64)


async def _wait_stats(settings: Settings, ok: Any, within: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = await keeper_stats(settings)
        if ok(stats):
            return stats
        await asyncio.sleep(0.2)
    raise AssertionError(f"keeper stats never matched: {stats}")


async def _changelog(bootstrap: str, topic: str) -> list[tuple[bytes, bytes | None]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic, wait_s=0)
        assert tps, f"no changelog topic {topic}"
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[tuple[bytes, bytes | None]] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out += [(r.key, r.value) for r in records]
        return out
    finally:
        await consumer.stop()


async def _cleanup_policy(bootstrap: str, topic: str) -> str:
    _, config = await describe_topic(bootstrap, topic)
    return config.get("cleanup.policy", "")


@pytest.mark.kafka
async def test_keeper_prunes_expired_trades_and_refuses_stale_fills(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = position_settings(
        tmp_path, kafka_bootstrap, reconcile=False,
        seen_trades_retention_s=RETENTION_S, seen_trades_prune_interval_s=0.5,
    )  # fmt: skip
    account = ACCOUNTS[0]
    reports_topic = settings.topic(Topic.EXECUTION_REPORTS)
    async with position_stack(settings):
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        events = await TopicTail(kafka_bootstrap, settings.topic(Topic.ORDER_EVENTS)).start()

        async def publish(r: ExecutionReport) -> None:
            await producer.send_and_wait(reports_topic, r.to_bytes(), r.order_id.encode())

        try:
            # The keeper's route consumer joins its group after /health says ready: wait
            # until a fill went through, so the fills below are applied well inside the window.
            await publish(report(["ETH-1"], now_ms(), ACCOUNTS[1]))
            warm = await _wait_stats(
                settings, lambda s: s["ledger"]["applied"] + s["ledger"]["stale"] == 1
            )
            w = warm["ledger"]["applied"]
            trades = [f"BTC-{9000 + i}" for i in range(WINDOW_FILLS)]
            first = report(trades[:1], now_ms(), account)
            await publish(first)
            await publish(report(trades[1:], first.fills[0].timestamp + 1, account))
            await _wait_stats(settings, lambda s: s["ledger"]["applied"] == w + WINDOW_FILLS)
            # Inside the window: a replayed report counts once.
            await publish(first)
            await _wait_stats(settings, lambda s: s["ledger"]["duplicates"] == 1)
            # Older than the window and never seen: refused and flagged, not applied.
            await publish(report(["BTC-1"], now_ms() - 60_000, account))
            await _wait_stats(settings, lambda s: s["ledger"]["stale"] == 2 - w)
            flagged = await events.wait_for(
                lambda v: orjson.loads(v).get("reason_code") == ReasonCode.STALE_FILL.value, 10
            )
            assert orjson.loads(flagged)["details"]["trade_id"] == "BTC-1"

            # Past the retention every entry is pruned: the table is empty again.
            stats = await _wait_stats(
                settings, lambda s: s["seen_trades"] == 0, within=RETENTION_S + 20
            )
            assert stats["keeper"]["seen_trades_pruned"] == w + WINDOW_FILLS
            assert stats["keeper"].get("bad_commands", 0) == 0
            # Prune commands are no fills: the ledger's figures did not move.
            assert stats["ledger"]["applied"] == w + WINDOW_FILLS
            assert stats["ledger"]["duplicates"] == 1 and stats["ledger"]["inconsistent"] == 0

            # The deletes reached the (compacted) changelog as tombstones.
            changelog = f"{keeper_app_id(settings)}-position-trades-changelog"
            assert "compact" in await _cleanup_policy(kafka_bootstrap, changelog)
            entries = await _changelog(kafka_bootstrap, changelog)
            # Faust writes table keys as JSON strings.
            tombstones = {orjson.loads(k) for k, v in entries if v is None}
            assert set(trades) <= tombstones

            # The pruned first trade again, out of the reorder window too: refused, not
            # counted twice. The last one is still in the window: a duplicate.
            await publish(first)
            await _wait_stats(settings, lambda s: s["ledger"]["stale"] == 3 - w)
            await publish(report(trades[-1:], first.fills[0].timestamp + WINDOW_FILLS - 1, account))
            stats = await _wait_stats(settings, lambda s: s["ledger"]["duplicates"] == 2)
            assert stats["ledger"]["applied"] == w + WINDOW_FILLS
            position = (await keeper_positions(settings))[(account, "BTC-PERPETUAL")]
            assert position["size"] == 10.0 * WINDOW_FILLS
            assert position["fills"] == WINDOW_FILLS and position["needs_review"] is True
        finally:
            await events.stop()
            await producer.stop()
