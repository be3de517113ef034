"""Delivering notifications.

:class:`DeliveryLoop` takes what is due from the aggregator every tick and runs the sends,
a bounded number at once. :class:`Deliverer` delivers one pending notification: channels in
fallback order (or all at once for an emergency), retries with tenacity and the system's one
backoff policy, one idempotency key per (notification, channel), and a NotificationRecord for
every attempt.

Idempotency: ``d:<nid>|<channel>`` in the state store says ``sent`` once a channel took the
message, so a restarted notifier skips it. For channels that are not idempotent at the
provider (SMS) the marker says ``sending`` *before* the request: if the notifier dies
mid-request the outcome is unknown, and it is recorded as ``outcome_unknown`` rather than
texting the recipient a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from oms.backoff import Backoff
from oms.component import Component
from oms.notify.channels import ChannelFactory, DeliveryError, Message
from oms.notify.intake import CommitGate
from oms.notify.model import Pending
from oms.notify.secrets import NotifySecrets
from oms.notify.state import StateStore
from oms.notify.templates import TemplateError, render
from oms.schemas import NotificationRecord, NotificationStatus, ReasonCode, now_ms
from oms.schemas.notify_settings import ChannelConfig, NotificationSettings, Severity
from oms.settings import NotifySettings

log = structlog.get_logger(__name__)

PRIORITY = {Severity.CRITICAL: "high", Severity.WARNING: "normal", Severity.INFO: "low"}

Publish = Callable[[NotificationRecord], Awaitable[None]]


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, DeliveryError) and exc.retryable


class Deliverer:
    """Sends pending notifications; counts what happened."""

    def __init__(
        self,
        config: NotifySettings,
        factory: ChannelFactory,
        state: StateStore,
        secrets: NotifySecrets,
        publish: Publish,
    ) -> None:
        self.config = config
        self.factory = factory
        self.state = state
        self.secrets = secrets
        self.publish = publish
        # Full jitter: the notifications a provider outage failed together retry spread out.
        self._backoff = Backoff(config.retry_base_delay_s, config.retry_max_delay_s)
        self.attempts: Counter[str] = Counter()  # sent / failed / deduplicated
        self.by_channel: Counter[str] = Counter()
        self.notifications: Counter[str] = Counter()  # delivered / undelivered

    # -- one pending ----------------------------------------------------------------------

    async def deliver(self, pending: Pending, settings: NotificationSettings) -> bool:
        """Deliver ``pending`` per the account's current settings; True if any channel took
        it. Never raises for a provider or settings problem: those become failed records."""
        configs = self._channels(pending, settings)
        try:
            message = render(pending, settings, pending.nid)
        except TemplateError as exc:
            first = configs[0].name if configs else "-"
            await self._record(
                pending, first, 1, None, DeliveryError(ReasonCode.TEMPLATE_ERROR, str(exc))
            )
            self.notifications["undelivered"] += 1
            return False
        if pending.emergency:
            results = await asyncio.gather(*(self._send(pending, c, message) for c in configs))
            ok = any(results)
        else:
            ok = False
            for cfg in configs:
                if await self._send(pending, cfg, message):
                    ok = True
                    break
        self.notifications["delivered" if ok else "undelivered"] += 1
        return ok

    def _channels(self, pending: Pending, settings: NotificationSettings) -> list[ChannelConfig]:
        if not pending.channels:
            return list(settings.channels)
        by_name = {c.name: c for c in settings.channels}
        # A rule may name a channel removed since: skip it (the settings validator prevents
        # this for new settings; old pendings may still name one).
        return [by_name[n] for n in pending.channels if n in by_name] or list(settings.channels)

    async def _send(self, pending: Pending, cfg: ChannelConfig, message: Message) -> bool:
        key = f"d:{pending.nid}|{cfg.name}"
        marker = self.state.get(key)
        if marker and marker.get("status") == "sent":
            self.attempts["deduplicated"] += 1
            return True
        try:
            channel = self.factory.build(cfg)
        except DeliveryError as exc:
            await self._record(pending, cfg.name, 1, message, exc)
            return False
        if marker and marker.get("status") == "sending" and not channel.idempotent:
            await self._record(
                pending,
                cfg.name,
                int(marker.get("attempt", 1)),
                message,
                DeliveryError(
                    ReasonCode.OUTCOME_UNKNOWN,
                    "the notifier stopped during this send; not resent (the provider has "
                    "no idempotency key)",
                ),
            )
            self.state.put(key, {"status": "unknown", "at": now_ms()})
            return False
        per_channel = Message(
            **{**message.__dict__, "idempotency_key": f"{pending.nid}|{cfg.name}"}
        )
        attempt = 0

        def wait(state: RetryCallState) -> float:
            # A provider that says when to come back (a rate limit) is waited for that long.
            exc = state.outcome.exception() if state.outcome else None
            hint = exc.retry_after_s if isinstance(exc, DeliveryError) else None
            return max(self._backoff(state), hint or 0.0)

        try:
            async for try_ in AsyncRetrying(
                stop=stop_after_attempt(self.config.retry_attempts),
                wait=wait,
                retry=retry_if_exception(_retryable),
                reraise=True,
            ):
                with try_:
                    attempt += 1
                    if not channel.idempotent:
                        self.state.put(
                            key, {"status": "sending", "attempt": attempt, "at": now_ms()}
                        )
                        await self.state.flush()
                    try:
                        receipt = await channel.send(per_channel)
                    except DeliveryError as exc:
                        await self._record(pending, cfg.name, attempt, message, exc)
                        raise
                    except Exception as exc:  # a bug in a channel must not stop the others
                        log.exception("notify.channel_crashed", channel=cfg.name)
                        err = DeliveryError(
                            ReasonCode.INTERNAL_ERROR, f"{type(exc).__name__} in channel"
                        )
                        await self._record(pending, cfg.name, attempt, message, err)
                        raise err from exc
        except DeliveryError:
            if not channel.idempotent:
                self.state.put(key, {"status": "failed", "at": now_ms()})
            return False
        self.state.put(key, {"status": "sent", "at": now_ms(), "receipt": receipt[:100]})
        await self._record(pending, cfg.name, attempt, message, None)
        return True

    async def _record(
        self,
        pending: Pending,
        channel: str,
        attempt: int,
        message: Message | None,
        error: DeliveryError | None,
    ) -> None:
        redact = self.secrets.redact
        status = NotificationStatus.FAILED if error else NotificationStatus.SENT
        self.attempts[status.value] += 1
        self.by_channel[f"{channel}:{status.value}"] += 1
        first: dict[str, Any] = pending.notices[0] if pending.notices else {}
        record = NotificationRecord(
            notification_id=pending.nid,
            account_id=pending.account_id,
            notification_type=pending.type.value if pending.count <= 1 else "digest",
            channel=channel,
            priority=PRIORITY[pending.severity],
            title=redact(message.title) if message else "",
            content=redact(message.text)[:4000] if message else "",
            status=status,
            error_message=redact(error.detail) if error else None,
            order_id=first.get("order_id") if pending.count == 1 else None,
            attempt=attempt,
            sent_at=None if error else now_ms(),
            severity=pending.severity.value,
            reason_code=error.reason.value if error else None,
            event_count=pending.count,
            group_key=pending.group_key,
            alert_id=pending.alert_id,
        )
        if error:
            log.warning(
                "notify.attempt_failed",
                nid=pending.nid,
                channel=channel,
                attempt=attempt,
                reason=error.reason.value,
                detail=redact(error.detail),
            )
        await self.publish(record)

    def stats(self) -> dict[str, Any]:
        done = self.notifications["delivered"] + self.notifications["undelivered"]
        tried = self.attempts["sent"] + self.attempts["failed"]
        return {
            "notifications": dict(self.notifications),
            "attempts": dict(self.attempts),
            "by_channel": dict(self.by_channel),
            "success_rate": round(self.notifications["delivered"] / done, 4) if done else None,
            "attempt_success_rate": round(self.attempts["sent"] / tried, 4) if tried else None,
        }


class DeliveryLoop(Component):
    """Every ``interval_s``, or sooner when kicked: takes the notifications due, makes their
    sealing durable, and delivers them in the background, at most ``max_concurrent`` at once.

    Nothing is taken while the intake holds a batch that is not committed (see
    :class:`~oms.notify.intake.CommitGate`)."""

    def __init__(
        self,
        *,
        gate: CommitGate,
        take_due: Callable[[], list[Pending]],
        flush: Callable[[], Awaitable[object]],
        deliver: Callable[[Pending], Awaitable[bool]],
        delivered: Callable[[Pending], None],
        release: Callable[[str], None],
        interval_s: float,
        max_concurrent: int,
        stop_grace_s: float = 5.0,
    ) -> None:
        super().__init__("notify-tick")
        self._gate = gate
        self._take_due = take_due
        self._flush = flush
        self._deliver = deliver
        self._delivered = delivered
        self._release = release
        self._interval_s = interval_s
        self._stop_grace_s = stop_grace_s
        self._sem = asyncio.Semaphore(max_concurrent)
        self._kick = asyncio.Event()
        self._sends: set[asyncio.Task[None]] = set()

    def kick(self) -> None:
        """Tick now rather than at the next interval (new input, a send finished)."""
        self._kick.set()

    async def on_start(self) -> None:
        self.spawn(self._run(), "tick")

    async def on_stop(self) -> None:
        # Ticking has stopped: let sends under way finish (and record their markers) for up
        # to ``stop_grace_s`` rather than cut them, then cancel the rest.
        if self._sends:
            _, unfinished = await asyncio.wait(set(self._sends), timeout=self._stop_grace_s)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self._interval_s)
            self._kick.clear()
            try:
                await self.tick()
            except Exception:
                log.exception("notify.tick_failed")
                await asyncio.sleep(1.0)

    async def tick(self) -> int:
        """Seal and start delivering what is due; returns how many were started."""
        async with self._gate.lock:
            if not self._gate.committed:  # a failed batch: nothing is sent until it is
                return 0
            due = self._take_due()
            # Sealed on the broker before any channel sees them (and finished ones marked).
            await self._flush()
            for pending in due:
                task = asyncio.create_task(self._send(pending), name=f"notify-{pending.nid}")
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)
            return len(due)

    async def _send(self, pending: Pending) -> None:
        try:
            async with self._sem:
                await self._deliver(pending)
            self._delivered(pending)
            # Its done marker is flushed by the next tick, with the channel markers.
            self.kick()
        except Exception:
            log.exception("notify.deliver_failed", nid=pending.nid)
        finally:
            self._release(pending.nid)
