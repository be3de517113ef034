"""The devstack broker and topic administration, against the real session broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from oms.kafka.admin import (
    DEAD_LETTER_RETENTION_MS,
    describe_topic,
    ensure_topics,
    list_topics,
    recreate_topics,
)
from oms.schemas.topics import Topic
from oms.settings import Settings
from oms_dev.devstack.net import port_open

pytestmark = pytest.mark.kafka


async def test_broker_answers_metadata(kafka_bootstrap: str) -> None:
    host, port = kafka_bootstrap.rsplit(":", 1)
    assert port_open(host, int(port))
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        assert cluster["brokers"]
    finally:
        await admin.close()


async def test_ensure_topics_creates_all_with_partitions(settings: Settings) -> None:
    bootstrap = settings.kafka.bootstrap
    names = await list_topics(bootstrap, settings.kafka.topic_prefix)
    assert names == sorted(settings.topic(t.value) for t in Topic)
    described = [await describe_topic(bootstrap, name) for name in names]
    assert {partitions for partitions, _ in described} == {settings.kafka.partitions}
    _, config = await describe_topic(bootstrap, settings.topic(Topic.DEAD_LETTERS.value))
    assert config["retention.ms"] == str(DEAD_LETTER_RETENTION_MS)


async def test_ensure_topics_is_idempotent_and_takes_extra(settings: Settings) -> None:
    extra = {settings.topic("extra"): 2}
    first = await ensure_topics(settings, extra)
    second = await ensure_topics(settings, extra)
    assert first == second
    assert settings.topic("extra") in await list_topics(settings.kafka.bootstrap)


async def test_recreate_topics_empties_them(settings: Settings, kafka_io) -> None:
    topic = settings.topic(Topic.NOTIFICATIONS.value)
    await kafka_io.send(topic, {"a": 1}, key="acc")
    assert len(await kafka_io.consume(topic, 1)) == 1
    await recreate_topics(settings)
    assert await kafka_io.consume(topic, None, timeout_s=5) == []


async def test_produce_consume_json_roundtrip(settings: Settings, kafka_io) -> None:
    topic = settings.topic(Topic.ORDER_REQUESTS.value)
    sent = [(f"order-{i}", {"i": i}) for i in range(50)]
    assert await kafka_io.produce(topic, sent) == 50
    got = await kafka_io.consume(topic, 50)
    assert sorted(got, key=lambda kv: kv[1]["i"]) == sent


async def test_consumer_group_commits(settings: Settings, kafka_io) -> None:
    """Group coordination (join, sync, commit) works with aiokafka on this broker version."""
    topic = settings.topic(Topic.POSITIONS.value)
    await kafka_io.produce(topic, [(f"k{i}", {"i": i}) for i in range(20)])
    group = settings.worker.app_id + "-g"
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        n = 0
        while n < 20:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
            n += sum(len(v) for v in batch.values())
        await consumer.commit()
        committed = [await consumer.committed(tp) or 0 for tp in consumer.assignment()]
        assert sum(committed) == 20
    finally:
        await consumer.stop()


async def test_idempotent_producer(settings: Settings) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap, enable_idempotence=True, acks="all"
    )
    await producer.start()
    try:
        md = await producer.send_and_wait(
            settings.topic(Topic.MARKET_TICKS.value), b"{}", key=b"BTC"
        )
        assert md.offset == 0
    finally:
        await producer.stop()


FAUST_APP = textwrap.dedent(
    """
    import os
    import faust

    app = faust.App(
        os.environ["APP_ID"], broker="kafka://" + os.environ["BS"], store="memory://",
        web_enabled=False, topic_partitions=4,
    )
    src = app.topic(os.environ["SRC"], value_serializer="json")
    out = app.topic(os.environ["OUT"], value_serializer="json")
    counts = app.Table("counts", default=int, partitions=4)

    @app.agent(src)
    async def proc(stream):
        async for key, value in stream.items():
            counts[key] += 1
            await out.send(key=key, value={"n": counts[key], "i": value["i"]})
    """
)


@pytest.mark.timeout(240)
async def test_faust_agent_and_table_work(make_settings, kafka_io, tmp_path: Path) -> None:
    """faust-streaming's worker (agent, table changelog, group) runs against this broker."""
    # The table's changelog gets the app's topic_partitions (4): the source must match.
    settings = await make_settings(partitions=4)
    (tmp_path / "fapp.py").write_text(FAUST_APP)
    src = settings.topic(Topic.ORDER_REQUESTS.value)
    out = settings.topic(Topic.ORDER_EVENTS.value)
    env = {
        **os.environ,
        "APP_ID": settings.worker.app_id,
        "BS": settings.kafka.bootstrap,
        "SRC": src,
        "OUT": out,
    }
    proc = subprocess.Popen(  # noqa: ASYNC220 - a short-lived start, not a blocking wait
        [sys.executable, "-m", "faust", "-A", "fapp", "worker", "-l", "warn"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "faust.log").open("wb"),  # read on failure
        start_new_session=True,
    )
    try:
        await kafka_io.produce(src, [(f"k{i % 5}", {"i": i}) for i in range(100)])
        got = await kafka_io.consume(out, 100, timeout_s=150)
        per_key: dict[str, int] = {}
        for key, value in got:
            per_key[key] = max(per_key.get(key, 0), value["n"])
        assert per_key == {f"k{i}": 20 for i in range(5)}
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.wait), 30)
        except TimeoutError:
            proc.kill()
            await asyncio.to_thread(proc.wait)
