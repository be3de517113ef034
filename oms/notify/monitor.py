"""Account monitor: margin calls from ``private/get_account_summary`` and the exchange
connection, published as account/system events on ``oms.order-events``.

For every account whose settings set ``margin_call_ratio`` and which has exchange
credentials, the monitor polls the account summary of each configured currency. The ratio is
``maintenance_margin / margin_balance`` (Deribit's maintenance-margin ratio; a non-positive
margin balance counts as infinite). Crossing the ratio publishes one ``margin_call`` event;
the alert re-arms when the ratio falls back below it. An exchange that cannot be reached for
``exchange_down_alert_s`` publishes one ``system_error`` event per account.

Publishing events (rather than notifying directly) keeps one path: the events are in
ClickHouse with everything else, and the notifier's dedupe and repeat apply to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog

from oms.exchange.deribit.client import DeribitClient
from oms.schemas import OrderEvent, OrderEventType, now_ms
from oms.schemas.notify_settings import NotificationSettings
from oms.secrets import SecretStore
from oms.settings import Settings

log = structlog.get_logger(__name__)

Accounts = Callable[[], Iterable[tuple[str, NotificationSettings]]]
Publish = Callable[[OrderEvent], Awaitable[None]]


def margin_ratio(summary: dict[str, Any]) -> float:
    """Maintenance margin over margin balance (inf when the balance is gone)."""
    mm = float(summary.get("maintenance_margin") or 0.0)
    balance = float(summary.get("margin_balance") or summary.get("equity") or 0.0)
    if balance <= 0:
        return float("inf") if mm > 0 else 0.0
    return mm / balance


class AccountMonitor:
    """Polls account summaries of accounts that asked for margin alerts.

    ``accounts`` gives the accounts' current notification settings; ``publish`` puts an
    event on ``oms.order-events``."""

    def __init__(self, settings: Settings, accounts: Accounts, publish: Publish) -> None:
        self.settings = settings
        self.cfg = settings.notify
        self._accounts = accounts
        self._publish_event = publish
        self.secrets = SecretStore(self.settings.resolved_secrets_file)
        self.clients: dict[str, DeribitClient] = {}
        self.in_breach: set[tuple[str, str]] = set()
        self.down_since: dict[str, float] = {}
        self.down_alerted: set[str] = set()
        self.counters: Counter[str] = Counter()
        self.last_ratio: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def stats(self) -> dict[str, Any]:
        return {
            "counters": dict(self.counters),
            "ratios": {k: round(v, 6) for k, v in self.last_ratio.items()},
            "in_breach": sorted("|".join(k) for k in self.in_breach),
        }

    async def start(self) -> None:
        """Poll every ``margin_check_interval_s`` in the background."""
        self._task = asyncio.create_task(self._run(), name="notify-monitor")

    async def stop(self) -> None:
        """Stop polling and close the exchange connections."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for client in self.clients.values():
            with contextlib.suppress(Exception):
                await client.close()
        self.clients.clear()

    async def _run(self) -> None:
        while True:
            try:
                await self.check_all()
            except Exception:
                log.exception("notify.monitor_failed")
            await asyncio.sleep(self.cfg.margin_check_interval_s)

    async def check_all(self) -> None:
        """One round over every monitored account."""
        for account_id, settings in list(self._accounts()):
            if settings.margin_call_ratio is None or not settings.enabled:
                continue
            await self.check(account_id, settings.margin_call_ratio)

    async def _client(self, account_id: str) -> DeribitClient | None:
        client = self.clients.get(account_id)
        if client is not None:
            return client
        creds = self.secrets.credentials(account_id)
        if creds is None:
            self.counters["no_credentials"] += 1
            return None
        client = DeribitClient(
            self.settings.exchange.url,
            creds,
            settings=self.settings.exchange,
            name=f"notify-monitor-{account_id}",
        )
        await client.connect()
        self.clients[account_id] = client
        return client

    async def check(self, account_id: str, ratio_limit: float) -> None:
        """Poll one account; publish a margin_call or system_error event if due."""
        try:
            client = await self._client(account_id)
            if client is None:
                return
            summaries = [await client.get_account_summary(c) for c in self.cfg.margin_currencies]
        except Exception as exc:
            self.counters["exchange_errors"] += 1
            await self._exchange_down(account_id, type(exc).__name__)
            return
        self.down_since.pop(account_id, None)
        self.down_alerted.discard(account_id)
        for currency, summary in zip(self.cfg.margin_currencies, summaries, strict=True):
            ratio = margin_ratio(summary)
            self.last_ratio[f"{account_id}|{currency}"] = ratio
            key = (account_id, currency)
            if ratio >= ratio_limit:
                if key in self.in_breach:
                    continue
                self.in_breach.add(key)
                self.counters["margin_calls"] += 1
                await self._publish(
                    account_id,
                    OrderEventType.MARGIN_CALL,
                    subject=f"account:{account_id}",
                    alert_id=f"margin_call:{account_id}:{currency}",
                    message=(
                        f"{currency} maintenance margin {ratio:.1%} of margin balance "
                        f">= {ratio_limit:.1%} (mm {summary.get('maintenance_margin')}, "
                        f"margin balance {summary.get('margin_balance')})"
                    ),
                    details={"currency": currency, "ratio": ratio, "limit": ratio_limit},
                )
            else:
                self.in_breach.discard(key)

    async def _exchange_down(self, account_id: str, error: str) -> None:
        since = self.down_since.setdefault(account_id, time.monotonic())
        if account_id in self.down_alerted:
            return
        if time.monotonic() - since < self.cfg.exchange_down_alert_s:
            return
        self.down_alerted.add(account_id)
        await self._publish(
            account_id,
            OrderEventType.SYSTEM_ERROR,
            subject="system:exchange",
            alert_id=f"system_error:exchange:{account_id}",
            message=f"exchange unreachable for over {self.cfg.exchange_down_alert_s:g}s ({error})",
            details={"component": "exchange"},
        )

    async def _publish(
        self,
        account_id: str,
        event_type: OrderEventType,
        *,
        subject: str,
        alert_id: str,
        message: str,
        details: dict[str, Any],
    ) -> None:
        at = now_ms()
        event = OrderEvent(
            event_id=f"{alert_id}:{at}",
            event_type=event_type,
            order_id=subject,
            account_id=account_id,
            message=message,
            timestamp=at,
            details={**details, "alert_id": alert_id},
        )
        log.warning("notify.alert_event", alert_id=alert_id, message=message)
        await self._publish_event(event)
