"""Account permissions, risk limits and trading state.

The latest :class:`AccountControls` of each account lives on the compacted
``oms.risk-controls`` topic (key: account id); every change is also appended to
``oms.risk-audit`` as a :class:`RiskAuditRecord` (who changed what, from what, to what).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field

from oms.schemas.base import Record, now_ms

# Limits are positive, finite numbers; None means "no limit".
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(gt=0)]
CurrencyCode = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9]+$")]


class TradingState(StrEnum):
    """NautilusTrader's risk-engine trading states."""

    ACTIVE = "active"  # everything the limits allow
    REDUCING = "reducing"  # only orders that reduce a position (and cancels)
    HALTED = "halted"  # nothing but cancels


class AccountPermissions(Record):
    """What an account may trade at all."""

    trading_enabled: bool = True
    # Read-only accounts may not submit, amend or cancel (they can read their orders).
    read_only: bool = False
    # Deribit instrument kinds ("future", "option", "spot", ...); empty means any.
    allowed_kinds: list[str] = Field(default_factory=list)
    # Base currencies ("BTC", "ETH", ...); empty means any.
    allowed_currencies: list[CurrencyCode] = Field(default_factory=list)
    # The Deribit sub-account (secrets-store entry) whose key pair executes this account's
    # orders; None means the entry named like the account.
    exchange_account: str | None = None


class AccountLimits(Record):
    """Pre-trade limits of an account. ``None`` disables a limit."""

    # One order, in the instrument's amount unit (USD for inverse perpetuals/futures).
    max_order_amount: PositiveFloat | None = None
    # One order, in USD notional.
    max_order_notional: PositiveFloat | None = None
    # Position per instrument after the order (and the account's other open orders on the
    # same side) would fill, in the instrument's amount unit.
    max_position: PositiveFloat | None = None
    # USD notional of all positions in instruments of one base currency, after the fill.
    max_position_notional_per_currency: dict[CurrencyCode, PositiveFloat] = Field(
        default_factory=dict
    )
    max_open_orders: PositiveInt | None = None
    # Fat-finger guard: a limit price at most this many percent from the mark price.
    price_band_pct: PositiveFloat | None = None
    # Loss today (UTC), realized minus fees plus unrealized, per settlement currency; reaching
    # it switches the account to ``reducing``.
    max_daily_loss: dict[CurrencyCode, PositiveFloat] = Field(default_factory=dict)


class AccountControls(Record):
    """Everything the risk engine knows about one account, as set by settings or operators."""

    account_id: str = ""  # filled from the key when given per account in settings
    permissions: AccountPermissions = Field(default_factory=AccountPermissions)
    limits: AccountLimits = Field(default_factory=AccountLimits)
    trading_state: TradingState = TradingState.ACTIVE
    # When halting: cancel the account's open orders too.
    cancel_open_orders: bool = False
    # Why the state is what it is ("operator", "daily_loss", ...).
    state_reason: str = ""
    version: int = 0
    updated_by: str = "settings"
    updated_at: int = Field(default_factory=now_ms)
    # When a human last resumed the account: automatic switches do not undo it the same day.
    resumed_at: int | None = None


class RiskAuditRecord(Record):
    """One change of an account's controls: who, when, what, before and after."""

    audit_id: str
    account_id: str
    actor: str
    action: str  # "limits", "permissions", "halt", "reduce", "resume", "auto:<reason>"
    changes: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="field -> {'from': old, 'to': new}"
    )
    version: int
    reason: str = ""
    timestamp: int = Field(default_factory=now_ms)
