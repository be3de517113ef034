"""The deadline index the worker's timers pop from, against a brute-force scan, and the set of
orders in a status."""

from __future__ import annotations

import random

from oms.orders.indexes import DeadlineIndex, OrdersInStatus
from oms.schemas import OrderStatus
from tests.orders.factories import order_record


def test_keys_come_out_in_deadline_order_and_only_when_due() -> None:
    index: DeadlineIndex[str] = DeadlineIndex()
    index.schedule("c", 30)
    index.schedule("a", 10)
    index.schedule("b", 20)
    assert index.next_deadline() == 10
    assert index.pop_due(5) == []
    assert index.pop_due(20) == ["a", "b"]
    assert len(index) == 1 and "c" in index and "a" not in index
    assert index.pop_due(100) == ["c"]
    assert index.next_deadline() is None


def test_a_moved_or_discarded_key_is_skipped_lazily() -> None:
    index: DeadlineIndex[str] = DeadlineIndex()
    index.schedule("a", 10)
    index.schedule("b", 20)
    index.schedule("a", 50)  # moved later: its old entry must not come out at 10
    index.discard("b")
    assert index.deadline("a") == 50 and index.deadline("b") is None
    assert index.next_deadline() == 50
    assert index.pop_due(40) == []
    assert index.pop_due(50) == ["a"]
    index.schedule("c", 5)
    index.schedule("c", 1)  # moved earlier
    assert index.pop_due(1) == ["c"]
    assert index.pop_due(100) == []


def test_limit_takes_the_earliest_and_leaves_the_rest_due() -> None:
    index: DeadlineIndex[str] = DeadlineIndex()
    for i in range(10):
        index.schedule(f"k{i}", 100 - i)
    assert index.pop_due(1_000, limit=3) == ["k9", "k8", "k7"]
    assert len(index) == 7
    assert index.pop_due(1_000) == [f"k{i}" for i in range(6, -1, -1)]


def test_stale_entries_do_not_pile_up() -> None:
    index: DeadlineIndex[str] = DeadlineIndex()
    for round_ in range(1_000):
        for key in ("a", "b", "c"):
            index.schedule(key, round_)
    assert len(index) == 3
    assert len(index._heap) <= 2 * 3 + 64 + 1  # compacted as it goes


def test_random_operations_match_a_brute_force_scan() -> None:
    rng = random.Random(7)
    index: DeadlineIndex[int] = DeadlineIndex()
    truth: dict[int, int] = {}
    now = 0
    for _ in range(20_000):
        op = rng.random()
        key = rng.randrange(200)
        if op < 0.55:
            at = now + rng.randrange(-5, 100)
            index.schedule(key, at)
            truth[key] = at
        elif op < 0.7:
            index.discard(key)
            truth.pop(key, None)
        else:
            now += rng.randrange(0, 20)
            limit = rng.choice([None, 1, 3])
            due = sorted((at, k) for k, at in truth.items() if at <= now)
            # Ties keep the order in which they were scheduled: compare deadlines only.
            got = index.pop_due(now, limit)
            wanted = due if limit is None else due[:limit]
            assert [truth[k] for k in got] == [at for at, _ in wanted]
            assert {k for k in got} <= {k for _, k in due}
            for k in got:
                del truth[k]
        assert len(index) == len(truth)
        assert index.next_deadline() == min(truth.values(), default=None)


def test_orders_in_status_follow_every_write() -> None:
    live = OrdersInStatus(frozenset({OrderStatus.OPEN, OrderStatus.SUBMITTED}))
    live.note("o-1", order_record(OrderStatus.SUBMITTED, order_id="o-1"))
    live.note("o-2", order_record(OrderStatus.OPEN, order_id="o-2"))
    live.note("o-3", order_record(OrderStatus.QUEUED, order_id="o-3"))
    assert set(live) == {"o-1", "o-2"}
    live.note("o-1", order_record(OrderStatus.FILLED, order_id="o-1"))
    live.note("o-2", None)  # left the table
    assert set(live) == set() and len(live) == 0
    live.note("o-4", order_record(OrderStatus.OPEN, order_id="o-4"))
    live.clear()
    assert "o-4" not in live
