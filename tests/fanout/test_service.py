"""The fan-out against a real broker: copies land in their account's topics only, keyed,
with headers, in order per key; unusable records become dead letters; a restart loses
nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from oms.fanout.service import AccountFanout
from oms.kafka.admin import delete_topics, list_topics
from oms.kafka.partitioning import partition_of
from oms.schemas import DeadLetter, ReasonCode
from oms.settings import AccessSettings, Settings
from oms_dev.devstack.testing import TopicRecord, wait_for_records
from tests.conftest import MakeSettings

pytestmark = pytest.mark.kafka

CONFIGURED = ["acc-a", "acc-b"]


async def wait_count(
    bootstrap: str, topic: str, count: int, within_s: float = 60.0
) -> list[TopicRecord]:
    """The records of ``topic`` once it holds at least ``count`` of them."""
    return await wait_for_records(bootstrap, topic, lambda r: len(r) >= count, within_s=within_s)


def event(account: str, order_id: str, version: int) -> bytes:
    return orjson.dumps(
        {"event_id": f"{order_id}-{version}", "event_type": "open", "order_id": order_id,
         "account_id": account, "version": version}
    )  # fmt: skip


def position(account: str, n: int) -> bytes:
    return orjson.dumps(
        {"record_id": f"{account}-p{n}", "account_id": account,
         "instrument_name": "BTC-PERPETUAL", "size": float(n)}
    )  # fmt: skip


def notification(account: str, n: int) -> bytes:
    return orjson.dumps(
        {"notification_id": f"{account}-n{n}", "account_id": account,
         "notification_type": "fill", "channel": "console"}
    )  # fmt: skip


@pytest.fixture
async def fan_settings(make_settings: MakeSettings) -> AsyncIterator[Settings]:
    settings = await make_settings(
        partitions=3,
        accounts=CONFIGURED,
        access=AccessSettings(fanout_max_new_accounts=1, fanout_max_records=50),
    )
    yield settings
    names = await list_topics(settings.kafka.bootstrap, f"{settings.kafka.topic_prefix}acct.")
    await delete_topics(settings.kafka.bootstrap, names)


async def produce(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = [
            await producer.send(topic, value, key=key, headers=[("trace", key or b"-")])
            for key, value in records
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def test_copies_reach_only_their_accounts_topics_across_a_restart(
    fan_settings: Settings,
) -> None:
    s = fan_settings
    bootstrap = s.kafka.bootstrap
    events, positions, notes = (s.topic(t) for t in ("order-events", "positions", "notifications"))
    # Before the fan-out runs: a backlog, unusable records among it.
    first_events = [
        (f"o-{acc}-{i}".encode(), event(acc, f"o-{acc}-{i}", v))
        for v in range(3) for acc in CONFIGURED for i in range(4)
    ]  # fmt: skip
    await produce(bootstrap, events, [*first_events, (b"o-x", None), (b"o-y", b"{garbage")])
    await produce(bootstrap, positions, [(f"{a}|BTC".encode(), position(a, 1)) for a in CONFIGURED])
    await produce(bootstrap, notes, [(a.encode(), notification(a, 1)) for a in CONFIGURED])
    await produce(bootstrap, notes, [(b"a.b", notification("a.b", 1))])

    fanout = AccountFanout(s)
    await fanout.start()
    try:
        # The configured accounts' topics exist from the start, with the shared partitions.
        topics = await list_topics(bootstrap, f"{s.kafka.topic_prefix}acct.")
        assert {s.account_topic(a, k) for a in CONFIGURED
                for k in ("events", "positions", "notifications")} <= set(topics)  # fmt: skip
        for acc in CONFIGURED:
            copies = await wait_count(bootstrap, s.account_topic(acc, "events"), 12)
            assert {orjson.loads(c.value or b"")["account_id"] for c in copies} == {acc}
            for c in copies:
                # Keyed as the source, in the partition the same key takes on the shared topic.
                assert c.key is not None and c.key.decode().startswith(f"o-{acc}-")
                assert c.partition == partition_of(c.key.decode(), s.kafka.partitions)
                assert c.headers == (("trace", c.key),)
            [pos] = await wait_count(bootstrap, s.account_topic(acc, "positions"), 1)
            assert pos.value == position(acc, 1) and pos.key == f"{acc}|BTC".encode()
            [note] = await wait_count(bootstrap, s.account_topic(acc, "notifications"), 1)
            assert note.value == notification(acc, 1)
        letters = [
            DeadLetter.from_bytes(c.value or b"")
            for c in await wait_count(bootstrap, s.topic("dead-letters"), 3)
        ]
        assert {(d.source_topic, d.reason_code) for d in letters} == {
            (events, ReasonCode.TOMBSTONE),
            (events, ReasonCode.MALFORMED_JSON),
            (notes, ReasonCode.UNKNOWN_ACCOUNT),
        }
        assert all(d.error.startswith("fanout: ") for d in letters)
    finally:
        await fanout.stop()

    # While it is down: more versions of the same orders, and an account never configured
    # (it gets topics on demand; the bound, 1, refuses the next new one).
    later = [
        (f"o-{acc}-{i}".encode(), event(acc, f"o-{acc}-{i}", v))
        for v in range(3, 6) for acc in CONFIGURED for i in range(4)
    ]  # fmt: skip
    await produce(bootstrap, events, later)
    await produce(bootstrap, events, [(b"o-c", event("acc-c", "o-c", 0))])

    fanout = AccountFanout(s)
    await fanout.start()
    try:
        for acc in CONFIGURED:
            copies = await wait_count(bootstrap, s.account_topic(acc, "events"), 24)
            seen: dict[str, list[int]] = {}
            for c in copies:
                body = orjson.loads(c.value or b"")
                assert body["account_id"] == acc
                seen.setdefault(body["order_id"], []).append(body["version"])
            # Nothing lost, and per order the versions in order for a reader that drops
            # repeats by event id (at least once: a restart may copy a run again).
            for versions in seen.values():
                assert list(dict.fromkeys(versions)) == list(range(6)), versions
        [c_copy] = await wait_count(bootstrap, s.account_topic("acc-c", "events"), 1)
        assert orjson.loads(c_copy.value or b"")["order_id"] == "o-c"
        await produce(bootstrap, events, [(b"o-d", event("acc-d", "o-d", 0))])
        letters = [
            DeadLetter.from_bytes(c.value or b"")
            for c in await wait_count(bootstrap, s.topic("dead-letters"), 4)
        ]
        refused = [d for d in letters if d.key == "o-d"]
        assert [d.reason_code for d in refused] == [ReasonCode.UNKNOWN_ACCOUNT]
        assert "fanout_max_new_accounts" in refused[0].error
        assert s.account_topic("acc-d", "events") not in await list_topics(
            bootstrap, f"{s.kafka.topic_prefix}acct."
        )
    finally:
        await fanout.stop()
