"""The one alert that cannot travel through Kafka: Kafka itself unreachable.

Every other emergency is an event on ``oms.order-events`` (margin calls and exchange outages
from :mod:`oms.notify.monitor`, ``send_emergency_alert`` from the SDK) and goes through the
aggregator like any notice. When the broker stops answering, :class:`KafkaWatchdog` sends a
``system_error`` straight to the channels of every account subscribed to system errors.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable

import structlog
from aiokafka import AIOKafkaProducer

from oms.component import Component
from oms.notify.aggregator import emergency_pending
from oms.notify.model import Notice, Pending
from oms.schemas import now_ms
from oms.schemas.notify_settings import NotificationSettings, NotificationType

log = structlog.get_logger(__name__)

KAFKA_ALERT_ID = "system_error:kafka"

Probe = Callable[[], Awaitable[bool]]
Accounts = Callable[[], Iterable[tuple[str, NotificationSettings]]]
Deliver = Callable[[Pending, NotificationSettings], Awaitable[bool]]


async def kafka_reachable(producer: AIOKafkaProducer, timeout_s: float = 5.0) -> bool:
    """True if the broker answers a metadata request within ``timeout_s``."""
    try:
        await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout_s)
    except Exception:
        return False
    return True


def system_alerts(
    message: str, accounts: Iterable[tuple[str, NotificationSettings]], now: int
) -> list[tuple[Pending, NotificationSettings]]:
    """A ``system_error`` emergency for every enabled account subscribed to system errors,
    with the settings to deliver it by."""
    out = []
    for account_id, settings in accounts:
        if not settings.enabled or NotificationType.SYSTEM_ERROR not in settings.notification_types:
            continue
        notice = Notice(
            notice_id=f"kafka-down:{now}", account_id=account_id,
            type=NotificationType.SYSTEM_ERROR, timestamp=now, message=message,
            alert_id=KAFKA_ALERT_ID,
        )  # fmt: skip
        out.append((emergency_pending(notice, KAFKA_ALERT_ID, now), settings))
    return out


class KafkaWatchdog(Component):
    """Probes the broker every few seconds; once it has not answered for ``down_alert_s``,
    alerts every subscribed account directly, once per outage."""

    def __init__(
        self,
        *,
        probe: Probe,
        accounts: Accounts,
        deliver: Deliver,
        down_alert_s: float,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        super().__init__("notify-kafka")
        self.probe = probe
        self._accounts = accounts
        self._deliver = deliver
        self._limit = down_alert_s
        self._clock = clock
        self.counters: Counter[str] = Counter()

    async def on_start(self) -> None:
        self.spawn(self._watch(), "watch")

    async def _watch(self) -> None:
        down_since: float | None = None
        alerted = False
        while True:
            await asyncio.sleep(min(5.0, self._limit / 3))
            if await self.probe():
                if alerted:
                    log.info("notify.kafka_back")
                down_since, alerted = None, False
                continue
            down_since = down_since or time.monotonic()
            if not alerted and time.monotonic() - down_since >= self._limit:
                alerted = True
                self.counters["kafka_down_alerts"] += 1
                await self.alert(
                    f"Kafka unreachable for over {self._limit:g}s: order events are not flowing"
                )

    async def alert(self, message: str) -> None:
        """Send ``message`` as a system error to every subscribed account's channels at once."""
        sends = [
            self._deliver(pending, settings)
            for pending, settings in system_alerts(message, self._accounts(), self._clock())
        ]
        await asyncio.gather(*sends, return_exceptions=True)
