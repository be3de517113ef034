"""When an ended order leaves the table, what is remembered of it, and for how long."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from oms.orders.retention import (
    PURGE_AGAIN_MS,
    Finished,
    FinishedOrders,
    PurgeBatch,
    PurgeSchedule,
    RetentionPolicy,
)
from oms.schemas import OrderStatus
from oms.settings import WorkerSettings
from tests.orders.factories import order_record

POLICY = RetentionPolicy(keep_ms=600_000, dedupe_ms=86_400_000)


def everything(order_id: str) -> bool:
    return True


@pytest.mark.parametrize(
    "status", [OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED]
)
def test_an_ended_order_is_purged_once_its_retention_is_over(status: OrderStatus) -> None:
    order = order_record(status, updated_at=1_000)
    assert POLICY.purge_at(order) == 601_000
    assert not POLICY.purge_due(order, 600_999)
    assert POLICY.purge_due(order, 601_000)


@pytest.mark.parametrize(
    "status",
    [
        OrderStatus.PENDING,
        OrderStatus.WAITING,
        OrderStatus.QUEUED,
        OrderStatus.SUBMITTED,
        OrderStatus.OPEN,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.NEEDS_REVIEW,
    ],
)
def test_an_order_that_has_not_ended_is_never_purged(status: OrderStatus) -> None:
    order = order_record(status, updated_at=1_000)
    assert POLICY.purge_at(order) is None
    assert not POLICY.purge_due(order, 10**15)


def test_markers_and_requests_are_judged_by_the_dedupe_window() -> None:
    marker = Finished("acc", OrderStatus.FILLED, 1_000)
    assert POLICY.forget_at(marker) == 86_401_000
    assert not POLICY.forget_due(marker, 86_400_999) and POLICY.forget_due(marker, 86_401_000)
    assert not POLICY.too_old(created_at=1_000, now=86_400_999)
    assert POLICY.too_old(created_at=1_000, now=86_401_000)


def test_the_policy_comes_from_the_settings_and_markers_outlive_orders() -> None:
    worker = WorkerSettings(terminal_retention_s=2.5, dedupe_retention_s=3600)
    assert RetentionPolicy.from_settings(worker) == RetentionPolicy(2_500, 3_600_000)
    assert WorkerSettings().terminal_retention_s == 600.0  # the default: ten minutes
    with pytest.raises(ValidationError, match="dedupe_retention_s"):
        WorkerSettings(terminal_retention_s=7200, dedupe_retention_s=3600)


def test_a_marker_is_small_and_survives_the_changelog() -> None:
    order = order_record(OrderStatus.CANCELLED, account_id="desk-7", updated_at=42)
    marker = Finished.of(order)
    assert marker == Finished("desk-7", OrderStatus.CANCELLED, 42)
    assert marker.to_value() == ["desk-7", "cancelled", 42]
    assert Finished.from_value(["desk-7", "cancelled", 42]) == marker
    for junk in (None, "x", [1, 2], ["a", "no-such-status", 1], {"a": 1}):
        assert Finished.from_value(junk) is None


def test_finished_orders_tell_of_every_change() -> None:
    seen: list[tuple[str, Finished | None]] = []
    table: dict[str, object] = {}
    finished = FinishedOrders(table, on_change=lambda k, m: seen.append((k, m)))
    marker = Finished("acc", OrderStatus.FILLED, 5)
    finished.remember("o-1", marker)
    assert table == {"o-1": ["acc", "filled", 5]}
    assert finished.get("o-1") == marker and finished.get("o-2") is None
    assert list(finished.items()) == [("o-1", marker)]
    assert finished.forget("o-1") and not finished.forget("o-1")
    assert seen == [("o-1", marker), ("o-1", None)]
    assert len(finished) == 0


def test_the_schedule_follows_every_write_of_an_order() -> None:
    schedule = PurgeSchedule(POLICY)
    markers = FinishedOrders({})
    schedule.note("o-1", order_record(OrderStatus.OPEN, order_id="o-1", updated_at=0))
    assert schedule.ended == 0
    schedule.note("o-1", order_record(OrderStatus.FILLED, order_id="o-1", updated_at=1_000))
    schedule.note("o-2", order_record(OrderStatus.REJECTED, order_id="o-2", updated_at=2_000))
    assert schedule.ended == 2
    # A late fill recorded on o-1 moves its purge later.
    schedule.note("o-1", order_record(OrderStatus.FILLED, order_id="o-1", updated_at=5_000))
    batch = schedule.due(602_000, 100, owns=everything, markers=markers)
    assert batch.orders == ["o-2"] and batch.markers == []
    schedule.note("o-2", None)  # its purge landed: it left the table
    batch = schedule.due(605_000, 100, owns=everything, markers=markers)
    assert batch.orders == ["o-1"]
    # Asked again later unless its purge lands before.
    later = 605_000 + PURGE_AGAIN_MS
    assert schedule.due(later - 1, 100, owns=everything, markers=markers) == PurgeBatch()
    assert schedule.due(later, 100, owns=everything, markers=markers).orders == ["o-1"]


def test_orders_of_partitions_not_owned_are_dropped() -> None:
    schedule = PurgeSchedule(POLICY)
    markers = FinishedOrders({})
    for order_id in ("mine", "theirs"):
        schedule.note(order_id, order_record(OrderStatus.FILLED, order_id=order_id, updated_at=0))
    batch = schedule.due(10**9, 100, owns=lambda order_id: order_id == "mine", markers=markers)
    assert batch.orders == ["mine"]
    schedule.note("mine", None)
    assert schedule.ended == 0  # "theirs" is not asked again


def test_markers_are_forgotten_oldest_first_when_due() -> None:
    schedule = PurgeSchedule(POLICY)
    markers = FinishedOrders({}, on_change=schedule.note_marker)
    for i, ended in enumerate((1_000, 2_000, 3_000)):
        markers.remember(f"o-{i}", Finished("acc", OrderStatus.FILLED, ended))
    assert schedule.remembered == 3
    day = POLICY.dedupe_ms
    assert schedule.due(day + 999, 100, owns=everything, markers=markers).markers == []
    assert schedule.due(day + 2_000, 100, owns=everything, markers=markers).markers == [
        "o-0",
        "o-1",
    ]
    markers.forget("o-0")
    markers.forget("o-1")
    # A marker forgotten meanwhile (by its writer) is dropped when it reaches the front.
    markers.forget("o-2")
    assert schedule.due(day + 10_000, 100, owns=everything, markers=markers).markers == []
    assert schedule.remembered == 0


def test_a_purge_batch_is_read_back_from_a_trigger() -> None:
    batch = PurgeBatch(orders=["o-1"], markers=["o-2"])
    assert PurgeBatch.from_details(batch.model_dump()) == batch
    assert PurgeBatch.from_details({"orders": "o-1"}) is None
    assert PurgeBatch.from_details({}) == PurgeBatch()
