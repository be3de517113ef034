"""Ended orders leaving the table, as the agents apply it (no Kafka: dicts are the tables).

The purge decision is the partition writer's (the release agent); after it, intake refuses a
duplicate of the request and a cancel of the order with typed reasons, and the order-state
agent counts a late report without writing the order back.
"""

from __future__ import annotations

from typing import Any

from oms.auth.nonces import NonceStore
from oms.orders.retention import Finished, FinishedOrders, PurgeSchedule, RetentionPolicy
from oms.risk.feeds import table_key
from oms.schemas import (
    CommandType,
    ExchangeOrderState,
    ExecutionReport,
    Fill,
    OrderEvent,
    OrderEventType,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    ReasonCode,
    ReportSource,
    derive_order_id,
    now_ms,
)
from oms.schemas.commands import CommandOrigin, OrderCommand, OriginKind
from oms.schemas.conditions import OrderTrigger, TriggerKind
from oms.settings import QueueSettings
from oms.streams.intake import IntakeContext, apply_command
from oms.streams.order_state import OrderStateContext, handle_report
from oms.streams.order_table import ObservedOrders
from oms.streams.purge import BATCH_IDS, PurgeTimer, Retention
from oms.streams.release import ReleaseContext, handle_trigger
from tests.orders.factories import order_record

POLICY = RetentionPolicy(keep_ms=1_000, dedupe_ms=60_000)
ACCOUNT = "acc"


def partition_of(order_id: str) -> int:
    return int(order_id.rsplit("-", 1)[1]) % 2 if order_id[-1].isdigit() else 0


async def nothing(*_: Any) -> None:
    return None


class Worker:
    """The tables of one worker and the contexts of its agents over them."""

    def __init__(self) -> None:
        self.data: dict[str, OrderRecord] = {}
        self.markers: dict[str, Any] = {}
        self.nonce_table: dict[str, Any] = {}
        self.events: list[OrderEvent] = []
        self.submitted: list[OrderRecord] = []
        self.schedule = PurgeSchedule(POLICY)
        self.finished = FinishedOrders(self.markers, on_change=self.schedule.note_marker)
        self.retention = Retention(
            POLICY, self.finished, partition_of, NonceStore(self.nonce_table)
        )
        self.orders = ObservedOrders(self.data, [self.schedule])
        outputs: dict[str, Any] = {
            "orders": self.orders,
            "emit": self._emit,
            "dead_letter": nothing,
        }
        self.release = ReleaseContext(
            **outputs,
            source_topic="order-triggers",
            held=None,  # type: ignore[arg-type]
            executor=None,  # type: ignore[arg-type]
            instrument=lambda name: None,
            create=nothing,
            on_fired=nothing,
            publish_trigger=nothing,
            retention=self.retention,
        )
        self.intake = IntakeContext(
            **outputs,
            source_topic="order-commands",
            executor=self,  # type: ignore[arg-type]
            instrument=lambda name: None,
            account_known=lambda account: True,
            held=None,  # type: ignore[arg-type]
            queue_settings=QueueSettings(),
            on_fired=nothing,
            publish_trigger=nothing,
            retention=self.retention,
        )
        self.state = OrderStateContext(
            **outputs,
            source_topic="execution-reports",
            publish_trigger=nothing,
            finished=self.finished,
        )
        self.triggers: list[OrderTrigger] = []
        self.timer = PurgeTimer(
            self.schedule,
            self.retention,
            owned_partitions=lambda: {0, 1},
            publish_trigger=self._trigger,
        )

    async def _emit(self, event: OrderEvent) -> None:
        self.events.append(event)

    async def _trigger(self, trigger: OrderTrigger) -> None:
        self.triggers.append(trigger)

    async def submit(self, order: OrderRecord, *, check_label_first: bool) -> None:
        self.submitted.append(order)

    async def deliver(self, trigger: OrderTrigger) -> None:
        """The release agent reads the trigger from its order's partition."""
        await handle_trigger(
            self.release,
            trigger.to_bytes(),
            key=trigger.order_id.encode(),
            partition=partition_of(trigger.order_id),
            offset=0,
        )


def ended(order_id: str, updated_at: int, status: OrderStatus = OrderStatus.FILLED) -> OrderRecord:
    return order_record(status, order_id=order_id, account_id=ACCOUNT, updated_at=updated_at)


async def test_the_timer_asks_each_partition_once_and_the_writer_purges() -> None:
    worker = Worker()
    t0 = now_ms() - 5_000  # ended five seconds ago: past the 1 s retention
    for i in range(6):
        worker.orders[f"o-{i}"] = ended(f"o-{i}", t0)
    worker.orders["live-0"] = order_record(OrderStatus.OPEN, order_id="live-0", updated_at=t0)
    worker.nonce_table["o-0"] = [["n-1", "0:1"]]
    assert await worker.timer.run_once() == 6
    assert len(worker.triggers) == 2  # one per partition
    for trigger in worker.triggers:
        assert trigger.kind is TriggerKind.PURGE
        assert {partition_of(i) for i in trigger.details["orders"]} == {
            partition_of(trigger.order_id)
        }
        await worker.deliver(trigger)
    assert set(worker.data) == {"live-0"}
    assert worker.release.counters["purged"] == 6
    assert worker.finished.get("o-3") == Finished(ACCOUNT, OrderStatus.FILLED, t0)
    assert worker.nonce_table == {}  # its nonces went with it
    assert worker.schedule.ended == 0
    worker.triggers.clear()
    assert await worker.timer.run_once() == 0 and worker.triggers == []


async def test_the_writer_checks_again_and_never_purges_what_is_not_due() -> None:
    worker = Worker()
    t0 = now_ms() - 5_000
    worker.orders["o-0"] = ended("o-0", t0)
    worker.orders["o-2"] = ended("o-2", t0)
    await worker.timer.run_once()
    (trigger,) = worker.triggers
    # Meanwhile a late fill was recorded on o-2 (a write: its retention starts again), and
    # an order of the other partition was slipped into the trigger.
    worker.orders["o-2"] = ended("o-2", now_ms())
    worker.orders["o-1"] = ended("o-1", t0)
    trigger.details["orders"].append("o-1")
    await worker.deliver(trigger)
    assert set(worker.data) == {"o-1", "o-2"}
    assert worker.release.counters == {"purged": 1, "purge_not_due": 1, "purge_misrouted": 1}


async def test_many_ended_orders_go_in_short_triggers() -> None:
    worker = Worker()
    t0 = now_ms() - 5_000
    for i in range(0, 2 * BATCH_IDS + 10, 2):  # all on partition 0
        worker.orders[f"o-{i}"] = ended(f"o-{i}", t0)
    await worker.timer.run_once()
    assert [len(t.details["orders"]) for t in worker.triggers] == [BATCH_IDS, 5]


def submit(request_id: str, **fields: Any) -> OrderCommand:
    request = OrderRequest(
        request_id=request_id,
        account_id=ACCOUNT,
        instrument_name="BTC-PERPETUAL",
        amount=10,
        direction="buy",
        order_type="market",
        **fields,
    )
    return OrderCommand(
        origin=CommandOrigin(kind=OriginKind.EXTERNAL, source="0:1"), request=request
    )


async def test_after_the_purge_a_duplicate_is_refused_and_commands_say_why() -> None:
    worker = Worker()
    order_id = derive_order_id(ACCOUNT, "r-1")
    worker.finished.remember(order_id, Finished(ACCOUNT, OrderStatus.FILLED, now_ms() - 5_000))

    await apply_command(worker.intake, submit("r-1"), replayed=False)
    (duplicate,) = worker.events
    assert duplicate.event_type is OrderEventType.DUPLICATE
    assert duplicate.reason_code is ReasonCode.DUPLICATE_REQUEST
    assert duplicate.status is OrderStatus.FILLED and duplicate.order_id == order_id
    assert worker.submitted == [] and order_id not in worker.data
    # Replayed after a takeover: already answered, nothing more to say.
    await apply_command(worker.intake, submit("r-1"), replayed=True)
    assert len(worker.events) == 1

    for command, reason in (
        (CommandType.CANCEL, ReasonCode.ORDER_NOT_OPEN),
        (CommandType.AMEND, ReasonCode.ORDER_NOT_OPEN),
    ):
        worker.events.clear()
        request = OrderRequest(
            command=command,
            request_id=f"{command.value}-1",
            account_id=ACCOUNT,
            order_id=order_id,
            amount=20 if command is CommandType.AMEND else None,
        )
        await apply_command(
            worker.intake,
            OrderCommand(origin=CommandOrigin(kind=OriginKind.EXTERNAL), request=request),
            replayed=False,
        )
        (refused,) = worker.events
        assert refused.event_type is OrderEventType.COMMAND_REJECTED
        assert refused.reason_code is reason, refused.message
    assert worker.intake.counters["duplicates_after_purge"] == 1


async def test_a_request_older_than_the_window_is_refused_as_stale() -> None:
    worker = Worker()
    await apply_command(worker.intake, submit("old", created_at=now_ms() - 61_000), replayed=False)
    (rejected,) = worker.events
    assert rejected.event_type is OrderEventType.REJECTED
    assert rejected.reason_code is ReasonCode.STALE_REQUEST
    assert worker.submitted == []


async def test_a_late_report_about_a_purged_order_is_counted_not_written() -> None:
    worker = Worker()
    worker.finished.remember("o-1", Finished(ACCOUNT, OrderStatus.FILLED, 1))
    report = ExecutionReport(
        report_id="late",
        order_id="o-1",
        account_id=ACCOUNT,
        source=ReportSource.SUBSCRIPTION,
        instrument_name="BTC-PERPETUAL",
        order_state=ExchangeOrderState.FILLED,
        filled_amount=10,
        fills=[Fill(trade_id="t-late", amount=10, price=50_000.0)],
    )
    await handle_report(worker.state, report.to_bytes(), key=b"o-1", partition=1, offset=3)
    assert worker.state.counters == {"reports_purged_order": 1}
    assert worker.data == {} and worker.events == []
    link = OrderTrigger(order_id="o-1", kind=TriggerKind.LINK, reason="a fact")
    await worker.deliver(link)
    assert worker.release.counters == {"triggers_purged_order": 1}
    assert worker.data == {}


async def test_markers_are_forgotten_after_the_dedupe_window() -> None:
    worker = Worker()
    long_ago = now_ms() - 61_000
    worker.finished.remember("o-0", Finished(ACCOUNT, OrderStatus.FILLED, long_ago))
    worker.finished.remember("o-2", Finished(ACCOUNT, OrderStatus.CANCELLED, now_ms()))
    await worker.timer.run_once()
    (trigger,) = worker.triggers
    assert trigger.details["markers"] == ["o-0"]
    await worker.deliver(trigger)
    assert set(worker.markers) == {"o-2"}
    assert worker.release.counters == {"markers_forgotten": 1}


def test_changelog_keys_are_read_as_the_order_ids_they_encode() -> None:
    assert table_key(b'"o-abc"') == "o-abc"  # Faust writes str keys as JSON
    assert table_key(b"o-abc") == "o-abc"
    assert table_key(b"17") == "17"
