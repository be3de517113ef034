"""The one retry policy (oms.backoff): the cap holds, each jitter stays in its bounds, a seeded
generator makes the waits reproducible, and tenacity drives it like the loops do."""

from __future__ import annotations

import itertools
import random

import pytest
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from oms.backoff import Backoff, Jitter

JITTERS: tuple[Jitter, ...] = ("full", "equal", "decorrelated")


def first(policy: Backoff, n: int) -> list[float]:
    return list(itertools.islice(policy.delays(), n))


@pytest.mark.parametrize("jitter", JITTERS)
def test_the_cap_is_never_exceeded(jitter: Jitter) -> None:
    rng = random.Random(1)
    for _ in range(200):
        base = rng.choice([0.0, 0.001, 0.05, 0.2, 1.0, 7.5])
        cap = rng.choice([0.0, 0.01, 0.3, 2.0, 30.0])
        policy = Backoff(base, cap, jitter=jitter, rng=random.Random(rng.random()))
        waits = first(policy, 300)  # far past the point where the exponent saturates
        assert all(0.0 <= w <= cap for w in waits), (base, cap, max(waits))
        assert 0.0 <= policy.delay(10_000) <= cap  # no overflow at absurd attempt numbers


def test_full_jitter_stays_within_the_exponential_window() -> None:
    policy = Backoff(0.1, 5.0, rng=random.Random(2))
    for attempt in range(1, 12):
        window = min(5.0, 0.1 * 2 ** (attempt - 1))
        waits = [policy.delay(attempt) for _ in range(500)]
        assert all(0.0 <= w <= window for w in waits)
        # Full: the whole window is used, down to near zero.
        assert min(waits) < 0.1 * window and max(waits) > 0.9 * window


def test_equal_jitter_keeps_at_least_half_of_each_step_so_waits_grow() -> None:
    policy = Backoff(0.02, 0.4, jitter="equal", rng=random.Random(3))
    for attempt in range(1, 12):
        window = policy.window(attempt)
        waits = [policy.delay(attempt) for _ in range(500)]
        assert all(window / 2 <= w <= window for w in waits)
    for _ in range(200):
        waits = first(policy, 10)
        # Until the cap, each wait is at least the previous step: never back to the start.
        assert all(b >= policy.window(i + 1) / 2 for i, b in enumerate(waits))
        assert sum(waits) >= 0.01 + 0.02 + 0.04 + 0.08 + 0.16 + 0.2 * 5


def test_decorrelated_jitter_never_goes_below_base_and_grows_from_the_previous_wait() -> None:
    policy = Backoff(0.2, 10.0, jitter="decorrelated", rng=random.Random(4))
    for _ in range(200):
        waits = first(policy, 30)
        assert 0.2 <= waits[0] <= 0.6  # uniform(base, 3 * base)
        for previous, wait in itertools.pairwise(waits):
            assert 0.2 <= wait <= min(10.0, 3 * previous)
    # base == cap: a fixed delay, whatever the draw.
    assert set(first(Backoff(0.6, 0.6, jitter="decorrelated"), 20)) == {0.6}


@pytest.mark.parametrize("jitter", JITTERS)
def test_a_zero_base_never_waits(jitter: Jitter) -> None:
    assert set(first(Backoff(0.0, 10.0, jitter=jitter), 20)) == {0.0}


@pytest.mark.parametrize("jitter", JITTERS)
def test_seeded_generators_give_the_same_waits(jitter: Jitter) -> None:
    a = first(Backoff(0.05, 3.0, jitter=jitter, rng=random.Random(42)), 50)
    b = first(Backoff(0.05, 3.0, jitter=jitter, rng=random.Random(42)), 50)
    c = first(Backoff(0.05, 3.0, jitter=jitter, rng=random.Random(43)), 50)
    assert a == b
    assert a != c


def test_a_new_sequence_starts_the_escalation_over() -> None:
    policy = Backoff(1.0, 60.0, jitter="equal", rng=random.Random(5))
    escalated = first(policy, 6)
    fresh = next(policy.delays())
    assert escalated[-1] >= 16.0 and 0.5 <= fresh <= 1.0


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(-1.0, 1.0)
    with pytest.raises(ValueError):
        Backoff(1.0, -1.0)
    with pytest.raises(ValueError):
        Backoff(1.0, 1.0, jitter="none")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Backoff(1.0, 2.0).delay(0)


@pytest.mark.parametrize("jitter", JITTERS)
async def test_as_tenacity_wait_it_gives_the_sequence_of_delays(jitter: Jitter) -> None:
    # tenacity passes the attempt number and the previous wait: the same waits as delays().
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    calls = 0
    retrying = AsyncRetrying(
        wait=Backoff(0.1, 2.0, jitter=jitter, rng=random.Random(7)),
        stop=stop_after_attempt(9),
        retry=retry_if_exception_type(ConnectionError),
        sleep=sleep,
        reraise=True,
    )
    with pytest.raises(ConnectionError):
        async for attempt in retrying:
            with attempt:
                calls += 1
                raise ConnectionError("down")
    assert calls == 9
    assert slept == first(Backoff(0.1, 2.0, jitter=jitter, rng=random.Random(7)), 8)
