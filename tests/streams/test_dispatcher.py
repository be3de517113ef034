"""The dispatcher against a venue's rate limit, through the Exchange interface's two calls:
``order_entry_delay`` (may one go now?) and ``reserve_order_entry`` (take its credit)."""

from __future__ import annotations

from oms.orders.priority_queue import PriorityQueues
from oms.schemas import OrderRecord, OrderStatus, ReasonCode
from oms.schemas.conditions import OrderTrigger, TriggerKind
from oms.schemas.rejection import Rejection
from oms.settings import QueueSettings
from oms.streams.dispatcher import Dispatcher
from tests.orders.factories import order_record


class Credits:
    """A venue's order-entry credits for one account: ``left`` now, then none."""

    def __init__(self, left: int) -> None:
        self.left = left
        self.reserved = 0

    async def delay(self, account_id: str) -> float:
        return 0.0 if self.left > 0 else 0.2

    async def reserve(self, account_id: str) -> None:
        assert self.left > 0, "reserved a credit the venue did not have"
        self.left -= 1
        self.reserved += 1


class Rig:
    def __init__(self, credits: int, refuse: frozenset[str] = frozenset()) -> None:
        self.table: dict[str, OrderRecord] = {}
        self.queues = PriorityQueues(["high", "normal", "low"])
        self.credits = Credits(credits)
        self.sent: list[tuple[str, bool]] = []
        self.triggers: list[OrderTrigger] = []
        self.dispatcher = Dispatcher(
            self.queues,
            order_of=self.table.get,
            dispatch=self._dispatch,
            order_entry_delay=self.credits.delay,
            reserve_order_entry=self.credits.reserve,
            publish_trigger=self._trigger,
            release_check=lambda order: (
                Rejection(ReasonCode.RISK_LIMIT_EXCEEDED, "refused at release")
                if order.order_id in refuse
                else None
            ),
            settings=QueueSettings(batch_size=10, processing_interval=1.0),
            retry_delay=0.1,
            ready=self._ready,
        )

    async def _ready(self) -> None:
        return None

    async def _dispatch(self, order: OrderRecord, uncertain: bool) -> None:
        self.sent.append((order.order_id, uncertain))

    async def _trigger(self, trigger: OrderTrigger) -> None:
        self.triggers.append(trigger)

    def queue(self, order_id: str, priority: str, at: int, *, uncertain: bool = False) -> None:
        order = order_record(OrderStatus.QUEUED, order_id=order_id, priority=priority, queued_at=at)
        self.table[order_id] = order
        self.queues.push(order, uncertain=uncertain)


async def test_only_orders_with_a_credit_leave_and_priority_decides_which() -> None:
    rig = Rig(credits=2)
    rig.queue("low-1", "low", 1)
    rig.queue("normal-1", "normal", 2, uncertain=True)
    rig.queue("high-1", "high", 3)  # arrived last, leaves first
    wait = await rig.dispatcher.drain_once()
    assert rig.sent == [("high-1", False), ("normal-1", True)]
    assert rig.credits.reserved == 2
    assert wait == 0.2  # until the venue has a credit again
    rig.credits.left = 5
    await rig.dispatcher.drain_once()
    assert [order_id for order_id, _ in rig.sent] == ["high-1", "normal-1", "low-1"]


async def test_skipped_and_refused_orders_reserve_no_credit() -> None:
    rig = Rig(credits=1, refuse=frozenset({"refused"}))
    rig.queue("gone", "high", 1)
    rig.table["gone"] = rig.table["gone"].model_copy(update={"status": OrderStatus.CANCELLED})
    rig.queue("refused", "high", 2)
    rig.queue("sent", "normal", 3)
    await rig.dispatcher.drain_once()
    assert rig.sent == [("sent", False)]
    assert rig.credits.reserved == 1
    assert [(t.order_id, t.kind) for t in rig.triggers] == [("refused", TriggerKind.REJECT)]
    assert rig.dispatcher.stats["skipped"] == 1 and rig.dispatcher.stats["refused"] == 1
