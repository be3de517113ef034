"""The one place that refreshes a consumer's metadata: topic_partitions waits for a topic to
appear, refreshing as it goes, and gives up when told to."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from oms.kafka.reading import topic_partitions


class _Client:
    def __init__(self, consumer: _Consumer) -> None:
        self.consumer = consumer
        self.refreshes = 0

    async def force_metadata_update(self) -> bool:
        self.refreshes += 1
        if self.refreshes >= self.consumer.known_after:
            self.consumer.known = {2, 0, 1}
        return True


class _Consumer:
    """As much of AIOKafkaConsumer as topic_partitions uses: the topic becomes known after
    ``known_after`` metadata refreshes."""

    def __init__(self, known_after: int) -> None:
        self.known_after = known_after
        self.known: set[int] | None = None
        self._client = _Client(self)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.known


async def test_a_known_topic_needs_no_refresh() -> None:
    consumer = _Consumer(known_after=1)
    consumer.known = {1, 0}
    parts = await topic_partitions(consumer, "t", wait_s=0)  # type: ignore[arg-type]
    assert parts == [TopicPartition("t", 0), TopicPartition("t", 1)]
    assert consumer._client.refreshes == 0


async def test_a_new_topic_is_found_by_refreshing() -> None:
    consumer: Any = _Consumer(known_after=3)
    parts = await topic_partitions(consumer, "t", poll_s=0.001)
    assert parts == [TopicPartition("t", p) for p in (0, 1, 2)]
    assert consumer._client.refreshes == 3


async def test_wait_zero_refreshes_once_then_gives_up() -> None:
    consumer: Any = _Consumer(known_after=5)
    assert await topic_partitions(consumer, "t", wait_s=0) == []
    assert consumer._client.refreshes == 1
