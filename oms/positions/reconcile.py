"""Reconciliation of recorded positions with the positions each venue reports.

Every configured venue is compared, each position with its own venue's figures (a venue's
accounts through its own read-only sessions). Runs on start (partitions assigned), after
every exchange reconnect and every ``positions.monitoring_interval_s``. A difference in size
or average price is confirmed by a second look a moment later (a fill may be on its way
through Kafka), then sent as a ``correction`` command to the position's single writer, which
adopts the exchange's figures, records the correction, flags the position for review and
emits a POSITION_MISMATCH event. A venue that cannot be read is counted and logged; the
others are compared all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from oms.component import Component
from oms.exchange.interface import AccountSession, VenueAccounts, VenuePosition
from oms.positions.math import EPS, close_enough
from oms.positions.state import PositionState
from oms.schemas import DEFAULT_VENUE, now_ms, position_key
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
    venue: str = DEFAULT_VENUE

    @property
    def key(self) -> str:
        return position_key(self.account_id, self.instrument_name, self.venue)

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
    venue: str = DEFAULT_VENUE,
) -> list[Mismatch]:
    """Positions of ``account_id`` at ``venue`` whose size or average price differ between
    the record and the venue."""
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
            out.append(Mismatch(account_id, name, ours_size, ours_avg, theirs, version, venue))
    return out


@dataclass
class VenueChecks:
    """What the reconciliation did at one venue (its part of ``/stats``)."""

    accounts: list[str] = field(default_factory=list)
    checks: int = 0
    mismatches: int = 0
    errors: int = 0
    last_check_ms: int = 0
    last_error: str | None = None


class Reconciler(Component):
    """Periodic and event-driven comparison at every venue of ``venues`` for the accounts
    ``accounts`` names for it (those without credentials at a venue are skipped). ``recorded``
    gives the positions this keeper may correct, at every venue. ``ready`` says whether the
    keeper owns positions, has recovered its tables and has read its input up to the end
    (else a check would see fills in flight as differences)."""

    def __init__(
        self,
        settings: Settings,
        venues: Mapping[str, VenueAccounts],
        accounts: Mapping[str, Sequence[str]],
        recorded: Callable[[], list[PositionState]],
        send_command: Callable[[str, dict[str, Any]], Awaitable[None]],
        ready: Callable[[], Awaitable[bool]],
        owns_key: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__("positions-reconcile")
        self.settings = settings
        self.venues = dict(venues)
        self.recorded = recorded
        self.send_command = send_command
        self.owns_key = owns_key or (lambda key: True)
        self.accounts = {venue: list(accounts.get(venue, ())) for venue in self.venues}
        # Per venue, per account with credentials there: its read-only session.
        self.sessions: dict[str, dict[str, AccountSession]] = {v: {} for v in self.venues}
        self.per_venue = {venue: VenueChecks() for venue in self.venues}
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
        for venue, opener in self.venues.items():
            for account in self.accounts[venue]:

                async def on_reconnect(account: str = account, venue: str = venue) -> None:
                    self.request(f"reconnect:{venue}:{account}")

                session = opener.open(
                    account, name=f"positions-{venue}-{account}", on_reconnect=on_reconnect
                )
                if session is not None:
                    self.sessions[venue][account] = session
            self.per_venue[venue].accounts = list(self.sessions[venue])
        self.spawn(self._loop(), "loop")

    async def on_stop(self) -> None:
        for sessions in self.sessions.values():
            for session in sessions.values():
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

    async def _exchange_positions(self, venue: str, account: str) -> dict[str, VenuePosition]:
        return {p.instrument_name: p for p in await self.sessions[venue][account].positions()}

    def _recorded(self, venue: str, account: str) -> dict[str, PositionState]:
        return {
            s.instrument_name: s
            for s in self.recorded()
            if s.account_id == account and s.venue == venue
        }

    async def _look(self, venue: str, account: str) -> list[Mismatch]:
        exchange = await self._exchange_positions(venue, account)
        found = compare(
            account,
            self._recorded(venue, account),
            exchange,
            self.settings.positions.tolerance,
            venue,
        )
        return [m for m in found if self.owns_key(m.key)]

    async def _check_venue(self, venue: str) -> list[Mismatch]:
        """The confirmed differences at one venue (a difference seen twice, a moment apart,
        with the same figures)."""
        confirmed: list[Mismatch] = []
        for account in list(self.sessions[venue]):
            first = await self._look(venue, account)
            if first:
                await asyncio.sleep(CONFIRM_DELAY_S)
                second = {m.key: m for m in await self._look(venue, account)}
                for m in first:
                    again = second.get(m.key)
                    if again is not None and again.same_exchange_figures(m):
                        confirmed.append(again)
        return confirmed

    async def check_all(self, trigger: str) -> list[Mismatch]:
        """Compare every account at every venue once; send corrections for confirmed
        differences. A venue that cannot be read is counted in its stats and skipped."""
        confirmed: list[Mismatch] = []
        for venue, checks in self.per_venue.items():
            try:
                found = await self._check_venue(venue)
            except Exception as exc:
                checks.errors += 1
                checks.last_error = str(exc)[:300]
                log.warning("positions.reconcile_failed", venue=venue, error=checks.last_error)
                continue
            checks.checks += 1
            checks.last_check_ms = now_ms()
            checks.mismatches += len(found)
            confirmed += found
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
                    "venue": m.venue,
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
        """Totals over every venue (``errors`` counts failed rounds and failed venue looks),
        and each venue's own figures under ``venues``."""
        return {
            "accounts": sorted({a for sessions in self.sessions.values() for a in sessions}),
            "checks": self.checks,
            "mismatches": self.mismatches,
            "errors": self.errors + sum(v.errors for v in self.per_venue.values()),
            "last_check_ms": self.last_check_ms,
            "venues": {
                venue: {
                    "accounts": checks.accounts,
                    "checks": checks.checks,
                    "mismatches": checks.mismatches,
                    "errors": checks.errors,
                    "last_check_ms": checks.last_check_ms,
                    "last_error": checks.last_error,
                }
                for venue, checks in self.per_venue.items()
            },
        }
