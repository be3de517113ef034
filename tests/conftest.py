"""Shared fixtures: one real Kafka broker per test session, isolated settings per test.

Everything Kafka-related in the tests runs against a real Apache Kafka (fetched from Maven
Central by :mod:`oms_dev.devstack.kafka`), started once per session on free ports with a
temporary data dir and stopped at the end, also when tests fail or the run is interrupted.
Set ``OMS_TEST_KAFKA_BOOTSTRAP=host:port`` to use an already running broker instead.

Fixtures:

- ``kafka_broker`` (session): the :class:`~oms_dev.devstack.kafka.KafkaBroker`, or None with an
  external broker;
- ``kafka_bootstrap`` (session): ``"127.0.0.1:<port>"``;
- ``make_settings`` (function): factory ``async (label="", partitions=8, create_topics=True,
  **overrides) -> Settings`` with a unique topic prefix, Faust app id, free ports and a data dir
  under ``tmp_path``; the topics it created are deleted after the test;
- ``settings`` (function): ``make_settings()`` with the test's name as label;
- ``kafka_io`` (function): :class:`KafkaIO` bound to the broker (produce/consume JSON).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from oms.kafka.admin import delete_topics, ensure_topics, topic_specs
from oms.settings import Settings
from oms_dev.devstack.kafka import DevstackError, KafkaBroker
from oms_dev.devstack.testing import consume_json, isolated_settings, produce_json

# Generous: a fresh machine may still have to fetch the jars, and a shared 2-core machine can
# be slow to start a JVM while other tests run.
BROKER_START_TIMEOUT_S = float(os.environ.get("OMS_TEST_KAFKA_START_TIMEOUT", "240"))


@pytest.fixture(scope="session")
async def kafka_broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[KafkaBroker | None]:
    """A single-node KRaft broker on free ports for the whole session (None if external)."""
    if os.environ.get("OMS_TEST_KAFKA_BOOTSTRAP"):
        yield None
        return
    broker: KafkaBroker | None = None
    errors: list[str] = []
    # Free ports are picked before the JVM binds them: another process (a parallel test
    # session) can take one meanwhile, so a failed start is retried on new ports.
    for _attempt in range(3):
        broker = KafkaBroker.isolated(tmp_path_factory.mktemp("kafka"), heap="768m")
        try:
            # die_with_parent: a killed pytest takes the JVM with it (no orphan broker).
            await broker.astart(BROKER_START_TIMEOUT_S, die_with_parent=True)
            break
        except DevstackError as exc:
            errors.append(str(exc))
            broker = None
            if "install it with" in str(exc):  # missing JDK/Maven: retrying cannot help
                break
    if broker is None:
        pytest.fail("could not start the test Kafka broker: " + " | ".join(errors), pytrace=False)
    try:
        yield broker
    finally:
        await broker.astop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker | None) -> str:
    """``host:port`` of the session's broker."""
    if kafka_broker is None:
        return os.environ["OMS_TEST_KAFKA_BOOTSTRAP"]
    return kafka_broker.bootstrap


MakeSettings = Callable[..., Awaitable[Settings]]


@pytest.fixture
async def make_settings(
    kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[MakeSettings]:
    """Factory of isolated Settings; topics created by it are deleted after the test."""
    created: list[str] = []
    count = 0

    async def factory(
        label: str = "",
        partitions: int = 8,
        create_topics: bool = True,
        extra_topics: dict[str, int] | None = None,
        **overrides: Any,
    ) -> Settings:
        nonlocal count
        count += 1
        data_dir = tmp_path / f"oms-{count}"
        data_dir.mkdir(parents=True, exist_ok=True)
        settings = isolated_settings(
            kafka_bootstrap,
            data_dir,
            label=label or request.node.name,
            partitions=partitions,
            **overrides,
        )
        if create_topics:
            created.extend(await ensure_topics(settings, extra_topics))
        else:
            created.extend(s.name for s in topic_specs(settings, extra_topics))
        return settings

    yield factory
    if created:
        # Keeps the session broker small: hundreds of tests x 7 topics x 8 partitions otherwise.
        try:
            await delete_topics(kafka_bootstrap, created)
        except Exception as exc:  # cleanup only: never hide the test's own result
            print(f"warning: deleting test topics failed: {exc!r}")


@pytest.fixture
async def settings(make_settings: MakeSettings) -> Settings:
    """Isolated Settings for this test, with every pipeline topic created."""
    return await make_settings()


class KafkaIO:
    """Produce and consume JSON messages on the test broker."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    async def produce(self, topic: str, messages: Iterable[tuple[str | bytes | None, Any]]) -> int:
        """Send ``(key, value)`` pairs; values are dicts/lists or pydantic models."""
        return await produce_json(self.bootstrap, topic, messages)

    async def send(self, topic: str, value: Any, key: str | bytes | None = None) -> None:
        """Send one message."""
        await produce_json(self.bootstrap, topic, [(key, value)])

    async def consume(
        self, topic: str, count: int | None = None, *, timeout_s: float = 30.0
    ) -> list[tuple[str | None, Any]]:
        """``(key, value)`` from the beginning of every partition (see ``consume_json``)."""
        return await consume_json(self.bootstrap, topic, count, timeout_s=timeout_s)


@pytest.fixture
def kafka_io(kafka_bootstrap: str) -> KafkaIO:
    """JSON produce/consume helper bound to the session's broker."""
    return KafkaIO(kafka_bootstrap)
