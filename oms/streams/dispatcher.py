"""Where queued orders leave for the exchange: the priority queues drained at the rate limit.

Exchanges meter order entry per account (Deribit: the sub-account's matching-engine pool; 10028
and a dropped session when exceeded). Sending everything to the exchange client would park the
orders in its rate limiter in FIFO order, and priority would stop mattering exactly when it
should. So the dispatcher takes an order off an account's queue only when the venue says that
account can send one *now* (``order_entry_delay``), reserves the credit itself
(``reserve_order_entry``), and hands the order to the executor prepaid. A high-priority order
that arrives while the account is throttled therefore goes out before every queued normal and
low one.

Each round sends at most ``batch_size`` orders per account; rounds follow each other at once
while credits last, otherwise every ``processing_interval`` or when woken by a new order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from oms.component import Component
from oms.exchange.errors import ExchangeError
from oms.orders.priority_queue import PriorityQueues
from oms.schemas import OrderRecord, OrderStatus, ReasonCode, now_ms
from oms.schemas.conditions import OrderTrigger, TriggerKind
from oms.schemas.rejection import Rejection
from oms.settings import QueueSettings

log = structlog.get_logger(__name__)

ReleaseCheck = Callable[[OrderRecord], Rejection | None]
# Sends a queued order, prepaid: (order, uncertain) where ``uncertain`` asks for a label
# lookup first (rebuilt after a takeover).
Dispatch = Callable[[OrderRecord, bool], Awaitable[None]]


class Dispatcher(Component):
    """Drains the priority queues into the executor, one account's credits at a time.

    ``order_entry_delay(account)`` and ``reserve_order_entry(account)`` are the venue's
    (:class:`~oms.exchange.interface.Exchange`); ``release_check`` refuses an order that may
    not leave now (risk, checked again at release)."""

    def __init__(
        self,
        queues: PriorityQueues,
        *,
        order_of: Callable[[str], OrderRecord | None],
        dispatch: Dispatch,
        order_entry_delay: Callable[[str], Awaitable[float]],
        reserve_order_entry: Callable[[str], Awaitable[None]],
        publish_trigger: Callable[[OrderTrigger], Awaitable[None]],
        release_check: ReleaseCheck,
        settings: QueueSettings,
        retry_delay: float,
        ready: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__("dispatcher")
        self._queues = queues
        self._order_of = order_of
        self._dispatch = dispatch
        self._order_entry_delay = order_entry_delay
        self._reserve_order_entry = reserve_order_entry
        self._publish_trigger = publish_trigger
        self._release_check = release_check
        self._settings = settings
        self._retry_delay = retry_delay
        self._ready = ready
        self._wakeup = asyncio.Event()
        self.stats: dict[str, int] = {"dispatched": 0, "expired": 0, "refused": 0, "skipped": 0}

    async def on_start(self) -> None:
        self.spawn(self._run_when_ready(), "drain")

    async def _run_when_ready(self) -> None:
        await self._ready()
        await self.run()

    def wake(self) -> None:
        """A queue changed: drain now rather than at the next interval."""
        self._wakeup.set()

    async def run(self) -> None:
        """Drain until cancelled."""
        while True:
            self._wakeup.clear()
            try:
                wait = await self.drain_once()
            except Exception:
                # One bad order or a broken dependency must not stop every queue for good.
                log.exception("dispatcher.round_failed")
                self.stats["failed_rounds"] = self.stats.get("failed_rounds", 0) + 1
                wait = self._retry_delay
            if wait <= 0:
                await asyncio.sleep(0)  # let agents and replies run between full rounds
                continue
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=wait)
            except TimeoutError:
                pass

    async def drain_once(self) -> float:
        """One round over every account with queued orders; returns how long to wait."""
        wait = self._settings.processing_interval
        for account in self._queues.accounts():
            sent = 0
            while sent < self._settings.batch_size:
                try:
                    delay = await self._order_entry_delay(account)
                except (ExchangeError, KeyError) as exc:
                    log.warning(
                        "dispatcher.account_unavailable", account_id=account, error=str(exc)
                    )
                    wait = min(wait, self._retry_delay)
                    break
                if delay > 0:
                    wait = min(wait, delay)
                    break
                item = self._queues.pop(account)
                if item is None:
                    break
                order = self._order_of(item.order_id)
                if order is None or order.status is not OrderStatus.QUEUED:
                    # Cancelled, released elsewhere, or its partition moved meanwhile.
                    self.stats["skipped"] += 1
                    log.info(
                        "dispatcher.skipped",
                        order_id=item.order_id,
                        status=order.status.value if order else None,
                    )
                    continue
                if await self._refused(order):
                    continue
                # No wait: the venue just said a credit is there. Reserving it here keeps it
                # ours while the executor's task starts.
                await self._reserve_order_entry(account)
                await self._dispatch(order, item.uncertain)
                self.stats["dispatched"] += 1
                sent += 1
            else:
                wait = 0.0  # a full batch went out: more may follow at once
        return wait

    async def _refused(self, order: OrderRecord) -> bool:
        """Expired while queued, or refused by the release check (e.g. risk): tell the table."""
        if order.expire_at is not None and now_ms() >= order.expire_at:
            self.stats["expired"] += 1
            await self._publish_trigger(
                OrderTrigger(
                    order_id=order.order_id,
                    kind=TriggerKind.EXPIRE,
                    reason="expired while queued",
                )
            )
            return True
        rejection = self._release_check(order)
        if rejection is None:
            return False
        self.stats["refused"] += 1
        await self._publish_trigger(
            OrderTrigger(
                order_id=order.order_id,
                kind=TriggerKind.REJECT,
                reason=rejection.message,
                reason_code=rejection.reason_code or ReasonCode.INTERNAL_ERROR,
            )
        )
        return True
