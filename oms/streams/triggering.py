"""Where waiting orders are triggered: ticks and the clock run through the trigger engine, and
what fires is sent as an :class:`OrderTrigger` to the ``release`` agent.

The engine itself (:mod:`oms.conditions.engine`) is pure; this loop feeds it. Ticks come from
the :class:`~oms.market.feed.TickFeed`; the clock sleeps exactly until the engine's next
deadline (or until woken by a new order with an earlier one), so a delayed order is released
within milliseconds of its time, not at the next polling round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

import structlog

from oms.component import Component
from oms.conditions.engine import Fired, TriggerEngine
from oms.schemas import MarketTick, now_ms
from oms.schemas.conditions import OrderTrigger, TriggerKind

log = structlog.get_logger(__name__)

# The clock never sleeps longer than this, whatever the engine says (cheap insurance).
MAX_SLEEP_S = 1.0


class TriggerLoop(Component):
    """Drives the engine with ticks and time; publishes what fires. Started, it runs the
    clock (:meth:`run_clock`)."""

    def __init__(
        self, engine: TriggerEngine, publish: Callable[[OrderTrigger], Awaitable[None]]
    ) -> None:
        super().__init__("trigger-loop")
        self._engine = engine
        self._publish = publish
        self._wakeup = asyncio.Event()
        self.published = 0

    async def on_start(self) -> None:
        self.spawn(self.run_clock(), "clock")

    def wake(self) -> None:
        """A new deadline may be earlier than the one the clock sleeps for."""
        self._wakeup.set()

    async def on_ticks(self, ticks: list[MarketTick], warm: bool) -> None:
        """Apply a batch of ticks.

        The ticks are in the market cache already (the feed applied them). Warm-up ticks
        (re-read on start, some from before this worker ran) are not replayed one by one: a
        cross in the past must not fire now. Only the newest of each instrument is evaluated,
        so what holds *now* fires (e.g. a threshold reached while no worker was running).
        """
        engine = self._engine
        batch = ticks
        if warm:
            newest: dict[str, MarketTick] = {}
            for tick in ticks:
                newest[tick.instrument_name] = tick
            batch = list(newest.values())
        fired: list[Fired] = []
        for tick in batch:
            result = engine.on_tick(tick)
            if result:
                fired.extend(result)
        if fired:
            await self.publish(fired)

    async def publish(self, fired: Iterable[Fired]) -> None:
        for item in fired:
            trigger = OrderTrigger(
                order_id=item.order_id,
                kind=TriggerKind(item.kind),
                reason=item.reason,
                details=item.details,
            )
            await self._publish(trigger)
            self.published += 1

    async def run_clock(self) -> None:
        """Release delayed orders and expire old ones on time, until cancelled."""
        while True:
            deadline = self._engine.next_deadline()
            sleep = MAX_SLEEP_S
            if deadline is not None:
                sleep = min(MAX_SLEEP_S, max(0.0, (deadline - now_ms()) / 1000))
            if sleep > 0:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=sleep)
                except TimeoutError:
                    pass
            try:
                fired = self._engine.on_time(now_ms())
                if fired:
                    await self.publish(fired)
            except Exception:
                log.exception("trigger_clock.round_failed")
                await asyncio.sleep(MAX_SLEEP_S)
