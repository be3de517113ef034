"""The fan-out: every record of the shared output topics copied to its account's own topic.

Kafka ACLs grant whole topics (or name prefixes), never records inside one, so a desk that
may read only its accounts cannot read ``oms.order-events``. This service gives each account
its own topics (``oms.acct.<account>.events|positions|notifications``, see
:meth:`~oms.settings.Settings.account_topic`), which a desk reads through a prefixed ACL on
``oms.acct.<account>.``.

A copy keeps the source's key, value, headers and timestamp. Its topic has the shared
topic's partition count and the same default partitioner hashes the same key, so a key's
records stay in one partition, in their order: the producer is idempotent (a retried
request is never written twice or out of order) and a batch's copies are sent in offset
order.

Delivery is at least once. The consumer group's offsets are committed only after the broker
acknowledged every copy (and dead letter) of the batch; after a crash, a failed send or a
rebalance, the records since the last commit are copied again. A reader of an account topic
may so see a record twice, never miss one; every record carries its own id (``event_id``,
``record_id``, ``notification_id``) to drop repeats by.

A record that names no usable account (a tombstone, bytes that are not a record, an account
id that cannot name topics, see :mod:`oms.fanout.routing`) goes to ``oms.dead-letters`` with
its reason code, and the service goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from oms.component import Component
from oms.fanout.routing import SOURCES, account_of, may_have_topics
from oms.kafka.admin import account_topic_specs, ensure_topic_specs
from oms.kafka.security import KafkaConnection
from oms.schemas import DeadLetter, ReasonCode
from oms.schemas.decode import Undecodable
from oms.schemas.topics import Topic
from oms.settings import AccountTopicKind, Settings

log = structlog.get_logger(__name__)

Batch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]

# A batch that could not be copied is tried again after this long (broker trouble).
_RETRY_S = 1.0


def fanout_group(settings: Settings) -> str:
    """The fan-out's consumer group: ``access.fanout_group``, or ``<worker app id>-fanout``."""
    return settings.access.fanout_group or f"{settings.worker.app_id}-fanout"


def configured_accounts(settings: Settings) -> list[str]:
    """The accounts whose topics exist from the start: ``accounts`` and every desk's, those
    that can name topics."""
    named = set(settings.accounts)
    for accounts in settings.desks.values():
        named.update(accounts)
    return sorted(a for a in named if may_have_topics(a))


class AccountFanout(Component):
    """Copies ``oms.order-events``, ``oms.positions`` and ``oms.notifications`` to the
    per-account topics, at least once, creating an account's topics when it first appears."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("fanout")
        self._settings = settings
        self._kinds: dict[str, AccountTopicKind] = {
            settings.topic(topic.value): kind for topic, (kind, _) in SOURCES.items()
        }
        self._dead_topic = settings.topic(Topic.DEAD_LETTERS.value)
        self._configured = frozenset(configured_accounts(settings))
        # Accounts whose topics are known to exist.
        self._ready: set[str] = set()
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self.counters: Counter[str] = Counter()

    async def on_start(self) -> None:
        s = self._settings
        await self._ensure_accounts(self._configured)
        kafka = KafkaConnection.from_settings(s)
        self._producer = AIOKafkaProducer(
            **kafka.aiokafka(
                acks="all", enable_idempotence=True, linger_ms=s.access.fanout_linger_ms
            )
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            *self._kinds,
            **kafka.aiokafka(
                group_id=fanout_group(s),
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=s.access.fanout_max_records,
            ),
        )
        await self._consumer.start()
        self.spawn(self._run(self._consumer, self._producer), "copy")
        log.info(
            "fanout.started", group=fanout_group(s), accounts=len(self._configured),
            sources=sorted(self._kinds),
        )  # fmt: skip

    async def on_stop(self) -> None:
        # Leaving the group hands the partitions over at once; what was not committed is
        # copied again by whoever takes them.
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        self._consumer = self._producer = None
        log.info("fanout.stopped", **dict(self.counters))

    async def _run(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        max_records = self._settings.access.fanout_max_records
        while True:
            try:
                batch: Batch = await consumer.getmany(timeout_ms=500, max_records=max_records)
            except KafkaError as exc:
                self.counters["kafka_errors"] += 1
                log.warning("fanout.fetch_failed", error=type(exc).__name__)
                await asyncio.sleep(_RETRY_S)
                continue
            if not batch:
                continue
            try:
                await self._copy(batch, producer)
            except Exception as exc:
                # Some copies may be on the broker, none of the batch is committed: read it
                # again from its first offsets (the copies already sent come twice).
                self.counters["batch_retries"] += 1
                log.warning("fanout.copy_failed", error=str(exc)[:300], retry_in_s=_RETRY_S)
                await self._rewind(consumer, batch)
                await asyncio.sleep(_RETRY_S)
                continue
            await self._commit(consumer, batch)

    async def _copy(self, batch: Batch, producer: AIOKafkaProducer) -> None:
        """Send every record of ``batch`` to its account topic (or its dead letter to the
        dead-letter topic) and wait until the broker has them all."""
        routed: list[tuple[ConsumerRecord[bytes, bytes], str | Undecodable]] = [
            (msg, account_of(msg.value)) for msgs in batch.values() for msg in msgs
        ]
        new = {a for _, a in routed if isinstance(a, str) and a not in self._ready}
        refused = await self._ensure_new(new)
        sent: list[asyncio.Future[Any]] = []
        letters: list[DeadLetter] = []
        for msg, account in routed:
            if isinstance(account, str) and account in refused:
                account = Undecodable(
                    ReasonCode.UNKNOWN_ACCOUNT,
                    f"account {account!r} is not configured and "
                    f"{self._settings.access.fanout_max_new_accounts} new accounts already "
                    "have topics (access.fanout_max_new_accounts)",
                )
            if isinstance(account, Undecodable):
                letters.append(account.letter_for(msg, consumer="fanout"))
                continue
            topic = self._settings.account_topic(account, self._kinds[msg.topic])
            sent.append(
                await producer.send(
                    topic,
                    msg.value,
                    key=msg.key,
                    headers=list(msg.headers),
                    timestamp_ms=msg.timestamp,
                )
            )
        for letter in letters:
            key = letter.key.encode() if letter.key is not None else None
            sent.append(await producer.send(self._dead_topic, letter.to_bytes(), key=key))
        await asyncio.gather(*sent)
        self.counters["copied"] += len(sent) - len(letters)
        self.counters["dead_lettered"] += len(letters)
        if letters:
            log.warning(
                "fanout.dead_lettered", count=len(letters),
                reasons=sorted({letter.reason_code.value for letter in letters}),
            )  # fmt: skip

    async def _ensure_new(self, accounts: set[str]) -> set[str]:
        """Create the topics of accounts seen for the first time; returns those refused
        because the bound on accounts created on demand is reached."""
        if not accounts:
            return set()
        bound = self._settings.access.fanout_max_new_accounts
        created_on_demand = len(self._ready - self._configured)
        allowed = sorted(accounts)[: max(0, bound - created_on_demand)]
        await self._ensure_accounts(allowed)
        return accounts - set(allowed)

    async def _ensure_accounts(self, accounts: Iterable[str]) -> None:
        wanted = sorted(set(accounts) - self._ready)
        if not wanted:
            return
        await ensure_topic_specs(self._settings, account_topic_specs(self._settings, wanted))
        self._ready.update(wanted)
        self.counters["accounts"] = len(self._ready)
        log.info("fanout.account_topics_ready", accounts=wanted)

    async def _commit(self, consumer: AIOKafkaConsumer, batch: Batch) -> None:
        offsets = {tp: msgs[-1].offset + 1 for tp, msgs in batch.items() if msgs}
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took partitions away (or the coordinator moved): their new owner
            # copies again from the last commit, so the batch's copies come twice at worst.
            self.counters["commit_failures"] += 1
            log.warning("fanout.commit_failed", error=type(exc).__name__)
            return
        self.counters["committed"] += sum(len(m) for m in batch.values())

    async def _rewind(self, consumer: AIOKafkaConsumer, batch: Batch) -> None:
        assigned = consumer.assignment()
        for tp, msgs in batch.items():
            if msgs and tp in assigned:
                consumer.seek(tp, msgs[0].offset)
