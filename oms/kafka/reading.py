"""Reading topics with a plain aiokafka consumer that assigns partitions itself (no group).

Why :func:`topic_partitions` exists: a consumer without a subscription knows a topic's
partitions from its cluster metadata, which aiokafka refreshes only every
``metadata_max_age_ms`` (5 minutes by default) or after an error. A topic created after the
consumer started (by a worker starting beside it, or by Faust declaring a changelog) has no
partitions there until then, and ``partitions_for_topic`` answers None. aiokafka has no public
call that refreshes the consumer's metadata now (``AIOKafkaConsumer.topics()`` fetches fresh
metadata but keeps it apart and returns topic names only), so this module is the one place
that asks the consumer's client for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from oms.kafka.security import KafkaConnection, as_connection

Record = tuple[bytes | None, bytes | None]


async def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
    """Fetch the cluster metadata now (topics created since the consumer started become
    known). A failed fetch is left for the next call or aiokafka's own refresh."""
    with contextlib.suppress(KafkaError):
        await consumer._client.force_metadata_update()


async def topic_partitions(
    consumer: AIOKafkaConsumer, topic: str, *, wait_s: float | None = None, poll_s: float = 0.2
) -> list[TopicPartition]:
    """The topic's partitions, in order, refreshing the consumer's metadata until it knows
    the topic. ``wait_s``: give up after that long and return ``[]`` (0: one refresh at
    most); None: wait as long as it takes."""
    loop = asyncio.get_running_loop()
    deadline = None if wait_s is None else loop.time() + wait_s
    while True:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await refresh_metadata(consumer)
            parts = consumer.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        if deadline is not None and loop.time() >= deadline:
            return []
        await asyncio.sleep(poll_s)


async def read_messages(
    target: KafkaConnection | str,
    topic: str,
    *,
    since: Mapping[TopicPartition, int] | None = None,
    timeout_s: float | None = None,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of a topic from its beginning (or from the offsets ``since``) to its end
    offsets as they are now, in offset order within each partition; ``[]`` when the topic
    does not exist. Raises TimeoutError when reading takes longer than ``timeout_s`` (None:
    no limit). ``target``: a connection, or a plaintext broker's ``host:port``."""
    consumer = AIOKafkaConsumer(**as_connection(target).aiokafka(enable_auto_commit=False))
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic, wait_s=0)
        if not tps:
            return []
        consumer.assign(tps)
        if since is None:
            await consumer.seek_to_beginning(*tps)
        else:
            for tp in tps:
                consumer.seek(tp, since.get(tp, 0))
        first = since or {}
        ends = await consumer.end_offsets(tps)
        out: list[ConsumerRecord[bytes, bytes]] = []
        async with asyncio.timeout(timeout_s):
            remaining = {tp for tp, end in ends.items() if end > first.get(tp, 0)}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=5000)
                for messages in batch.values():
                    out.extend(messages)
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


async def read_topic(
    target: KafkaConnection | str, topic: str, *, timeout_s: float | None = None
) -> list[Record]:
    """Every (key, value) of a topic, as :func:`read_messages` reads them."""
    return [(m.key, m.value) for m in await read_messages(target, topic, timeout_s=timeout_s)]


async def end_offsets(
    target: KafkaConnection | str, topic: str, *, wait_s: float = 0
) -> dict[TopicPartition, int]:
    """The end offset of every partition of a topic now (``{}`` when it does not exist,
    after waiting up to ``wait_s`` for it to appear)."""
    consumer = AIOKafkaConsumer(**as_connection(target).aiokafka(enable_auto_commit=False))
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic, wait_s=wait_s)
        return dict(await consumer.end_offsets(tps)) if tps else {}
    finally:
        await consumer.stop()
