"""Reconciliation of recorded positions with the positions the exchange reports.

Runs on start (partitions assigned), after every exchange reconnect and every
``positions.monitoring_interval_s``. A difference in size or average price is confirmed by a
second look a moment later (a fill may be on its way through Kafka), then sent as a
``correction`` command to the position's single writer, which adopts the exchange's figures,
records the correction, flags the position for review and emits a POSITION_MISMATCH event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from oms.component import Component
from oms.exchange.interface import AccountSession, VenueAccounts, VenuePosition
from oms.positions.math import EPS, close_enough
from oms.positions.state import PositionState
from oms.schemas import now_ms, position_key
from oms.settings import Settings

log = structlog.get_logger(__name__)

# Wait this long before confirming a difference (fills in flight through Kafka settle).
CONFIRM_DELAY_S = 1.0


@dataclass(frozen=True)
class Mismatch:
    account_id: str
    instrument_name: str
    recorded_size: float
    recorded_average_price: float
    exchange: VenuePosition
    recorded_version: int = 0

    @property
    def key(self) -> str:
        return position_key(self.account_id, self.instrument_name)

    def same_exchange_figures(self, other: Mismatch) -> bool:
        return (
            close_enough(self.exchange_size, other.exchange_size)
            and self.recorded_version == other.recorded_version
        )

    @property
    def exchange_size(self) -> float:
        return self.exchange.size


def compare(
    account_id: str,
    recorded: dict[str, PositionState],
    exchange: dict[str, VenuePosition],
    tolerance: float,
) -> list[Mismatch]:
    """Positions whose size or average price differ between the record and the exchange."""
    out = []
    for name in sorted(set(recorded) | set(exchange)):
        state = recorded.get(name)
        ours_size = state.size if state else 0.0
        ours_avg = state.average_price if state else 0.0
        theirs = exchange.get(name) or VenuePosition(name, 0.0, 0.0)
        size, avg = theirs.size, theirs.average_price
        same_size = close_enough(ours_size, size, rel=tolerance, abs_=EPS)
        same_avg = abs(size) < EPS or close_enough(ours_avg, avg, rel=tolerance, abs_=1e-9)
        if not (same_size and same_avg):
            version = state.version if state else 0
            out.append(Mismatch(account_id, name, ours_size, ours_avg, theirs, version))
    return out


class Reconciler(Component):
    """Periodic and event-driven comparison for ``accounts`` (those without credentials at
    the venue are skipped). ``ready`` says whether the keeper owns positions, has recovered
    its tables and has read its input up to the end (else a check would see fills in flight
    as differences)."""

    def __init__(
        self,
        settings: Settings,
        venue: VenueAccounts,
        accounts: Sequence[str],
        recorded: Callable[[], list[PositionState]],
        send_command: Callable[[str, dict[str, Any]], Awaitable[None]],
        ready: Callable[[], Awaitable[bool]],
        owns_key: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__("positions-reconcile")
        self.settings = settings
        self.venue = venue
        self.recorded = recorded
        self.send_command = send_command
        self.owns_key = owns_key or (lambda key: True)
        self.accounts = list(accounts)
        self.sessions: dict[str, AccountSession] = {}
        self._wake = asyncio.Event()
        self._trigger = "start"
        self._ready = ready
        self.checks = 0
        self.mismatches = 0
        self.errors = 0
        self.last_check_ms = 0

    def request(self, trigger: str) -> None:
        """Ask for a check as soon as possible."""
        self._trigger = trigger
        self._wake.set()

    async def on_start(self) -> None:
        for account in self.accounts:

            async def on_reconnect(account: str = account) -> None:
                self.request(f"reconnect:{account}")

            session = self.venue.open(
                account, name=f"positions-{account}", on_reconnect=on_reconnect
            )
            if session is not None:
                self.sessions[account] = session
        self.spawn(self._loop(), "loop")

    async def on_stop(self) -> None:
        for session in self.sessions.values():
            with contextlib.suppress(Exception):
                await session.close()

    async def _loop(self) -> None:
        interval = self.settings.positions.monitoring_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            trigger = self._trigger if self._wake.is_set() else "interval"
            self._wake.clear()
            self._trigger = "interval"
            if not await self._ready():
                # Try again soon rather than a whole interval later.
                self._trigger = trigger
                await asyncio.sleep(CONFIRM_DELAY_S)
                self._wake.set()
                continue
            try:
                await self.check_all(trigger)
            except Exception as exc:  # keep reconciling: the next round may succeed
                self.errors += 1
                log.warning("positions.reconcile_failed", error=str(exc)[:300])

    async def _exchange_positions(self, account: str) -> dict[str, VenuePosition]:
        return {p.instrument_name: p for p in await self.sessions[account].positions()}

    def _recorded(self, account: str) -> dict[str, PositionState]:
        return {s.instrument_name: s for s in self.recorded() if s.account_id == account}

    async def _look(self, account: str) -> list[Mismatch]:
        exchange = await self._exchange_positions(account)
        found = compare(
            account, self._recorded(account), exchange, self.settings.positions.tolerance
        )
        return [m for m in found if self.owns_key(m.key)]

    async def check_all(self, trigger: str) -> list[Mismatch]:
        """Compare every account once; send corrections for confirmed differences."""
        confirmed: list[Mismatch] = []
        for account in list(self.sessions):
            first = await self._look(account)
            if first:
                await asyncio.sleep(CONFIRM_DELAY_S)
                second = {m.key: m for m in await self._look(account)}
                for m in first:
                    again = second.get(m.key)
                    if again is not None and again.same_exchange_figures(m):
                        confirmed.append(again)
        self.checks += 1
        self.last_check_ms = now_ms()
        for m in confirmed:
            self.mismatches += 1
            await self.send_command(
                m.key,
                {
                    "type": "correction",
                    "account_id": m.account_id,
                    "instrument_name": m.instrument_name,
                    "size": m.exchange_size,
                    "average_price": m.exchange.average_price,
                    "mark_price": m.exchange.mark_price,
                    "floating_profit_loss": m.exchange.floating_pnl,
                    "realized_profit_loss": m.exchange.realized_pnl,
                    "trigger": trigger,
                    "recorded_version": m.recorded_version,
                },
            )
        return confirmed

    def stats(self) -> dict[str, Any]:
        return {
            "accounts": list(self.sessions),
            "checks": self.checks,
            "mismatches": self.mismatches,
            "errors": self.errors,
            "last_check_ms": self.last_check_ms,
        }
