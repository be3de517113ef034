"""The notifier process (``oms notify run``): its parts, wired together.

Reads ``oms.order-events`` and ``oms.positions`` in batches (one consumer group,
``<worker.app_id>-notify``), turns events into notices, routes them with each account's
settings (read from the compacted ``oms.notification-settings``, live), groups them into
pending notifications and delivers those when due. Every attempt is a
:class:`~oms.schemas.NotificationRecord` on ``oms.notifications``.

The parts, one job each:

* :mod:`oms.notify.intake`: Kafka in (events and positions; settings and acknowledgements);
* :mod:`oms.notify.aggregator`: dedupe, grouping, alerts and their repeats (no I/O);
* :mod:`oms.notify.delivery`: the delivery loop and the channels' fallback and retries;
* :mod:`oms.notify.alerts`: the Kafka watchdog; :mod:`oms.notify.monitor`: margin calls;
* :mod:`oms.notify.web`: ``/health``, ``/stats``, ``/metrics``.

Crash safety (SIGKILL at any point):

* a batch's offsets are committed only after the pending notifications it created or grew
  are flushed to the state topic, so an event is either replayed or already durable;
* a pending notification is sealed (persisted) before its first send, so nothing joins it
  after a channel may have taken it; channel markers ``d:<nid>|<channel>`` say what was
  sent, so a restart never sends a notification twice on a channel;
* pending ids derive from the group and its first event, and finished notifications keep
  their event ids: an event replayed after a restart is recognised and not notified again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from oms.exchange.venues import create_accounts
from oms.kafka.admin import TopicSpec, ensure_topics
from oms.kafka.security import KafkaConnection
from oms.notify.accounts import SettingsBook
from oms.notify.aggregator import Aggregator
from oms.notify.alerts import KafkaWatchdog, kafka_reachable
from oms.notify.channels import ChannelFactory, ConsoleChannel
from oms.notify.delivery import Deliverer, DeliveryLoop
from oms.notify.intake import CommitGate, ControlIntake, DeadLetters, EventIntake
from oms.notify.model import Pending
from oms.notify.monitor import AccountMonitor
from oms.notify.secrets import NotifySecrets
from oms.notify.state import StateStore
from oms.notify.web import StatusServer
from oms.schemas import NotificationRecord, OrderEvent, Topic, now_ms
from oms.secrets import SecretStore
from oms.settings import Settings

log = structlog.get_logger(__name__)

# How often delivery markers and finished notifications past the retention are forgotten.
FORGET_EVERY_MS = 60_000


def notifier_app_id(settings: Settings) -> str:
    """The notifier's consumer group (and state topic) name."""
    return f"{settings.worker.app_id}-notify"


def state_topic(settings: Settings) -> str:
    """The compacted topic holding the notifier's state."""
    return f"{settings.kafka.topic_prefix}{notifier_app_id(settings)}-state"


class Notifier:
    """One notifier process: :meth:`start` builds and starts the parts, :meth:`stop` stops
    them in reverse order."""

    def __init__(
        self,
        settings: Settings,
        *,
        console: ConsoleChannel | None = None,
        web_port: int | None = None,
        monitor: bool = True,
    ) -> None:
        self.settings = settings
        self.cfg = settings.notify
        self.web_port = self.cfg.web_port if web_port is None else web_port
        self.console = console or ConsoleChannel("console")
        self.with_monitor = monitor
        self.app_id = notifier_app_id(settings)
        self.topics = {
            "events": settings.topic(Topic.ORDER_EVENTS),
            "positions": settings.topic(Topic.POSITIONS),
            "records": settings.topic(Topic.NOTIFICATIONS),
            "settings": settings.topic(Topic.NOTIFICATION_SETTINGS),
            "acks": settings.topic(Topic.NOTIFICATION_ACKS),
            "dead": settings.topic(Topic.DEAD_LETTERS),
        }
        self.secrets = NotifySecrets(settings.resolved_secrets_file)
        self.accounts = SettingsBook()
        self.aggregator = Aggregator(
            settings_for=self.accounts.settings_for, max_group_events=self.cfg.max_group_events
        )
        self.ready = asyncio.Event()
        # records_lost and forgotten; each part counts its own (see counters).
        self._own_counters: Counter[str] = Counter()
        self._counted = [self._own_counters, self.aggregator.counters]
        self._last_forget = 0
        # Built by start(), in this order; stopped in reverse.
        self._producer: AIOKafkaProducer | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stops: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self.state: StateStore
        self.deliverer: Deliverer
        self.control: ControlIntake
        self.delivery: DeliveryLoop
        self.intake: EventIntake
        self.watchdog: KafkaWatchdog
        self.monitor: AccountMonitor | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore the state, read the settings, then consume, deliver and watch."""
        s = self.settings
        kafka = KafkaConnection.from_settings(s)
        topic = state_topic(s)
        await ensure_topics(
            s,
            {topic: TopicSpec(topic, 1, s.kafka.replication_factor, {"cleanup.policy": "compact"})},
        )
        self._producer = AIOKafkaProducer(**kafka.aiokafka(linger_ms=5, acks="all"))
        await self._producer.start()
        self.state = StateStore(self._producer, kafka, topic)
        await self.state.restore()
        self.aggregator.restore(self.state.items())
        self._session = aiohttp.ClientSession()
        factory = ChannelFactory(self.cfg, self.secrets, self._session, console=self.console)
        self.deliverer = Deliverer(
            self.cfg, factory, self.state, self.secrets, self._publish_record
        )
        dead_letters = DeadLetters(self._producer, self.topics["dead"])
        gate = CommitGate()
        self.control = ControlIntake(
            kafka=kafka,
            settings_topic=self.topics["settings"],
            acks_topic=self.topics["acks"],
            apply_settings=self.accounts.apply,
            remove_settings=self.accounts.remove,
            acknowledge=self.aggregator.acknowledge,
            forget_ack=self.aggregator.forget_ack,
            dead_letters=dead_letters,
        )
        self.delivery = DeliveryLoop(
            gate=gate,
            take_due=self._take_due,
            flush=self._make_durable,
            deliver=self._deliver,
            delivered=self.aggregator.delivered,
            release=self.aggregator.release,
            interval_s=self.cfg.tick_interval_s,
            max_concurrent=self.cfg.max_concurrent_sends,
        )
        self.intake = EventIntake(
            kafka=kafka,
            group_id=self.app_id,
            events_topic=self.topics["events"],
            positions_topic=self.topics["positions"],
            max_records=self.cfg.batch_max_records,
            gate=gate,
            admit=self.aggregator.admit,
            account_settings=self.accounts.get,
            make_durable=self._make_durable,
            dead_letters=dead_letters,
            on_committed=self.delivery.kick,
        )
        self.watchdog = KafkaWatchdog(
            probe=functools.partial(kafka_reachable, self._producer),
            accounts=self.accounts.items,
            deliver=self.deliverer.deliver,
            down_alert_s=self.cfg.kafka_down_alert_s,
        )
        self._counted += [self.control.counters, self.intake.counters, self.watchdog.counters]
        # Settings first: they are in force before the first event is routed.
        await self._start("control", self.control.start, self.control.stop)
        await self._start("delivery", self.delivery.start, self.delivery.stop)
        await self._start("intake", self.intake.start, self.intake.stop)
        await self._start("watchdog", self.watchdog.start, self.watchdog.stop)
        if self.with_monitor:
            venue = create_accounts(s, SecretStore(s.resolved_secrets_file))
            self.monitor = AccountMonitor(s, venue, self.accounts.items, self.publish_event)
            await self._start("monitor", self.monitor.start, self.monitor.stop)
        if self.web_port:
            web = StatusServer(
                host=self.cfg.web_host,
                port=self.web_port,
                stats=self.stats,
                ready=self.ready.is_set,
            )
            await self._start("web", web.start, web.stop)
        self.ready.set()
        log.info(
            "notify.started",
            app_id=self.app_id,
            pending=len(self.aggregator.pendings),
            web=self.web_port,
        )

    async def _start(
        self, name: str, start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
    ) -> None:
        # Registered first: a part that fails half-way through its start is stopped too.
        self._stops.append((name, stop))
        await start()

    async def stop(self) -> None:
        """Stop the parts in reverse order (input first: sends under way may finish), then
        flush the state and close the connections."""
        while self._stops:
            name, stop = self._stops.pop()
            try:
                await stop()
            except Exception:
                log.exception("notify.stop_failed", part=name)
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._make_durable()
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- between the parts -----------------------------------------------------------------

    async def _make_durable(self) -> None:
        """Persist what the aggregator changed, and everything else written to the state."""
        for key, value in self.aggregator.changes():
            self.state.put(key, value)
        await self.state.flush()

    def _take_due(self) -> list[Pending]:
        now = now_ms()
        if now - self._last_forget >= FORGET_EVERY_MS:
            self._last_forget = now
            cutoff = now - int(self.cfg.dedupe_retention_s * 1000)
            self._own_counters["forgotten"] += self.state.forget_finished(cutoff)
        return self.aggregator.take_due()

    async def _deliver(self, pending: Pending) -> bool:
        # The account's settings as they are now, not as they were when the notice came.
        return await self.deliverer.deliver(pending, self.accounts.settings_for(pending.account_id))

    async def _publish_record(self, record: NotificationRecord) -> None:
        assert self._producer is not None
        try:
            await self._producer.send(
                self.topics["records"], key=record.account_id.encode(), value=record.to_bytes()
            )
        except KafkaError as exc:  # Kafka down: the message itself still goes out
            self._own_counters["records_lost"] += 1
            log.warning("notify.record_not_published", error=type(exc).__name__)

    async def publish_event(self, event: OrderEvent) -> None:
        """Put an account/system event on ``oms.order-events`` (margin calls, system errors)."""
        assert self._producer is not None
        await self._producer.send_and_wait(
            self.topics["events"], key=event.order_id.encode(), value=event.to_bytes()
        )

    # -- what it has done ------------------------------------------------------------------

    @property
    def counters(self) -> Counter[str]:
        """Every part's counters together (a snapshot)."""
        merged: Counter[str] = Counter()
        for counters in self._counted:
            merged.update(counters)
        return merged

    @property
    def pendings(self) -> dict[str, Pending]:
        """Pending notifications by id (the aggregator's own)."""
        return self.aggregator.pendings

    @property
    def inflight(self) -> set[str]:
        """Ids of the notifications being delivered now."""
        return self.aggregator.inflight

    def stats(self) -> dict[str, Any]:
        """What ``/stats`` and ``/metrics`` show."""
        return {
            "counters": dict(self.counters),
            "delivery": self.deliverer.stats(),
            "pending": len(self.aggregator.pendings),
            "inflight": len(self.aggregator.inflight),
            "active_alerts": len(self.aggregator.alerts),
            "accounts": sorted(self.accounts),
            "console_sent": self.console.sent,
            "monitor": self.monitor.stats() if self.monitor is not None else None,
        }
