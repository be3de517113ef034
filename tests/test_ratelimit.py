"""The one token bucket (oms.ratelimit): refill and cap, enforcing (take) for the paper
exchange's 10028, pacing (reserve/acquire) for the Deribit client and notification channels,
and the Deribit credit model built from it."""

from __future__ import annotations

import asyncio

import pytest

from oms.exchange.deribit.rate_limit import RateLimitConfig, RateLimiter
from oms.exchange.paper.ratelimit import CREDITS_COST, CREDITS_MAX
from oms.exchange.paper.ratelimit import RateLimiter as PaperLimiter
from oms.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_starts_full_refills_at_the_rate_and_never_past_the_capacity() -> None:
    clock = Clock()
    b = TokenBucket(rate=4, capacity=10, clock=clock)
    assert b.available == 10
    assert b.take(10) and b.available == 0
    clock.now = 1.0
    assert b.available == pytest.approx(4.0)
    clock.now = 1_000.0
    assert b.available == 10


def test_take_spends_all_or_nothing() -> None:
    clock = Clock()
    b = TokenBucket(rate=1, capacity=3, clock=clock)
    assert b.take(2)
    assert not b.take(2)  # 1 left: refused, and nothing is spent
    assert b.available == pytest.approx(1.0)
    clock.now = 1.0
    assert b.take(2) and b.available == pytest.approx(0.0)


def test_per_period_is_count_tokens_per_period() -> None:
    b = TokenBucket.per_period(20, 60.0)
    assert b.capacity == 20 and b.rate == pytest.approx(1 / 3)


def test_token_bucket_reserves_into_debt() -> None:
    now = [0.0]
    b = TokenBucket(rate=10, capacity=2, clock=lambda: now[0])
    assert b.reserve(1) == 0 and b.reserve(1) == 0
    assert b.reserve(1) == pytest.approx(0.1)
    assert b.reserve(1) == pytest.approx(0.2)
    now[0] = 0.2
    assert b.available == pytest.approx(0.0)
    b.refund(1)
    assert b.available == pytest.approx(1.0)
    now[0] = 100.0
    assert b.available == 2  # capped


def test_drain_empties_the_bucket_but_keeps_debts() -> None:
    clock = Clock()
    b = TokenBucket(rate=1, capacity=5, clock=clock)
    b.drain()
    assert b.available == 0 and b.delay_for(1) == pytest.approx(1.0)
    b.reserve(2)
    b.drain()
    assert b.available == pytest.approx(-2.0)  # the waiting reservation is not forgiven


def test_debit_charges_without_asking() -> None:
    clock = Clock()
    b = TokenBucket(rate=1, capacity=1, clock=clock)
    b.debit(3)
    assert b.available == pytest.approx(-2.0) and not b.take(1)


async def test_acquire_waits_in_order_and_refuses_past_max_wait() -> None:
    b = TokenBucket(rate=20, capacity=1)
    assert await b.acquire()
    assert b.waits == 0
    order: list[int] = []

    async def one(i: int) -> None:
        assert await b.acquire()
        order.append(i)

    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(one(i) for i in range(3)))
    # One token per 50 ms, first come first served.
    assert order == [0, 1, 2]
    assert loop.time() - started >= 0.14
    assert b.waits == 3 and b.wait_seconds == pytest.approx(0.05 + 0.10 + 0.15, abs=0.02)
    assert not await b.acquire(max_wait=0.01)
    assert b.available > -0.5  # the refusal reserved nothing


async def test_a_cancelled_acquire_gives_its_tokens_back() -> None:
    b = TokenBucket(rate=1, capacity=1)
    assert await b.acquire()
    waiter = asyncio.ensure_future(b.acquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert b.available > -0.5


def test_invalid_buckets_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, capacity=1)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, capacity=0)


def test_the_deribit_credit_model_charges_per_method() -> None:
    clock = Clock()
    config = RateLimitConfig(
        credits_max=1000, credits_refill_per_s=100, credits_cost=400,
        matching_rate_per_s=2, matching_burst=3, headroom=0,
    )  # fmt: skip
    lim = RateLimiter(config, clock=clock)
    # Non-matching-engine requests cost credits_cost credits of the credit pool.
    assert lim.delay_for("private/get_order_state") == 0
    lim.debit("private/get_order_state")
    lim.debit("public/get_time")
    assert lim.credits.available == pytest.approx(200)
    assert lim.delay_for("private/get_positions") == pytest.approx(2.0)  # 200 short at 100/s
    # Matching-engine requests cost one token of the matching bucket.
    for _ in range(3):
        lim.debit("private/buy")
    assert lim.matching.available == pytest.approx(0) and lim.credits.available == 200
    assert lim.delay_for("private/cancel") == pytest.approx(0.5)


def test_the_paper_exchange_refuses_what_the_account_cannot_pay_now() -> None:
    lim = PaperLimiter(tier=4)  # 5 matching-engine requests/s, burst 20
    assert all(lim.allow(matching_engine=True) for _ in range(20))
    assert not lim.allow(matching_engine=True)  # -> 10028 too_many_requests
    allowed = 0
    while lim.allow(matching_engine=False) and allowed <= CREDITS_MAX:
        allowed += 1
    # The pool's worth of requests (the refill during this loop adds at most one or two).
    assert CREDITS_MAX // CREDITS_COST <= allowed <= CREDITS_MAX // CREDITS_COST + 2
