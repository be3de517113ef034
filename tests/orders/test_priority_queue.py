"""Priority queues: order, removal, statistics."""

from __future__ import annotations

from oms.orders.priority_queue import PriorityQueues
from oms.schemas import Direction, OrderRecord, OrderStatus, OrderType, Priority


def order(n: int, priority: str, account: str = "a", at: int = 1_000, **kw: object) -> OrderRecord:
    return OrderRecord(
        order_id=f"o-{n}",
        request_id=f"r-{n}",
        account_id=account,
        instrument_name="BTC-PERPETUAL",
        direction=Direction.BUY,
        order_type=OrderType.LIMIT,
        amount=10,
        price=100.0,
        priority=Priority(priority),
        status=OrderStatus.QUEUED,
        queued_at=at,
        **kw,  # type: ignore[arg-type]
    )


def drain(queues: PriorityQueues, account: str = "a") -> list[str]:
    out = []
    while (item := queues.pop(account)) is not None:
        out.append(item.order_id)
    return out


def test_priority_then_arrival_even_within_one_millisecond() -> None:
    queues = PriorityQueues(["high", "normal", "low"])
    for n, p in enumerate(["low", "normal", "low", "high", "normal", "high"]):
        queues.push(order(n, p))
    assert drain(queues) == ["o-3", "o-5", "o-1", "o-4", "o-0", "o-2"]


def test_reduce_only_counts_as_high_when_configured() -> None:
    queues = PriorityQueues(["high", "normal", "low"], reduce_only_as_high=True)
    queues.push(order(1, "normal"))
    queues.push(order(2, "low", reduce_only=True))
    assert drain(queues) == ["o-2", "o-1"]


def test_accounts_are_separate_and_removal_is_honoured() -> None:
    queues = PriorityQueues(["high", "normal", "low"])
    queues.push(order(1, "normal", account="a"))
    queues.push(order(2, "high", account="b"))
    queues.push(order(3, "low", account="a"))
    assert not queues.push(order(3, "low", account="a"))  # already queued
    assert queues.remove("o-1") is not None and queues.remove("o-1") is None
    assert sorted(queues.accounts()) == ["a", "b"]
    assert drain(queues, "a") == ["o-3"]
    assert drain(queues, "b") == ["o-2"]
    assert len(queues) == 0


def test_statistics() -> None:
    queues = PriorityQueues(["high", "normal", "low"])
    queues.push(order(1, "normal", at=1_000))
    queues.push(order(2, "normal", at=3_000))
    queues.push(order(3, "high", at=4_000))
    queues.pop("a")
    stats = queues.statistics(now_ms=5_000)
    assert stats["depth"] == {"high": 0, "normal": 2, "low": 0}
    assert stats["oldest_age_ms"] == {"high": None, "normal": 4_000, "low": None}
    assert stats["enqueued_total"] == 3 and stats["dequeued_total"] == 1
    assert stats["dequeue_rate_per_s"] > 0
