"""What the risk engine knows, per worker: controls, positions, open orders, P&L.

Fed by :mod:`oms.risk.feeds` from topics every worker reads fully, plus this worker's own
accepted orders at once (so its own consecutive orders see each other without waiting for the
round trip through Kafka). Prices are not kept here: the engine reads marks and index prices
from the worker's market cache (:mod:`oms.market.cache`). Plain data, no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from oms.schemas import Direction, InstrumentSpec, OrderRecord, PositionRecord
from oms.schemas.risk import AccountControls, TradingState
from oms.settings import RiskSettings

DAY_MS = 86_400_000


def utc_day(ms: int) -> int:
    """Days since the epoch (UTC) of a millisecond timestamp."""
    return ms // DAY_MS


@dataclass
class OpenOrder:
    """The part of a live order that counts against limits."""

    account_id: str
    instrument_name: str
    direction: Direction
    remaining: float
    version: int


@dataclass
class DailyPnl:
    """One account's P&L today on one instrument (in its settlement currency)."""

    day: int
    realized: float = 0.0  # realized P&L minus fees of today's position records
    unrealized: float = 0.0  # from the latest record

    @property
    def total(self) -> float:
        return self.realized + self.unrealized


class RiskBook:
    """In-memory risk state of one worker."""

    def __init__(
        self,
        settings: RiskSettings,
        instrument: Callable[[str | None], InstrumentSpec | None],
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._settings = settings
        self.instrument = instrument
        self._clock_ms = clock_ms
        self._controls: dict[str, AccountControls] = {}
        self.positions: dict[tuple[str, str], float] = {}
        # Per (account, instrument): the size at each venue. Risk limits see the account's
        # whole exposure to an instrument, wherever it trades: the sum.
        self._venue_sizes: dict[tuple[str, str], dict[str, float]] = {}
        self._positions_by_account: dict[str, dict[str, float]] = {}
        self._open: dict[str, OpenOrder] = {}
        self._open_by_account: dict[str, set[str]] = {}
        # Unfilled amount of live orders per (account, instrument, direction): O(1) checks.
        self._open_remaining: dict[tuple[str, str, Direction], float] = {}
        # Per account, per instrument: the currency is resolved when asked, since records
        # read at start may arrive before the instrument catalog is loaded.
        self._pnl: dict[str, dict[str, DailyPnl]] = {}
        self._seen_position_records: set[str] = set()

    # -- controls ----------------------------------------------------------------------------

    def controls_of(self, account_id: str) -> AccountControls:
        """Runtime controls of the account, else its settings entry, else the defaults."""
        runtime = self._controls.get(account_id)
        if runtime is not None:
            return runtime
        configured = self._settings.accounts.get(account_id)
        if configured is not None:
            return configured.model_copy(update={"account_id": account_id})
        return AccountControls(
            account_id=account_id,
            permissions=self._settings.default_permissions,
            limits=self._settings.default_limits,
        )

    def apply_controls(self, controls: AccountControls) -> None:
        current = self._controls.get(controls.account_id)
        if current is None or controls.version >= current.version:
            self._controls[controls.account_id] = controls

    def drop_controls(self, account_id: str) -> bool:
        """Forget the account's runtime controls (its settings entry, else the defaults, apply
        again); False if it had none."""
        return self._controls.pop(account_id, None) is not None

    def accounts_with_controls(self) -> list[AccountControls]:
        return list(self._controls.values())

    def effective_state(self, account_id: str) -> tuple[TradingState, str]:
        """The trading state to enforce now and why: the controls' state, made ``reducing``
        as soon as this worker sees the daily loss limit reached (unless a human resumed the
        account today)."""
        controls = self.controls_of(account_id)
        state = controls.trading_state
        if state is TradingState.ACTIVE:
            breached = self.daily_loss_breach(account_id)
            resumed_today = controls.resumed_at is not None and utc_day(
                controls.resumed_at
            ) == utc_day(self._clock_ms())
            if breached and not resumed_today:
                return TradingState.REDUCING, breached
        return state, controls.state_reason

    # -- positions and P&L -------------------------------------------------------------------

    def position(self, account_id: str, instrument_name: str) -> float:
        return self.positions.get((account_id, instrument_name), 0.0)

    def positions_of(self, account_id: str) -> dict[str, float]:
        """Position size per instrument of one account."""
        return self._positions_by_account.get(account_id, {})

    def apply_position(self, record: PositionRecord) -> None:
        """Latest size per position; today's realized P&L (minus fees) and latest unrealized
        per settlement currency. A record seen twice (redelivery) counts once."""
        if record.record_id in self._seen_position_records:
            return
        self._seen_position_records.add(record.record_id)
        key = (record.account_id, record.instrument_name)
        sizes = self._venue_sizes.setdefault(key, {})
        sizes[record.venue] = record.size
        size = sum(sizes.values())
        self.positions[key] = size
        self._positions_by_account.setdefault(record.account_id, {})[record.instrument_name] = size
        today = utc_day(self._clock_ms())
        per_instrument = self._pnl.setdefault(record.account_id, {})
        pnl = per_instrument.get(record.instrument_name)
        if pnl is None or pnl.day != today:
            unrealized = pnl.unrealized if pnl is not None else 0.0
            pnl = per_instrument[record.instrument_name] = DailyPnl(today, 0.0, unrealized)
        if utc_day(record.timestamp) == today:
            pnl.realized += record.realized_pnl - record.fee
        if record.unrealized_pnl is not None:
            pnl.unrealized = record.unrealized_pnl

    def daily_loss(self, account_id: str, currency: str) -> float:
        """Today's loss (positive) in a settlement currency; 0 when in profit."""
        today = utc_day(self._clock_ms())
        total = 0.0
        for name, pnl in self._pnl.get(account_id, {}).items():
            spec = self.instrument(name)
            if spec is None or (spec.settlement_currency or spec.base_currency) != currency:
                continue
            total += pnl.total if pnl.day == today else pnl.unrealized
        return max(0.0, -total)

    def daily_loss_breach(self, account_id: str) -> str:
        """A description of the first daily loss limit reached, or ``""``."""
        limits = self.controls_of(account_id).limits.max_daily_loss
        for currency, limit in limits.items():
            loss = self.daily_loss(account_id, currency)
            if loss >= limit:
                return f"daily loss {loss:g} {currency} reached the limit {limit:g}"
        return ""

    # -- orders ------------------------------------------------------------------------------

    def apply_order(self, order: OrderRecord) -> None:
        """Track live orders (any non-terminal status) and forget finished ones."""
        known = self._open.get(order.order_id)
        if known is not None and order.version < known.version:
            return  # an older snapshot than the one we have
        if known is not None:
            self._add_remaining(known, -known.remaining)
        if order.status.is_terminal:
            if known is not None:
                del self._open[order.order_id]
                self._open_by_account.get(order.account_id, set()).discard(order.order_id)
            return
        live = OpenOrder(
            order.account_id,
            order.instrument_name,
            order.direction,
            max(0.0, order.amount - order.filled_amount),
            order.version,
        )
        self._open[order.order_id] = live
        self._add_remaining(live, live.remaining)
        self._open_by_account.setdefault(order.account_id, set()).add(order.order_id)

    def forget_order(self, order_id: str) -> None:
        """Stop counting an order (its table entry was deleted)."""
        known = self._open.pop(order_id, None)
        if known is not None:
            self._add_remaining(known, -known.remaining)
            self._open_by_account.get(known.account_id, set()).discard(order_id)

    def _add_remaining(self, order: OpenOrder, delta: float) -> None:
        key = (order.account_id, order.instrument_name, order.direction)
        self._open_remaining[key] = self._open_remaining.get(key, 0.0) + delta

    def open_order_count(self, account_id: str, excluding: str | None = None) -> int:
        ids = self._open_by_account.get(account_id, set())
        return len(ids) - (1 if excluding in ids else 0)

    def open_remaining(
        self, account_id: str, instrument_name: str, direction: Direction, excluding: str
    ) -> float:
        """Unfilled amount of the account's other live orders on one side of an instrument."""
        total = self._open_remaining.get((account_id, instrument_name, direction), 0.0)
        own = self._open.get(excluding)
        if own is not None and own.instrument_name == instrument_name:
            if own.direction is direction and own.account_id == account_id:
                total -= own.remaining
        return max(0.0, total)
