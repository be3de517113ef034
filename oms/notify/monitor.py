"""Account monitor: margin calls from the exchange's account summaries and the exchange
connection, published as account/system events on ``oms.order-events``.

For every account whose settings set ``margin_call_ratio`` and which has exchange
credentials, the monitor polls the account's margin in each configured currency. The ratio
is ``maintenance_margin / margin_balance``
(:attr:`~oms.exchange.interface.MarginSummary.ratio`; a non-positive margin balance counts
as infinite). Crossing the ratio publishes one ``margin_call`` event; the alert re-arms when
the ratio falls back below it. An exchange that cannot be reached for
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

from oms.component import Component
from oms.exchange.interface import AccountSession, VenueAccounts
from oms.schemas import OrderEvent, OrderEventType, now_ms
from oms.schemas.notify_settings import NotificationSettings
from oms.settings import Settings

log = structlog.get_logger(__name__)

Accounts = Callable[[], Iterable[tuple[str, NotificationSettings]]]
Publish = Callable[[OrderEvent], Awaitable[None]]


class AccountMonitor(Component):
    """Polls the margins of accounts that asked for margin alerts.

    ``venue`` opens sessions to the accounts at the exchange; ``accounts`` gives the
    accounts' current notification settings; ``publish`` puts an event on
    ``oms.order-events``."""

    def __init__(
        self, settings: Settings, venue: VenueAccounts, accounts: Accounts, publish: Publish
    ) -> None:
        super().__init__("notify-monitor")
        self.settings = settings
        self.cfg = settings.notify
        self._venue = venue
        self._accounts = accounts
        self._publish_event = publish
        self.sessions: dict[str, AccountSession] = {}
        self.in_breach: set[tuple[str, str]] = set()
        self.down_since: dict[str, float] = {}
        self.down_alerted: set[str] = set()
        self.counters: Counter[str] = Counter()
        self.last_ratio: dict[str, float] = {}

    def stats(self) -> dict[str, Any]:
        return {
            "counters": dict(self.counters),
            "ratios": {k: round(v, 6) for k, v in self.last_ratio.items()},
            "in_breach": sorted("|".join(k) for k in self.in_breach),
        }

    async def on_start(self) -> None:
        # Poll every ``margin_check_interval_s`` in the background.
        self.spawn(self._run(), "poll")

    async def on_stop(self) -> None:
        # Close the exchange sessions.
        for session in self.sessions.values():
            with contextlib.suppress(Exception):
                await session.close()
        self.sessions.clear()

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

    def _session(self, account_id: str) -> AccountSession | None:
        session = self.sessions.get(account_id)
        if session is not None:
            return session
        session = self._venue.open(account_id, name=f"notify-monitor-{account_id}")
        if session is None:
            self.counters["no_credentials"] += 1
            return None
        self.sessions[account_id] = session
        return session

    async def check(self, account_id: str, ratio_limit: float) -> None:
        """Poll one account; publish a margin_call or system_error event if due."""
        try:
            session = self._session(account_id)
            if session is None:
                return
            margins = [await session.margin(c) for c in self.cfg.margin_currencies]
        except Exception as exc:
            self.counters["exchange_errors"] += 1
            await self._exchange_down(account_id, type(exc).__name__)
            return
        self.down_since.pop(account_id, None)
        self.down_alerted.discard(account_id)
        for currency, margin in zip(self.cfg.margin_currencies, margins, strict=True):
            ratio = margin.ratio
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
                        f">= {ratio_limit:.1%} (mm {margin.maintenance_margin}, "
                        f"margin balance {margin.margin_balance})"
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
