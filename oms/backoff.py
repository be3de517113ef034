"""The one retry policy: exponential backoff with jitter, and a cap that is never exceeded.

Every retry, reconnect and restart loop of the system waits through a :class:`Backoff`.

* Loops that retry one call until it succeeds pass it to tenacity as the wait strategy
  (``AsyncRetrying(wait=backoff, ...)``): tenacity hands it the attempt number and the
  previous wait.
* Loops whose shape tenacity does not fit (a reconnect supervisor whose escalation outlives
  one session, a process supervisor that schedules restarts instead of sleeping, a submit
  that looks the order up by label before every resend) draw their waits from
  :meth:`Backoff.delays` or :meth:`Backoff.delay`.

The jitters (named as in the AWS Architecture Blog's "Exponential Backoff and Jitter"), with
``window = min(cap, base * 2 ** (attempt - 1))``:

``full``
    uniform(0, window). Spreads best many clients that failed together (contention for one
    resource); a single wait may be close to zero.
``equal``
    uniform(window / 2, window). Half the window is guaranteed, so waits grow every attempt:
    a connection that fails right after it came up cannot hammer the other side.
``decorrelated``
    uniform(base, 3 * previous wait), starting from ``base``. Never shorter than ``base``,
    so ``base`` is a true minimum spacing of attempts (and ``base == cap`` a fixed delay).

Whatever the jitter, a wait is never longer than ``cap``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Literal

from tenacity import RetryCallState
from tenacity.wait import wait_base

Jitter = Literal["full", "equal", "decorrelated"]

# 2**64 times any positive base is past every sensible cap; the exponent stops growing there
# so a long outage cannot overflow the float.
_MAX_DOUBLINGS = 64


class Backoff(wait_base):
    """Waits between attempts: exponential from ``base`` seconds, jittered, at most ``cap``.

    ``rng`` makes the waits reproducible (tests); by default each policy has its own
    unseeded generator.
    """

    def __init__(
        self,
        base: float,
        cap: float,
        *,
        jitter: Jitter = "full",
        rng: random.Random | None = None,
    ) -> None:
        if base < 0 or cap < 0:
            raise ValueError(f"backoff base and cap must be >= 0 (got {base}, {cap})")
        if jitter not in ("full", "equal", "decorrelated"):
            raise ValueError(f"unknown jitter {jitter!r}")
        self.base = float(base)
        self.cap = float(cap)
        self.jitter: Jitter = jitter
        self._rng = rng or random.Random()

    def __repr__(self) -> str:
        return f"Backoff(base={self.base}, cap={self.cap}, jitter={self.jitter!r})"

    def window(self, attempt: int) -> float:
        """The exponential step of ``attempt`` (1 = after the first failure), capped."""
        if attempt < 1:
            raise ValueError(f"attempts count from 1 (got {attempt})")
        return min(self.cap, self.base * 2.0 ** min(attempt - 1, _MAX_DOUBLINGS))

    def delay(self, attempt: int, previous: float = 0.0) -> float:
        """The wait after failed attempt number ``attempt`` (1 = the first failure).

        ``previous`` is the wait drawn before this one (0 for none); only the decorrelated
        jitter grows from it."""
        if self.jitter == "decorrelated":
            if attempt < 1:
                raise ValueError(f"attempts count from 1 (got {attempt})")
            grown = 3.0 * (previous if previous > 0 else self.base)
            wait = self._rng.uniform(self.base, max(self.base, grown))
        else:
            window = self.window(attempt)
            low = window / 2 if self.jitter == "equal" else 0.0
            wait = self._rng.uniform(low, window)
        # uniform() may round one ulp past its upper bound; the cap is a promise.
        return max(0.0, min(self.cap, wait))

    def delays(self) -> Iterator[float]:
        """An endless fresh sequence of waits: attempt 1, 2, 3, ... (start a new one to
        reset the escalation)."""
        previous = 0.0
        for attempt in itertools.count(1):
            previous = self.delay(attempt, previous)
            yield previous

    def __call__(self, retry_state: RetryCallState) -> float:
        """tenacity's wait strategy: the wait after the attempt that just failed."""
        # upcoming_sleep still holds the wait tenacity took before this attempt (0 at first).
        return self.delay(retry_state.attempt_number, retry_state.upcoming_sleep)
