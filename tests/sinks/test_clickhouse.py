"""Migrations, deduplicated inserts and the documented replay-safe reads, on embedded chDB."""

from __future__ import annotations

from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from oms.schemas import OrderEventType, OrderStatus, ReasonCode, ReportSource, Topic
from oms.settings import Settings
from oms.sinks.batch import (
    MESSAGES_PER_BATCH_FACTOR,
    SINK_TOPICS,
    Batch,
    Message,
    TickSampler,
)
from oms.sinks.clickhouse.client import AsyncClickHouse
from oms.sinks.clickhouse.migrations import MIGRATIONS, apply_migrations, sync_retention
from oms.sinks.queries import get_order_history
from oms.sinks.writer import write_batch

from .factories import T0, batch, fill_report, lifecycle, order_event, tick

TABLES = {
    "schema_migrations",
    "orders",
    "order_events",
    "executions",
    "market_ticks",
    "dead_letters",
    "position_changes",
    "notifications",
    "metrics",
}


def scalar(client: Client, sql: str) -> Any:
    return client.query(sql).result_rows[0][0]


def test_migrations_are_idempotent(settings: Settings, ch: Client) -> None:
    # The fixture already applied them once.
    assert apply_migrations(ch, settings.sink) == []
    assert apply_migrations(ch, settings.sink) == []
    names = {r[0] for r in ch.query("SHOW TABLES").result_rows}
    assert names >= TABLES
    recorded = ch.query("SELECT version FROM schema_migrations FINAL ORDER BY version")
    assert [r[0] for r in recorded.result_rows] == [m.version for m in MIGRATIONS]
    engines = {
        name: engine
        for name, engine in ch.query(
            "SELECT name, engine FROM system.tables WHERE database = currentDatabase()"
        ).result_rows
    }
    assert engines["orders"] == "ReplacingMergeTree"


def test_retention_follows_settings(settings: Settings, ch: Client) -> None:
    assert sync_retention(ch, settings.sink.retention_days) == []
    altered = sync_retention(ch, 7)
    assert "order_events" in altered and "orders" not in altered
    ddl = scalar(ch, "SELECT create_table_query FROM system.tables WHERE name = 'executions'")
    assert "toIntervalDay(7)" in str(ddl)
    assert sync_retention(ch, 7) == []


async def test_retried_batch_is_dropped_by_token(settings: Settings, ch: Client) -> None:
    events = lifecycle("o-1")
    b = batch(settings, [(Topic.ORDER_EVENTS, e.to_bytes()) for e in events])
    aclient = AsyncClickHouse(ch)
    assert await write_batch(aclient, b) == {"order_events": 5, "orders": 5}
    # A retry after an ambiguous failure (e.g. timeout after the server wrote it).
    await write_batch(aclient, b)
    await write_batch(aclient, b)
    assert scalar(ch, "SELECT count() FROM order_events") == 5
    # optimize_on_insert collapses the five snapshots of one order inside the block.
    assert scalar(ch, "SELECT count() FROM orders") == 1
    # A different batch (other offsets) is not mistaken for a retry.
    more = batch(settings, [(Topic.ORDER_EVENTS, events[0].to_bytes())], start=100)
    await write_batch(aclient, more)
    assert scalar(ch, "SELECT count() FROM order_events") == 6


async def test_replay_does_not_double_count(settings: Settings, ch: Client) -> None:
    """A crash replay cut into different batches inserts rows twice; FINAL reads don't care."""
    records: list[tuple[Topic, bytes]] = []
    for order_id in ("o-a", "o-b"):
        records += [(Topic.ORDER_EVENTS, e.to_bytes()) for e in lifecycle(order_id)]
        records.append((Topic.EXECUTION_REPORTS, fill_report(order_id, ["t1"]).to_bytes()))
        # The same fills again from the RPC reply, plus a new one.
        rpc = fill_report(order_id, ["t1", "t2"], source=ReportSource.RPC)
        records.append((Topic.EXECUTION_REPORTS, rpc.to_bytes()))
    aclient = AsyncClickHouse(ch)
    await write_batch(aclient, batch(settings, records))
    # Replay from offset 3 after a "crash", batched differently.
    await write_batch(aclient, batch(settings, records[3:9], start=3))
    await write_batch(aclient, batch(settings, records[9:], start=9))
    assert scalar(ch, "SELECT count() FROM order_events") > 10  # raw duplicates exist

    assert scalar(ch, "SELECT count() FROM order_events FINAL") == 10
    assert scalar(ch, "SELECT count() FROM executions FINAL") == 4
    assert scalar(ch, "SELECT sum(amount) FROM executions FINAL") == 40.0
    latest = ch.query("SELECT order_id, status, version FROM orders FINAL ORDER BY order_id")
    assert latest.result_rows == [("o-a", "filled", 5), ("o-b", "filled", 5)]
    by_argmax = ch.query(
        "SELECT order_id, argMax(status, version) FROM orders GROUP BY order_id ORDER BY 1"
    )
    assert by_argmax.result_rows == [("o-a", "filled"), ("o-b", "filled")]
    # After merges the duplicates are physically gone too.
    ch.command("OPTIMIZE TABLE order_events FINAL")
    assert scalar(ch, "SELECT count() FROM order_events") == 10


async def test_stale_snapshot_never_wins(settings: Settings, ch: Client) -> None:
    """Version orders snapshots even when an old one is inserted last."""
    events = lifecycle("o-1")
    aclient = AsyncClickHouse(ch)
    await write_batch(aclient, batch(settings, [(Topic.ORDER_EVENTS, events[4].to_bytes())]))
    late = batch(settings, [(Topic.ORDER_EVENTS, events[2].to_bytes())], start=50)
    await write_batch(aclient, late)
    assert scalar(ch, "SELECT status FROM orders FINAL") == "filled"


async def test_ticks_sampled_per_instrument_and_period(settings: Settings, ch: Client) -> None:
    base = T0 - T0 % 1_000
    ticks = [
        tick("BTC-PERPETUAL", base + 0),
        tick("BTC-PERPETUAL", base + 100),  # same second: dropped
        tick("ETH-PERPETUAL", base + 200),  # other instrument: kept
        tick("BTC-PERPETUAL", base + 999),  # dropped
        tick("BTC-PERPETUAL", base + 1_000),  # next period: kept
        tick("BTC-PERPETUAL", base + 500),  # late tick of an old period: dropped
        tick("BTC-PERPETUAL", base + 2_500),
    ]
    b = batch(settings, [(Topic.MARKET_TICKS, t.to_bytes()) for t in ticks])
    assert b.sampled_out == 3
    aclient = AsyncClickHouse(ch)
    await write_batch(aclient, b)
    # A replay with a fresh sampler starting mid-period keeps another tick of a period
    # already stored; the (instrument, bucket) key collapses it.
    replay = batch(settings, [(Topic.MARKET_TICKS, ticks[3].to_bytes())], start=3)
    await write_batch(aclient, replay)
    rows = ch.query(
        "SELECT instrument_name, toUnixTimestamp64Milli(bucket) FROM market_ticks FINAL "
        "ORDER BY instrument_name, bucket"
    ).result_rows
    assert rows == [
        ("BTC-PERPETUAL", base),
        ("BTC-PERPETUAL", base + 1_000),
        ("BTC-PERPETUAL", base + 2_000),
        ("ETH-PERPETUAL", base),
    ]


def test_sampling_disabled_keeps_every_new_tick() -> None:
    sampler = TickSampler(0)
    assert sampler.bucket(tick("X", 5)) == 5
    assert sampler.bucket(tick("X", 6)) == 6
    assert sampler.bucket(tick("X", 6)) is None  # exact duplicate


async def test_malformed_messages_are_counted_and_committed(settings: Settings) -> None:
    b = Batch.for_settings(settings, TickSampler(1_000))
    good = order_event("o-1", 1, OrderStatus.PENDING, OrderEventType.ACCEPTED)
    b.add(Message(settings.topic("order-events"), 2, 7, b"{not json"))
    b.add(Message(settings.topic("order-events"), 2, 8, b'{"event_id": 1}'))
    b.add(Message(settings.topic("order-events"), 2, 9, None))
    b.add(Message(settings.topic("order-events"), 2, 10, good.to_bytes()))
    assert b.malformed == 3
    assert len(b.rows["order_events"]) == 1
    assert b.commit == {(settings.topic("order-events"), 2): 11}
    # Each goes to the dead letters with its reason (sent before the batch is committed).
    assert [(d.source_offset, d.reason_code) for d in b.dead_letters] == [
        (7, ReasonCode.MALFORMED_JSON),
        (8, ReasonCode.SCHEMA_INVALID),
        (9, ReasonCode.TOMBSTONE),
    ]
    assert b.dead_letters[0].payload == "{not json"
    assert all(d.error.startswith("sink: ") for d in b.dead_letters)
    # A malformed dead letter is only counted: sending it back would loop.
    for value in (b"{not json", None, b""):
        b.add(Message(settings.topic("dead-letters"), 0, 3, value))
    assert b.malformed == 6 and len(b.dead_letters) == 3


@pytest.mark.parametrize("topic", [t for t in SINK_TOPICS if t is not Topic.DEAD_LETTERS])
def test_a_tombstone_or_empty_value_on_any_stored_topic_is_dead_lettered(
    settings: Settings, topic: Topic
) -> None:
    b = Batch.for_settings(settings, TickSampler(1_000))
    name = settings.topic(topic.value)
    for offset, value in enumerate([None, b"", b"\xff not json"]):
        b.add(Message(name, 1, offset, value))
    assert [(d.reason_code, d.source_topic, d.payload_size) for d in b.dead_letters] == [
        (ReasonCode.TOMBSTONE, name, 0),
        (ReasonCode.EMPTY_PAYLOAD, name, 0),
        (ReasonCode.MALFORMED_JSON, name, 10),
    ]
    assert b.malformed == 3 and b.commit == {(name, 1): 3} and not b.table_rows()


def accepted(i: int) -> bytes:
    """An order event with its order snapshot: one row in order_events, one in orders."""
    return order_event(f"o-{i}", 1, OrderStatus.PENDING, OrderEventType.ACCEPTED).to_bytes()


def test_batch_is_full_at_batch_size_rows_per_table_on_average(settings: Settings) -> None:
    """batch_size counts rows per insert: two busy topics fill a batch of twice as many
    messages, each table's insert getting batch_size rows (as a direct bulk insert would)."""
    size = 10
    b = Batch.for_settings(settings, TickSampler(1_000))
    reports = settings.topic("execution-reports")
    for i in range(size):
        b.add(Message(reports, 0, i, fill_report(f"o-{i}", [f"t-{i}"]).to_bytes()))
    assert b.full(size)  # one table, 10 rows
    events = settings.topic("order-events")
    b.add(Message(events, 1, 0, accepted(0)))
    # Three tables now (executions, order_events, orders): 12 rows, 30 wanted.
    assert not b.full(size)
    assert b.room(size) == 3 * size - 12
    for i in range(1, 9):
        b.add(Message(events, 1, i, accepted(i)))
    assert sorted(b.table_rows()) == [9, 9, 10] and not b.full(size)
    b.add(Message(events, 1, 9, accepted(9)))
    assert b.full(size)


def test_batch_of_rowless_messages_is_full_at_the_message_cap(settings: Settings) -> None:
    size = 10
    b = Batch.for_settings(settings, TickSampler(1_000))
    ticks = settings.topic("market-ticks")
    # The same one-second period: one tick kept, every other one sampled out (no row).
    for i in range(MESSAGES_PER_BATCH_FACTOR * size - 1):
        b.add(Message(ticks, 0, i, tick("BTC-PERPETUAL", T0 + i).to_bytes()))
    assert b.table_rows() == [1] and not b.full(size)
    assert b.room(size) == 1
    b.add(Message(ticks, 0, 99, tick("BTC-PERPETUAL", T0 + 99).to_bytes()))
    assert b.full(size)


async def test_order_history_reads_latest_state(settings: Settings, ch: Client) -> None:
    aclient = AsyncClickHouse(ch)
    records = [(Topic.ORDER_EVENTS, e.to_bytes()) for e in lifecycle("o-1")]
    records += [
        (Topic.ORDER_EVENTS, e.to_bytes())
        for e in lifecycle("o-2", account_id="acct-2", instrument="ETH-PERPETUAL")[:3]
    ]
    records.append(
        (
            Topic.ORDER_EVENTS,
            order_event(
                "o-3", 1, OrderStatus.PENDING, OrderEventType.ACCEPTED, created_at=T0 + 60_000
            ).to_bytes(),
        )
    )
    b = batch(settings, records)
    await write_batch(aclient, b)
    await write_batch(aclient, batch(settings, records, start=1000))  # replayed copy
    ch.close()  # the direct read-only path opens the engine itself

    everything = await get_order_history(settings)
    assert [r["order_id"] for r in everything] == ["o-3", "o-1", "o-2"]
    assert {r["order_id"]: r["status"] for r in everything} == {
        "o-1": "filled",
        "o-2": "open",
        "o-3": "pending",
    }
    assert [r["order_id"] for r in await get_order_history(settings, account_id="acct-2")] == [
        "o-2"
    ]
    # o-1 was open once, but its latest state is filled.
    assert await get_order_history(settings, status=OrderStatus.OPEN) == [
        *[r for r in everything if r["order_id"] == "o-2"]
    ]
    recent = await get_order_history(settings, since=T0 + 1)
    assert [r["order_id"] for r in recent] == ["o-3"]
    older = await get_order_history(settings, until=T0 + 1, instrument_name="BTC-PERPETUAL")
    assert [r["order_id"] for r in older] == ["o-1"]
    assert len(await get_order_history(settings, limit=1)) == 1
    assert everything[0]["created_at"].endswith("+00:00")
