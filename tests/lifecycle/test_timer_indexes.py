"""The worker's timers visit only the orders that are due, never the whole table.

The lifecycle monitor, the algorithm scheduler and the unacknowledged sweep are fed by the
worker's order table (every write noted, :class:`~oms.streams.order_table.ObservedOrders`) and
rebuilt from it; a pass reads only the orders its deadline indexes pop. Without Kafka: a dict
is the table, the clock is passed in.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from oms.algos.scheduler import AlgoScheduler
from oms.algos.twap import child_request_id
from oms.lifecycle.monitor import LifecycleMonitor, lifecycle_request_id
from oms.orders.params import CANCEL_REASON_KEY, TwapParams
from oms.schemas import (
    CommandType,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    PendingAmend,
    ReasonCode,
    now_ms,
)
from oms.settings import LifecycleSettings
from oms.streams.order_table import ObservedOrders
from oms.streams.sweep import (
    OrderSweep,
    amend_again,
    cancel_again,
    has_unanswered_amend,
    has_unanswered_cancel,
    is_unacknowledged,
)
from tests.orders.factories import order_record

T0 = 1_700_000_000_000


class Rig:
    """A table seen through ObservedOrders, and what the timers read and publish."""

    def __init__(self, settings: LifecycleSettings | None = None) -> None:
        self.data: dict[str, OrderRecord] = {}
        self.reads: Counter[str] = Counter()
        self.published: list[OrderRequest] = []
        self.rechecked: list[str] = []
        self.reconciled: list[str] = []
        self.busy: set[str] = set()
        self.owned: set[str] | None = None  # None: every order
        self.monitor = LifecycleMonitor(
            settings or LifecycleSettings(),
            order_of=self.order_of,
            owns=self.owns,
            recheck=self._recheck,
            is_busy=self.busy.__contains__,
            publish_request=self._publish,
        )
        self.algos = AlgoScheduler(
            order_of=self.order_of,
            owns=self.owns,
            publish_request=self._publish,
            latest_tick=lambda instrument: None,
        )
        self.sweep = self.order_sweep("reconcile", is_unacknowledged, self._reconcile)
        self.table = ObservedOrders(self.data, [self.monitor, self.algos, self.sweep])

    def order_sweep(
        self,
        name: str,
        follows: Callable[[OrderRecord], bool],
        act: Callable[[OrderRecord], Awaitable[object]],
    ) -> OrderSweep:
        """A sweep over this rig's orders, due 15 s after an order's last change, then
        every 5 s."""
        return OrderSweep(
            name,
            follows=follows,
            act=act,
            timeout_s=15.0,
            interval_s=5.0,
            order_of=self.order_of,
            owns=self.owns,
            is_inflight=self.busy.__contains__,
        )

    def order_of(self, order_id: str) -> OrderRecord | None:
        self.reads[order_id] += 1
        return self.data.get(order_id)

    def owns(self, order_id: str) -> bool:
        return self.owned is None or order_id in self.owned

    async def _recheck(self, order: OrderRecord) -> None:
        self.rechecked.append(order.order_id)

    async def _publish(self, request: OrderRequest) -> None:
        self.published.append(request)

    async def _reconcile(self, order: OrderRecord) -> None:
        self.reconciled.append(order.order_id)

    def put(self, order_id: str, status: OrderStatus, **kw: Any) -> OrderRecord:
        fields: dict[str, Any] = {"created_at": T0, "submitted_at": T0, "updated_at": T0}
        fields.update(kw)
        order = order_record(status, order_id=order_id, **fields)
        self.table[order_id] = order
        return order


async def test_a_pass_reads_only_the_orders_that_are_due() -> None:
    rig = Rig(LifecycleSettings(auto_cancel_timeout=3600, monitoring_interval=5.0))
    for i in range(10_000):
        rig.put(f"o-{i}", OrderStatus.OPEN)
    rig.put("old", OrderStatus.OPEN, submitted_at=T0 - 3_600_000)
    for i in range(5_000):
        rig.put(f"done-{i}", OrderStatus.FILLED)
    assert rig.monitor.followed == 10_001
    done = await rig.monitor.run_once(T0 + 1_000)  # nobody quiet for 5 s yet
    assert done == {"rechecks": 0, "auto_cancels": 1, "partial_fill_cancels": 0}
    assert set(rig.reads) == {"old"}
    assert [r.request_id for r in rig.published] == [
        lifecycle_request_id(ReasonCode.AUTO_CANCELLED, "old")
    ]
    await rig.algos.run_once(T0 + 1_000)
    assert await rig.sweep.run_once(T0 + 1_000) == 0
    assert set(rig.reads) == {"old"}  # neither touched a single order


async def test_auto_cancel_comes_due_at_its_time_and_is_asked_once() -> None:
    rig = Rig(LifecycleSettings(auto_cancel_timeout=10.0, monitoring_interval=600.0))
    rig.put("o-1", OrderStatus.OPEN)
    assert (await rig.monitor.run_once(T0 + 9_999))["auto_cancels"] == 0
    assert (await rig.monitor.run_once(T0 + 10_000))["auto_cancels"] == 1
    # Intake records the request; the order is written (noted) but not cancelled yet.
    request_id = lifecycle_request_id(ReasonCode.AUTO_CANCELLED, "o-1")
    rig.put("o-1", OrderStatus.OPEN, seen_request_ids=[request_id], updated_at=T0 + 10_050)
    for now in (T0 + 11_000, T0 + 45_000, T0 + 100_000):
        assert (await rig.monitor.run_once(now))["auto_cancels"] == 0
    assert len(rig.published) == 1
    rig.put("o-1", OrderStatus.CANCELLED, updated_at=T0 + 100_500)
    rig.reads.clear()
    await rig.monitor.run_once(T0 + 10**9)
    assert not rig.reads and rig.monitor.followed == 0


async def test_partial_fill_grace_runs_from_the_first_partial_fill() -> None:
    rig = Rig(LifecycleSettings(auto_cancel_timeout=0, monitoring_interval=600.0))
    policy = {"partial_fill_handling": "cancel_remaining", "partial_fill_grace": 5}
    rig.put("o-1", OrderStatus.OPEN, metadata=policy)
    rig.put("o-1", OrderStatus.PARTIALLY_FILLED, metadata=policy, updated_at=T0 + 1_000)
    # A second partial fill does not restart the grace period.
    rig.put("o-1", OrderStatus.PARTIALLY_FILLED, metadata=policy, updated_at=T0 + 4_000)
    assert (await rig.monitor.run_once(T0 + 5_999))["partial_fill_cancels"] == 0
    assert (await rig.monitor.run_once(T0 + 6_000))["partial_fill_cancels"] == 1
    assert rig.published[0].metadata == {CANCEL_REASON_KEY: "partial_fill_cancelled"}


async def test_rechecks_take_the_quietest_first_within_the_budget() -> None:
    rig = Rig(LifecycleSettings(auto_cancel_timeout=0, monitoring_interval=5.0))
    rig.monitor.settings.max_rechecks_per_run = 2
    for i in range(5):
        rig.put(f"o-{i}", OrderStatus.OPEN, updated_at=T0 + 100 * (4 - i))  # o-4 quietest
    rig.busy.add("o-4")
    assert (await rig.monitor.run_once(T0 + 10_000))["rechecks"] == 2
    assert rig.rechecked == ["o-3", "o-2"]  # o-4 is busy: next pass
    rig.busy.clear()
    await rig.monitor.run_once(T0 + 10_001)
    assert rig.rechecked == ["o-3", "o-2", "o-4", "o-1"]
    # News about o-0 makes it not quiet any more.
    rig.put("o-0", OrderStatus.OPEN, updated_at=T0 + 10_002)
    await rig.monitor.run_once(T0 + 10_003)
    assert rig.rechecked == ["o-3", "o-2", "o-4", "o-1"]
    # Each is re-checked again one monitoring interval after its last re-check.
    await rig.monitor.run_once(T0 + 15_000)
    assert rig.rechecked[4:] == ["o-3", "o-2"]


async def test_orders_that_end_leave_or_move_away_are_forgotten() -> None:
    rig = Rig(LifecycleSettings(auto_cancel_timeout=1.0, monitoring_interval=1.0))
    rig.put("ends", OrderStatus.OPEN)
    rig.put("leaves", OrderStatus.OPEN)
    rig.put("moves", OrderStatus.OPEN)
    rig.put("ends", OrderStatus.FILLED)
    del rig.table["leaves"]
    rig.owned = {"ends", "leaves"}
    await rig.monitor.run_once(T0 + 60_000)
    assert rig.published == [] and rig.rechecked == []
    assert rig.monitor.followed == 0


async def test_rebuilding_from_the_table_follows_what_the_changelog_restored() -> None:
    rig = Rig(LifecycleSettings(auto_cancel_timeout=10.0, monitoring_interval=600.0))
    # Written by a previous owner: the table was restored, no write was noted here.
    rig.data["restored"] = order_record(
        OrderStatus.OPEN, order_id="restored", submitted_at=T0, updated_at=T0
    )
    rig.data["not-ours"] = order_record(
        OrderStatus.OPEN, order_id="not-ours", submitted_at=T0, updated_at=T0
    )
    assert await rig.monitor.run_once(T0 + 20_000) == {
        "rechecks": 0,
        "auto_cancels": 0,
        "partial_fill_cancels": 0,
    }
    assert rig.table.rebuild(lambda order_id: order_id == "restored") == 1
    assert (await rig.monitor.run_once(T0 + 20_000))["auto_cancels"] == 1
    assert [r.order_id for r in rig.published] == ["restored"]


async def test_a_rebuild_keeps_what_was_asked_of_orders_still_followed() -> None:
    rig = Rig(LifecycleSettings(auto_cancel_timeout=10.0, monitoring_interval=600.0))
    rig.put("o-1", OrderStatus.OPEN)
    assert (await rig.monitor.run_once(T0 + 10_000))["auto_cancels"] == 1
    rig.table.rebuild(lambda order_id: True)  # a rebalance gave the partition back
    # The cancel was asked 5 s ago: not again before 30 s, then again (it was lost).
    assert (await rig.monitor.run_once(T0 + 15_000))["auto_cancels"] == 0
    assert (await rig.monitor.run_once(T0 + 40_000))["auto_cancels"] == 1
    rig.table.rebuild(lambda order_id: False)  # the partition moved away
    assert (await rig.monitor.run_once(T0 + 10**9))["auto_cancels"] == 0
    assert rig.monitor.followed == 0 and not rig.monitor._requested


async def test_twap_slices_go_out_at_their_times_only() -> None:
    rig = Rig()
    params = TwapParams(duration_s=30, slices=3, lot=10.0)
    meta = {**params.to_metadata(), "algo": "twap"}
    parent = rig.put("p", OrderStatus.OPEN, amount=30.0, metadata=meta)
    await rig.algos.run_once(T0)  # slice 0 is due at once
    await rig.algos.run_once(T0 + 9_999)
    assert [r.request_id for r in rig.published] == [child_request_id(parent.order_id, 0)]
    rig.reads.clear()
    await rig.algos.run_once(T0 + 5_000)
    assert not rig.reads  # nothing due: the parent is not even read
    await rig.algos.run_once(T0 + 20_000)
    assert [r.request_id for r in rig.published] == [child_request_id("p", i) for i in range(3)]
    await rig.algos.run_once(T0 + 60_000)
    assert len(rig.published) == 3  # never twice


async def test_the_sweep_looks_up_an_unacknowledged_order_after_the_timeout() -> None:
    rig = Rig()
    rig.put("sent", OrderStatus.SUBMITTED)
    rig.put("acked", OrderStatus.SUBMITTED)
    rig.put("acked", OrderStatus.OPEN, updated_at=T0 + 1_000)
    assert await rig.sweep.run_once(T0 + 14_999) == 0
    assert await rig.sweep.run_once(T0 + 15_000) == 1
    assert rig.reconciled == ["sent"]
    # No answer: looked up again one interval later, not before.
    assert await rig.sweep.run_once(T0 + 19_999) == 0
    rig.busy.add("sent")
    assert await rig.sweep.run_once(T0 + 20_000) == 0  # a command of its own is running
    rig.busy.clear()
    assert await rig.sweep.run_once(T0 + 25_000) == 1
    rig.put("sent", OrderStatus.OPEN, updated_at=T0 + 25_100)
    assert await rig.sweep.run_once(T0 + 10**9) == 0
    assert rig.reconciled == ["sent", "sent"]


async def test_an_unanswered_cancel_is_sent_again_by_the_way_that_fits_its_order() -> None:
    rig = Rig()
    acted: list[tuple[str, str, str]] = []

    async def cancel(order: OrderRecord, request_id: str) -> None:
        acted.append(("cancel", order.order_id, request_id))

    async def cancel_held(order: OrderRecord, request_id: str) -> None:
        acted.append(("cancel_held", order.order_id, request_id))

    act = cancel_again(cancel, cancel_held)
    cancels = rig.order_sweep("cancel_again", has_unanswered_cancel, act)
    table = ObservedOrders(rig.data, [rig.sweep, cancels])
    for order_id, status in [
        ("open", OrderStatus.OPEN),
        ("partial", OrderStatus.PARTIALLY_FILLED),
        ("pending", OrderStatus.PENDING),
        ("queued", OrderStatus.QUEUED),
    ]:
        table[order_id] = order_record(
            status, order_id=order_id, updated_at=T0, cancel_request_id=f"c-{order_id}"
        )
    table["untouched"] = order_record(OrderStatus.OPEN, order_id="untouched", updated_at=T0)
    assert len(cancels) == 4
    assert len(rig.sweep) == 0  # a pending order with a cancel is not resubmitted
    assert await cancels.run_once(T0 + 14_999) == 0
    assert await cancels.run_once(T0 + 15_000) == 4
    # Live at the exchange: cancelled by label. Maybe never sent: looked up first.
    assert sorted(acted) == [
        ("cancel", "open", "c-open"),
        ("cancel", "partial", "c-partial"),
        ("cancel_held", "pending", "c-pending"),
        ("cancel_held", "queued", "c-queued"),
    ]
    # Answered: ended, or the cancel refused (cleared); neither is sent again.
    table["open"] = order_record(
        OrderStatus.CANCELLED, order_id="open", updated_at=T0 + 16_000, cancel_request_id="c-open"
    )
    table["partial"] = order_record(
        OrderStatus.PARTIALLY_FILLED, order_id="partial", updated_at=T0 + 16_000
    )
    assert await cancels.run_once(T0 + 10**9) == 2
    assert sorted(a[1] for a in acted[4:]) == ["pending", "queued"]
    assert cancels.acted == 6


async def test_an_unanswered_edit_is_sent_again_once_its_order_is_live() -> None:
    rig = Rig()
    sent: list[OrderRequest] = []

    async def amend(order: OrderRecord, request: OrderRequest) -> None:
        sent.append(request)

    amends = rig.order_sweep("amend_again", has_unanswered_amend, amend_again(amend))
    table = ObservedOrders(rig.data, [amends])
    pending = PendingAmend(request_id="a-1", price=1_100.0)
    common: dict[str, Any] = {"amend_pending": pending, "updated_at": T0}
    table["live"] = order_record(OrderStatus.OPEN, order_id="live", **common)
    # Not at the exchange yet, or a cancel on its way: not the edit's turn.
    table["sent"] = order_record(OrderStatus.SUBMITTED, order_id="sent", **common)
    table["cancelling"] = order_record(
        OrderStatus.OPEN, order_id="cancelling", cancel_request_id="c", **common
    )
    assert len(amends) == 1
    assert await amends.run_once(T0 + 10**9) == 1
    assert [(r.command, r.order_id, r.request_id, r.amount, r.price) for r in sent] == [
        (CommandType.AMEND, "live", "a-1", None, 1_100.0)
    ]


async def test_a_write_that_asks_for_work_now_wakes_the_algorithms() -> None:
    rig = Rig()
    # Nothing asked for: the pass waits (here, past the 50 ms the test gives it).
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(rig.algos.wait_for_work(10.0), 0.05)
    params = TwapParams(duration_s=30, slices=3, lot=10.0)
    meta = {**params.to_metadata(), "algo": "twap"}
    now = now_ms()
    rig.put("p", OrderStatus.OPEN, amount=30.0, metadata=meta, created_at=now, updated_at=now)
    # Its first slice is due at once: the pass runs without waiting for the timer...
    ran_first = asyncio.Event()
    asyncio.get_running_loop().call_soon(ran_first.set)
    await asyncio.wait_for(rig.algos.wait_for_work(10.0), 1.0)
    # ...after the event loop ran what was ready (a strategy that keeps asking to be called
    # now starves nobody).
    assert ran_first.is_set()
    await rig.algos.run_once()
    assert [r.request_id for r in rig.published] == [child_request_id("p", 0)]
