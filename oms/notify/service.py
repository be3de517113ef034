"""The notifier process (``oms notify run``).

Reads ``oms.order-events`` and ``oms.positions`` in batches (one consumer group,
``<worker.app_id>-notify``), turns events into notices, routes them with each account's
settings (read from the compacted ``oms.notification-settings``, live), groups them into
pending notifications and delivers those when due. Every attempt is a
:class:`~oms.schemas.NotificationRecord` on ``oms.notifications``.

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
import dataclasses
import hashlib
import time
from collections import Counter, OrderedDict
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from oms.kafka.admin import TopicSpec, ensure_topics
from oms.notify.channels import ChannelFactory, ConsoleChannel
from oms.notify.delivery import Deliverer
from oms.notify.model import Notice, Pending
from oms.notify.prometheus import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from oms.notify.prometheus import render as render_prometheus
from oms.notify.rules import Route, notice_from_event, notice_from_position, quiet_until, route
from oms.notify.secrets import NotifySecrets
from oms.notify.state import StateStore
from oms.schemas import (
    DeadLetter,
    NotificationRecord,
    OrderEvent,
    PositionRecord,
    ReasonCode,
    Topic,
    now_ms,
)
from oms.schemas.decode import Undecodable, decode
from oms.schemas.notify_settings import (
    NotificationAck,
    NotificationSettings,
    NotificationType,
    Severity,
)
from oms.settings import Settings

log = structlog.get_logger(__name__)

SEEN_CAPACITY = 500_000


def notifier_app_id(settings: Settings) -> str:
    return f"{settings.worker.app_id}-notify"


def state_topic(settings: Settings) -> str:
    return f"{settings.kafka.topic_prefix}{notifier_app_id(settings)}-state"


def _nid(account_id: str, group_key: str, first_notice: str, repeat: int = 0) -> str:
    text = f"{account_id}\x00{group_key}\x00{first_notice}\x00{repeat}"
    return "n-" + hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


class Notifier:
    """Everything one notifier process runs."""

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
        self.accounts: dict[str, NotificationSettings] = {}
        self.acks: dict[str, int] = {}
        self.pendings: dict[str, Pending] = {}
        self.open_groups: dict[tuple[str, str], str] = {}
        self.last_sent: dict[tuple[str, str], int] = {}
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.inflight: set[str] = set()
        self.counters: Counter[str] = Counter()
        self.ready = asyncio.Event()
        self._kick = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._deliveries: set[asyncio.Task[None]] = set()
        self._changed: set[str] = set()
        self._batch_lock = asyncio.Lock()
        self._uncommitted = False
        self._last_gc = 0
        # Dead letters of the messages read since the last flush (sent before the commit).
        self._dead: list[DeadLetter] = []
        # Active (unacknowledged) emergency alerts, mirrored in the state as a:<alert_id>.
        self.alerts: dict[str, dict[str, Any]] = {}
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._control: AIOKafkaConsumer | None = None
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._sem = asyncio.Semaphore(self.cfg.max_concurrent_sends)
        self.monitor: Any = None
        self.state: StateStore
        self.deliverer: Deliverer

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        bootstrap = s.kafka.bootstrap
        topic = state_topic(s)
        await ensure_topics(
            s,
            {topic: TopicSpec(topic, 1, s.kafka.replication_factor, {"cleanup.policy": "compact"})},
        )
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
        await self._producer.start()
        self.state = StateStore(self._producer, bootstrap, topic)
        await self.state.restore()
        self._load_state()
        self._session = aiohttp.ClientSession()
        factory = ChannelFactory(self.cfg, self.secrets, self._session, console=self.console)
        self.deliverer = Deliverer(self.cfg, factory, self.state, self.secrets, self._publish)
        await self._start_control()
        self._consumer = AIOKafkaConsumer(
            self.topics["events"],
            self.topics["positions"],
            bootstrap_servers=bootstrap,
            group_id=self.app_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.cfg.batch_max_records,
            fetch_max_bytes=16 * 1024 * 1024,
        )
        await self._consumer.start()
        self._tasks = [
            asyncio.create_task(self._consume_loop(), name="notify-consume"),
            asyncio.create_task(self._tick_loop(), name="notify-tick"),
            asyncio.create_task(self._control_loop(), name="notify-control"),
        ]
        self._tasks.append(asyncio.create_task(self._kafka_watchdog(), name="notify-kafka"))
        if self.with_monitor:
            from oms.notify.monitor import AccountMonitor

            self.monitor = AccountMonitor(self)
            self._tasks.append(asyncio.create_task(self.monitor.run(), name="notify-monitor"))
        if self.web_port:
            await self._start_web()
        self.ready.set()
        log.info(
            "notify.started", app_id=self.app_id, pending=len(self.pendings), web=self.web_port
        )

    async def stop(self, grace_s: float = 5.0) -> None:
        for task in self._tasks:
            task.cancel()
        if self._deliveries:
            # Let sends under way finish (and record their markers) rather than cut them.
            _, unfinished = await asyncio.wait(set(self._deliveries), timeout=grace_s)
            for task in unfinished:
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.monitor is not None:
            await self.monitor.close()
        if self._runner is not None:
            await self._runner.cleanup()
        with contextlib.suppress(Exception):
            await self.state.flush()
        for client in (self._consumer, self._control):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
        if self._session is not None:
            await self._session.close()

    def _load_state(self) -> None:
        for key, value in self.state.items("a:"):
            self.alerts[key[2:]] = value
        for _key, value in self.state.items("p:"):
            if value.get("done"):
                continue
            pending = Pending.from_dict(value)
            self.pendings[pending.nid] = pending
            if not pending.sealed:
                self.open_groups[(pending.account_id, pending.group_key)] = pending.nid

    # -- settings and acknowledgements (compacted topics, read from the start) ------------

    async def _start_control(self) -> None:
        self._control = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka.bootstrap,
            enable_auto_commit=False,
            group_id=None,
        )
        await self._control.start()
        tps: list[TopicPartition] = []
        for name in (self.topics["settings"], self.topics["acks"]):
            parts = self._control.partitions_for_topic(name)
            for _ in range(50):
                if parts:
                    break
                await self._control._client.force_metadata_update()
                await asyncio.sleep(0.1)
                parts = self._control.partitions_for_topic(name)
            tps.extend(TopicPartition(name, p) for p in sorted(parts or ()))
        self._control.assign(tps)
        await self._control.seek_to_beginning(*tps)
        end = await self._control.end_offsets(tps)
        # Settings known before the first event is routed.
        while not await self._control_at(end):
            batch = await self._control.getmany(timeout_ms=500, max_records=5000)
            for msgs in batch.values():
                for msg in msgs:
                    self._apply_control(msg)
        await self._flush_dead_letters()

    async def _control_at(self, end: dict[TopicPartition, int]) -> bool:
        assert self._control is not None
        for tp, offset in end.items():
            if await self._control.position(tp) < offset:
                return False
        return True

    async def _control_loop(self) -> None:
        assert self._control is not None
        while True:
            try:
                batch = await self._control.getmany(timeout_ms=500, max_records=1000)
                for msgs in batch.values():
                    for msg in msgs:
                        self._apply_control(msg)
                if batch:
                    await self._flush_dead_letters()
            except Exception:
                log.exception("notify.control_failed")
                await asyncio.sleep(1.0)

    def _apply_control(self, msg: Any) -> None:
        """Apply one record of the compacted settings or acks topic. Both are read from the
        beginning at every start, so what is dead-lettered here is dead-lettered again by the
        next start while the bad record is the latest of its key."""
        key = msg.key.decode(errors="replace") if msg.key else ""
        if msg.topic == self.topics["settings"]:
            if msg.value is None and key:
                # A deletion (the topic is compacted, keyed by account): the account is back
                # to the default settings, as it will be after compaction and a restart.
                self.accounts.pop(key, None)
                self.counters["settings_deleted"] += 1
                return
            new = decode(NotificationSettings, msg.value)
            if isinstance(new, Undecodable):
                # The previous settings stay in force; the bad record is kept as evidence.
                self.counters["settings_invalid"] += 1
                if new.reason_code is ReasonCode.SCHEMA_INVALID:
                    new = Undecodable(ReasonCode.INVALID_SETTINGS, new.error)
                self._dead_letter(msg, new)
                return
            if key and new.account_id != key:
                self.counters["settings_invalid"] += 1
                self._dead_letter(
                    msg, Undecodable(ReasonCode.INVALID_SETTINGS, "key is not the account_id")
                )
                return
            self.accounts[new.account_id] = new
            self.counters["settings_applied"] += 1
            log.info("notify.settings_applied", account_id=new.account_id)
        elif msg.topic == self.topics["acks"]:
            if msg.value is None and key:
                # Pruning (compacted, keyed by alert id): the acknowledgement is forgotten, as
                # it will be after compaction and a restart.
                self.acks.pop(key, None)
                self.counters["acks_pruned"] += 1
                return
            ack = decode(NotificationAck, msg.value)
            if isinstance(ack, Undecodable):
                self.counters["acks_invalid"] += 1
                self._dead_letter(msg, ack)
                return
            self.acks[ack.alert_id] = ack.acked_at
            self.counters["acks_applied"] += 1
            if self.alerts.pop(ack.alert_id, None) is not None:
                self.state.put(f"a:{ack.alert_id}", None)
                self.counters["alerts_acked"] += 1
                log.info("notify.alert_acked", alert_id=ack.alert_id, by=ack.by)

    def settings_for(self, account_id: str) -> NotificationSettings:
        """The account's settings, or the default (console only)."""
        found = self.accounts.get(account_id)
        if found is None:
            found = NotificationSettings(account_id=account_id)
            self.accounts[account_id] = found
        return found

    # -- ingest ----------------------------------------------------------------------------

    def _dead_letter(self, msg: Any, failure: Undecodable) -> None:
        """Queue the dead letter of ``msg`` (sent by the next :meth:`_flush_dead_letters`)."""
        self._dead.append(failure.letter_for(msg, consumer="notifier"))

    async def _flush_dead_letters(self) -> None:
        """Send the queued dead letters and wait until the broker has them: the offsets of
        the messages they are about are committed next."""
        dead, self._dead = self._dead, []
        assert self._producer is not None
        try:
            sent = [
                await self._producer.send(
                    self.topics["dead"],
                    key=letter.key.encode() if letter.key else None,
                    value=letter.to_bytes(),
                )
                for letter in dead
            ]
            await asyncio.gather(*sent)
        except Exception:
            # Broker trouble: keep them for the next flush (the batch is retried too).
            self._dead = dead + self._dead
            raise

    async def _consume_loop(self) -> None:
        assert self._consumer is not None
        events_topic = self.topics["events"]
        while True:
            try:
                batch = await self._consumer.getmany(
                    timeout_ms=200, max_records=self.cfg.batch_max_records
                )
            except KafkaError as exc:
                self.counters["kafka_errors"] += 1
                log.warning("notify.kafka_error", error=type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            if not batch:
                continue
            try:
                await self._apply_batch(batch, events_topic)
            except Exception:
                # State not durable or offsets not committed: nothing is lost (the changes stay
                # in memory and dirty, the offsets uncommitted); try again with the next batch.
                self.counters["batch_errors"] += 1
                log.exception("notify.batch_failed")
                await asyncio.sleep(1.0)

    async def _apply_batch(self, batch: dict[Any, list[Any]], events_topic: str) -> None:
        assert self._consumer is not None
        # Held until committed: no pending holding an uncommitted event is sealed and sent,
        # so a replayed event never belongs to a notification already delivered.
        async with self._batch_lock:
            self._uncommitted = True
            now = now_ms()
            for tp, msgs in batch.items():
                for msg in msgs:
                    self.counters["consumed"] += 1
                    if tp.topic == events_topic:
                        self._on_event(msg, now)
                    else:
                        self._on_position(msg, now)
            # Durable before committed: a crash after this replays nothing already pending.
            self._persist_changed()
            await self.state.flush()
            await self._flush_dead_letters()
            await self._consumer.commit()
            self._uncommitted = False
        self.counters["committed"] += sum(len(m) for m in batch.values())
        self._kick.set()

    def _on_event(self, msg: Any, now: int) -> None:
        # Neither input is compacted: a tombstone deletes nothing and is dead-lettered.
        event = decode(OrderEvent, msg.value)
        if isinstance(event, Undecodable):
            self.counters["malformed"] += 1
            self._dead_letter(msg, event)
            return
        self.counters["events"] += 1
        notice = notice_from_event(event)
        if notice is not None:
            self.admit(notice, now, (f"{msg.topic}:{msg.partition}", msg.offset))

    def _on_position(self, msg: Any, now: int) -> None:
        record = decode(PositionRecord, msg.value)
        if isinstance(record, Undecodable):
            self.counters["malformed"] += 1
            self._dead_letter(msg, record)
            return
        self.counters["positions"] += 1
        settings = self.accounts.get(record.account_id)
        if settings is None:
            return
        notice = notice_from_position(record, settings)
        if notice is not None:
            self.admit(notice, now, (f"{msg.topic}:{msg.partition}", msg.offset))

    def _mark_seen(self, notice_id: str) -> bool:
        """Remember a notice id; False if it was seen before."""
        if notice_id in self.seen:
            return False
        self.seen[notice_id] = None
        if len(self.seen) > SEEN_CAPACITY:
            self.seen.popitem(last=False)
        return True

    def admit(self, notice: Notice, now: int, source: tuple[str, int] | None = None) -> None:
        """Route a notice into pending notifications (state changes, not yet flushed).

        ``source`` ("topic:partition", offset) recognises a replay after a restart; the
        event id recognises a re-announced event (same id, another offset)."""
        if not self._mark_seen(notice.notice_id):
            self.counters["duplicates"] += 1
            return
        self.counters["notices"] += 1
        settings = self.settings_for(notice.account_id)
        routes = route(settings, notice, now)
        if not routes:
            self.counters["suppressed"] += 1
            return
        for r in routes:
            if r.emergency:
                self._raise_alert(notice, settings, r, now)
            else:
                self._group(notice, settings, r, now, source)

    def _group(
        self,
        notice: Notice,
        settings: NotificationSettings,
        r: Route,
        now: int,
        source: tuple[str, int] | None,
    ) -> None:
        quiet = quiet_until(settings, now)
        if quiet is not None:
            # Everything a route holds during quiet hours becomes one digest at their end.
            r = dataclasses.replace(r, group_key=f"quiet|{r.rule}")
        group = (notice.account_id, r.group_key)
        nid = self.open_groups.get(group)
        pending = self.pendings.get(nid) if nid else None
        if pending is not None and source is not None:
            if pending.applied.get(source[0], -1) >= source[1]:
                self.counters["replayed"] += 1
                return
        if pending is None or pending.sealed:
            due = now + int(r.group_wait_s * 1000)
            last = self.last_sent.get(group)
            if last is not None and r.group_interval_s:
                due = max(due, last + int(r.group_interval_s * 1000))
            if quiet is not None:
                due = max(due, quiet)
                self.counters["held_quiet"] += 1
            pending = Pending(
                nid=_nid(notice.account_id, r.group_key, notice.notice_id),
                account_id=notice.account_id,
                type=notice.type,
                severity=r.severity,
                emergency=False,
                rule=r.rule,
                group_key=r.group_key,
                channels=list(r.channels),
                first_at=now,
                due_at=due,
            )
            self.pendings[pending.nid] = pending
            self.open_groups[group] = pending.nid
        pending.add(notice, settings.max_digest_items, source)
        if pending.count >= self.cfg.max_group_events:
            pending.due_at = min(pending.due_at, now)
        # Serialised once per batch (see _persist_changed), not once per event.
        self._changed.add(pending.nid)

    def _persist_changed(self) -> None:
        for nid in self._changed:
            pending = self.pendings.get(nid)
            if pending is not None:
                self.state.put(f"p:{nid}", pending.to_dict())
        self._changed.clear()

    def _raise_alert(
        self, notice: Notice, settings: NotificationSettings, r: Route, now: int
    ) -> None:
        alert_id = notice.alert_id or notice.notice_id
        if alert_id in self.alerts:
            self.counters["alert_already_active"] += 1
            return
        acked_at = self.acks.get(alert_id)
        if acked_at is not None and notice.timestamp <= acked_at:
            return
        alert = {
            "alert_id": alert_id,
            "account_id": notice.account_id,
            "notice": notice.to_dict(),
            "repeats": 0,
            "next_at": now + int(settings.repeat_interval_s * 1000),
        }
        self.alerts[alert_id] = alert
        self.state.put(f"a:{alert_id}", alert)
        self.counters["alerts_raised"] += 1
        self._emergency_pending(notice, alert_id, 0, now)

    def _emergency_pending(self, notice: Notice, alert_id: str, repeat: int, now: int) -> None:
        pending = Pending(
            nid=_nid(notice.account_id, f"alert={alert_id}", notice.notice_id, repeat),
            account_id=notice.account_id,
            type=notice.type,
            severity=Severity.CRITICAL,
            emergency=True,
            rule="emergency",
            group_key=f"alert={alert_id}",
            channels=[],
            first_at=now,
            due_at=now,
            alert_id=alert_id,
            repeat=repeat,
            sealed=True,
        )
        pending.add(notice, 1)
        self.pendings[pending.nid] = pending
        self.state.put(f"p:{pending.nid}", pending.to_dict())

    # -- delivery --------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.cfg.tick_interval_s)
            self._kick.clear()
            try:
                await self.tick()
            except Exception:
                log.exception("notify.tick_failed")
                await asyncio.sleep(1.0)

    async def tick(self) -> int:
        """Repeat due alerts, seal and start delivering due pendings; returns how many."""
        async with self._batch_lock:
            return await self._tick()

    def _forget_old(self, now: int) -> int:
        """Tombstone delivery markers and finished notifications past the dedupe retention
        (compaction then removes them), so the state stays proportional to recent traffic."""
        if now - self._last_gc < 60_000:
            return 0
        self._last_gc = now
        cutoff = now - int(self.cfg.dedupe_retention_s * 1000)
        old = [
            k
            for k, v in self.state.data.items()
            if k[:2] in ("d:", "p:")
            and (k[:2] == "d:" or v.get("done"))
            and v.get("at", now) < cutoff
        ]
        for key in old:
            self.state.put(key, None)
        return len(old)

    async def _tick(self) -> int:
        if self._uncommitted:  # a failed batch: nothing is sent until it is committed
            return 0
        now = now_ms()
        self.counters["forgotten"] += self._forget_old(now)
        self._repeat_alerts(now)
        self._persist_changed()
        due = [p for p in self.pendings.values() if p.due_at <= now and p.nid not in self.inflight]
        if not due:
            await self.state.flush()
            return 0
        for pending in due:
            if not pending.sealed:
                pending.sealed = True
                self.open_groups.pop((pending.account_id, pending.group_key), None)
                self.state.put(f"p:{pending.nid}", pending.to_dict())
            self.inflight.add(pending.nid)
        # Sealed on the broker before any channel sees them.
        await self.state.flush()
        for pending in due:
            task = asyncio.create_task(self._deliver(pending), name=f"notify-{pending.nid}")
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
        return len(due)

    async def _deliver(self, pending: Pending) -> None:
        try:
            async with self._sem:
                settings = self.settings_for(pending.account_id)
                await self.deliverer.deliver(pending, settings)
            self.last_sent[(pending.account_id, pending.group_key)] = now_ms()
            self.pendings.pop(pending.nid, None)
            # Flushed by the next tick with the channel markers (within tick_interval_s).
            self.state.put(f"p:{pending.nid}", {"done": True, "at": now_ms()})
            self._kick.set()
        except Exception:
            log.exception("notify.deliver_failed", nid=pending.nid)
        finally:
            self.inflight.discard(pending.nid)

    def _repeat_alerts(self, now: int) -> None:
        for alert_id, current in list(self.alerts.items()):
            if current["next_at"] > now:
                continue
            settings = self.settings_for(current["account_id"])
            repeats = int(current["repeats"]) + 1
            alert = {
                **current,
                "repeats": repeats,
                "next_at": now + int(settings.repeat_interval_s * 1000),
            }
            self.alerts[alert_id] = alert
            self.state.put(f"a:{alert_id}", alert)
            self.counters["alert_repeats"] += 1
            self._emergency_pending(
                Notice.from_dict(alert["notice"]), alert["alert_id"], repeats, now
            )

    async def _publish(self, record: NotificationRecord) -> None:
        assert self._producer is not None
        try:
            await self._producer.send(
                self.topics["records"], key=record.account_id.encode(), value=record.to_bytes()
            )
        except KafkaError as exc:  # Kafka down: the message itself still goes out
            self.counters["records_lost"] += 1
            log.warning("notify.record_not_published", error=type(exc).__name__)

    # -- Kafka unreachable: the one alert that cannot travel through Kafka ------------------

    async def kafka_probe(self) -> bool:
        """True if the broker answers a metadata request."""
        assert self._producer is not None
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), 5.0)
        except Exception:
            return False
        return True

    async def _kafka_watchdog(self) -> None:
        limit = self.cfg.kafka_down_alert_s
        down_since: float | None = None
        alerted = False
        while True:
            await asyncio.sleep(min(5.0, limit / 3))
            if await self.kafka_probe():
                if alerted:
                    log.info("notify.kafka_back")
                down_since, alerted = None, False
                continue
            down_since = down_since or time.monotonic()
            if not alerted and time.monotonic() - down_since >= limit:
                alerted = True
                self.counters["kafka_down_alerts"] += 1
                await self._alert_directly(
                    f"Kafka unreachable for over {limit:g}s: order events are not flowing"
                )

    async def _alert_directly(self, message: str) -> None:
        """A system_error to every account's channels at once, bypassing Kafka entirely."""
        now = now_ms()
        sends = []
        for account_id, settings in list(self.accounts.items()):
            if not settings.enabled:
                continue
            if NotificationType.SYSTEM_ERROR not in settings.notification_types:
                continue
            notice = Notice(
                notice_id=f"kafka-down:{now}", account_id=account_id,
                type=NotificationType.SYSTEM_ERROR, timestamp=now, message=message,
                alert_id="system_error:kafka",
            )  # fmt: skip
            pending = Pending(
                nid=_nid(account_id, "alert=system_error:kafka", notice.notice_id),
                account_id=account_id, type=notice.type, severity=Severity.CRITICAL,
                emergency=True, rule="emergency", group_key="alert=system_error:kafka",
                channels=[], first_at=now, due_at=now, alert_id="system_error:kafka", sealed=True,
            )  # fmt: skip
            pending.add(notice, 1)
            sends.append(self.deliverer.deliver(pending, settings))
        await asyncio.gather(*sends, return_exceptions=True)

    # -- direct use (SDK-less emergencies from inside the process, tests) -------------------

    async def publish_event(self, event: OrderEvent) -> None:
        """Put an account/system event on ``oms.order-events`` (margin calls, system errors)."""
        assert self._producer is not None
        await self._producer.send_and_wait(
            self.topics["events"], key=event.order_id.encode(), value=event.to_bytes()
        )

    # -- web -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            "counters": dict(self.counters),
            "delivery": self.deliverer.stats(),
            "pending": len(self.pendings),
            "inflight": len(self.inflight),
            "active_alerts": len(self.alerts),
            "accounts": sorted(self.accounts),
            "console_sent": self.console.sent,
            "monitor": self.monitor.stats() if self.monitor is not None else None,
        }

    async def _start_web(self) -> None:
        app = web.Application()

        async def health(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok", "ready": self.ready.is_set()})

        async def stats(request: web.Request) -> web.Response:
            return web.Response(body=orjson.dumps(self.stats()), content_type="application/json")

        async def metrics(request: web.Request) -> web.Response:
            body = render_prometheus(self.stats())
            return web.Response(body=body, headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})

        app.router.add_get("/health", health)
        app.router.add_get("/stats", stats)
        app.router.add_get("/metrics", metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.web_host, self.web_port)
        await site.start()


async def run_notifier(settings: Settings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set (``oms notify run``)."""
    notifier = Notifier(settings)
    await notifier.start()
    try:
        await stop.wait()
    finally:
        await notifier.stop()
