"""Where queued orders leave for the exchange: the priority queues drained at the rate limit.

Deribit meters order entry per sub-account (matching-engine pool; 10028 and a dropped session
when exceeded). Sending everything to the client would park the orders in the client's rate
limiter in FIFO order, and priority would stop mattering exactly when it should. So the
dispatcher takes an order off an account's queue only when that account's limiter can send one
*now*, reserves the credit itself, and hands the order to the executor prepaid. A high-priority
order that arrives while the account is throttled therefore goes out before every queued normal
and low one.

Each round sends at most ``batch_size`` orders per account; rounds follow each other at once
while credits last, otherwise every ``processing_interval`` or when woken by a new order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from oms.exchange.deribit.rate_limit import RateLimiter
from oms.exchange.errors import ExchangeError
from oms.orders.priority_queue import PriorityQueues
from oms.schemas import OrderRecord, OrderStatus, ReasonCode, now_ms
from oms.schemas.conditions import OrderTrigger, TriggerKind
from oms.schemas.rejection import Rejection
from oms.settings import QueueSettings
from oms.streams.execution import OrderExecutor

log = structlog.get_logger(__name__)

SUBMIT_METHOD = "private/buy"  # buy and sell draw on the same matching-engine pool

ReleaseCheck = Callable[[OrderRecord], Rejection | None]


class Dispatcher:
    """Drains the priority queues into the executor, one account's credits at a time."""

    def __init__(
        self,
        queues: PriorityQueues,
        *,
        order_of: Callable[[str], OrderRecord | None],
        executor: OrderExecutor,
        limiter_of: Callable[[str], Awaitable[RateLimiter]],
        publish_trigger: Callable[[OrderTrigger], Awaitable[None]],
        settings: QueueSettings,
        retry_delay: float,
        release_check: ReleaseCheck | None = None,
    ) -> None:
        self._queues = queues
        self._order_of = order_of
        self._executor = executor
        self._limiter_of = limiter_of
        self._publish_trigger = publish_trigger
        self._settings = settings
        self._retry_delay = retry_delay
        self.release_check = release_check
        self._wakeup = asyncio.Event()
        self.stats: dict[str, int] = {"dispatched": 0, "expired": 0, "refused": 0, "skipped": 0}

    def wake(self) -> None:
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
            try:
                limiter = await self._limiter_of(account)
            except (ExchangeError, KeyError) as exc:
                log.warning("dispatcher.account_unavailable", account_id=account, error=str(exc))
                wait = min(wait, self._retry_delay)
                continue
            sent = 0
            while sent < self._settings.batch_size:
                delay = limiter.delay_for(SUBMIT_METHOD)
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
                # No wait: the limiter just said a credit is there. Reserving it here keeps
                # it ours while the executor's task starts.
                await limiter.acquire(SUBMIT_METHOD)
                await self._executor.dispatch(order, uncertain=item.uncertain, prepaid=True)
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
        rejection = self.release_check(order) if self.release_check else None
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
