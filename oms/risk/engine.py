"""Pre-trade risk: permissions, trading state, limits. One entry point per command.

``check_submit`` runs at intake for every new order and again when a queued, delayed or
conditional order is released (``at_release=True``): the market and the account may have
moved meanwhile. ``check_amend`` and ``check_cancel`` guard the other commands. All return a
:class:`~oms.schemas.rejection.Rejection` or ``None``; none does I/O.

What the engine knows about accounts is in its :class:`~oms.risk.book.RiskBook`; prices come
from the worker's market cache, read through two callables: ``mark(instrument)`` and
``index_price(currency)``.
"""

from __future__ import annotations

from oms.market.cache import LatestPrice
from oms.risk.book import RiskBook
from oms.schemas import Direction, InstrumentSpec, OrderRecord, OrderRequest, OrderType, ReasonCode
from oms.schemas.rejection import Rejection
from oms.schemas.risk import AccountControls, TradingState

# Order types whose price is a limit price (the fat-finger band applies to it).
_LIMIT_PRICED = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT, OrderType.TAKE_LIMIT})


def _signed(direction: Direction, amount: float) -> float:
    return amount if direction is Direction.BUY else -amount


class RiskEngine:
    """Checks orders against an account's permissions, trading state and limits."""

    def __init__(self, book: RiskBook, *, mark: LatestPrice, index_price: LatestPrice) -> None:
        self.book = book
        self._mark = mark
        self._index_price = index_price

    # -- entry points -------------------------------------------------------------------------

    def check_submit(self, order: OrderRecord, *, at_release: bool = False) -> Rejection | None:
        """``None`` if ``order`` may be sent now. ``at_release``: the order was held (queued,
        delayed, conditional) and is about to be sent; it counts itself among the open
        orders already, so it is excluded from its own open-order and exposure figures."""
        controls = self.book.controls_of(order.account_id)
        spec = self.book.instrument(order.instrument_name)
        when = " at release" if at_release else ""
        # A held order's limit price is meant for the market at its release: its price
        # band is checked then, not while it waits.
        held = not order.execute_immediately or bool(order.conditions)
        band = at_release or not held
        rejection = (
            self._check_permissions(controls, spec, order)
            or self._check_state(order)
            or self._check_order_limits(
                controls, spec, order.amount, order.price, order, check_band=band
            )
            or self._check_exposure(controls, spec, order)
        )
        if rejection is not None and when:
            return Rejection(rejection.reason_code, rejection.message + when)
        return rejection

    def check_amend(self, order: OrderRecord, request: OrderRequest) -> Rejection | None:
        """An amend may not raise exposure in ``reducing``, nor happen when ``halted``, and
        its new amount/price must respect the per-order limits."""
        controls = self.book.controls_of(order.account_id)
        permission = self._check_active_permissions(controls)
        if permission is not None:
            return permission
        state, why = self.book.effective_state(order.account_id)
        new_amount = request.amount if request.amount is not None else order.amount
        new_price = request.price if request.price is not None else order.price
        if state is TradingState.HALTED:
            return Rejection(
                ReasonCode.TRADING_HALTED, _state_message(order.account_id, state, why)
            )
        if state is TradingState.REDUCING and new_amount > order.amount:
            return Rejection(
                ReasonCode.TRADING_REDUCING,
                _state_message(order.account_id, state, why) + ": an amend may not increase",
            )
        spec = self.book.instrument(order.instrument_name)
        probe = order.model_copy(update={"amount": new_amount, "price": new_price})
        return self._check_order_limits(controls, spec, new_amount, new_price, probe)

    def check_cancel(self, account_id: str) -> Rejection | None:
        """Cancels are always allowed (also when halted), except for read-only accounts."""
        if self.book.controls_of(account_id).permissions.read_only:
            return Rejection(ReasonCode.PERMISSION_DENIED, f"account {account_id} is read-only")
        return None

    def note_accepted(self, order: OrderRecord) -> None:
        """Count an order this worker just accepted, before its changelog comes back."""
        self.book.apply_order(order)

    # -- permissions and state ------------------------------------------------------------------

    def _check_active_permissions(self, controls: AccountControls) -> Rejection | None:
        perms, account = controls.permissions, controls.account_id
        if perms.read_only:
            return Rejection(ReasonCode.PERMISSION_DENIED, f"account {account} is read-only")
        if not perms.trading_enabled:
            return Rejection(
                ReasonCode.PERMISSION_DENIED, f"trading is not enabled for account {account}"
            )
        return None

    def _check_permissions(
        self, controls: AccountControls, spec: InstrumentSpec | None, order: OrderRecord
    ) -> Rejection | None:
        rejection = self._check_active_permissions(controls)
        if rejection is not None or spec is None:
            return rejection
        perms, account = controls.permissions, controls.account_id
        if perms.allowed_kinds and spec.kind not in perms.allowed_kinds:
            return Rejection(
                ReasonCode.PERMISSION_DENIED,
                f"account {account} may trade {', '.join(perms.allowed_kinds)} only, "
                f"not {spec.kind} ({spec.instrument_name})",
            )
        if perms.allowed_currencies and spec.base_currency not in perms.allowed_currencies:
            return Rejection(
                ReasonCode.PERMISSION_DENIED,
                f"account {account} may trade {', '.join(perms.allowed_currencies)} only, "
                f"not {spec.base_currency} ({spec.instrument_name})",
            )
        return None

    def _check_state(self, order: OrderRecord) -> Rejection | None:
        state, why = self.book.effective_state(order.account_id)
        if state is TradingState.ACTIVE:
            return None
        message = _state_message(order.account_id, state, why)
        if state is TradingState.HALTED:
            return Rejection(ReasonCode.TRADING_HALTED, message)
        position = self.book.position(order.account_id, order.instrument_name)
        opposite = (position > 0 and order.direction is Direction.SELL) or (
            position < 0 and order.direction is Direction.BUY
        )
        # A reduce-only order is capped by the exchange at the position; any other order
        # must itself fit within it.
        if opposite and (order.reduce_only or order.amount <= abs(position)):
            return None
        return Rejection(
            ReasonCode.TRADING_REDUCING,
            f"{message}: only orders reducing the position ({position:g} "
            f"{order.instrument_name}) pass",
        )

    # -- limits -----------------------------------------------------------------------------------

    def _check_order_limits(
        self,
        controls: AccountControls,
        spec: InstrumentSpec | None,
        amount: float,
        price: float | None,
        order: OrderRecord,
        *,
        check_band: bool = True,
    ) -> Rejection | None:
        limits = controls.limits
        if limits.max_order_amount is not None and amount > limits.max_order_amount:
            return Rejection(
                ReasonCode.RISK_LIMIT_EXCEEDED,
                f"amount {amount:g} exceeds max_order_amount {limits.max_order_amount:g}",
            )
        mark = self._mark(order.instrument_name)
        if limits.max_order_notional is not None and spec is not None:
            notional = self.notional_usd(spec, amount, price or mark)
            if notional is None:
                return Rejection(
                    ReasonCode.RISK_LIMIT_EXCEEDED,
                    f"cannot value the order against max_order_notional: no price known "
                    f"for {order.instrument_name}",
                )
            if notional > limits.max_order_notional:
                return Rejection(
                    ReasonCode.RISK_LIMIT_EXCEEDED,
                    f"notional {notional:,.2f} USD exceeds max_order_notional "
                    f"{limits.max_order_notional:,.2f}",
                )
        band = limits.price_band_pct
        if (
            check_band
            and band is not None
            and price is not None
            and order.order_type in _LIMIT_PRICED
        ):
            if mark is not None and mark > 0:
                deviation = abs(price - mark) / mark * 100
                if deviation > band:
                    return Rejection(
                        ReasonCode.PRICE_BAND_EXCEEDED,
                        f"price {price:g} is {deviation:.2f}% from the mark {mark:g}, "
                        f"beyond the {band:g}% band",
                    )
        return None

    def _check_exposure(
        self, controls: AccountControls, spec: InstrumentSpec | None, order: OrderRecord
    ) -> Rejection | None:
        limits, book, account = controls.limits, self.book, order.account_id
        if limits.max_open_orders is not None:
            count = book.open_order_count(account, excluding=order.order_id)
            if count >= limits.max_open_orders:
                return Rejection(
                    ReasonCode.RISK_LIMIT_EXCEEDED,
                    f"{count} open orders, max_open_orders is {limits.max_open_orders}",
                )
        position = book.position(account, order.instrument_name)
        # Worst case: this order and the account's other live orders on its side all fill.
        pending = book.open_remaining(
            account, order.instrument_name, order.direction, order.order_id
        )
        after = position + _signed(order.direction, pending + order.amount)
        if abs(after) <= abs(position):
            return None  # reduces (or keeps) the position: never blocked by position limits
        if limits.max_position is not None and abs(after) > limits.max_position:
            return Rejection(
                ReasonCode.RISK_LIMIT_EXCEEDED,
                f"position {order.instrument_name} would reach {after:g} "
                f"(now {position:g}), max_position is {limits.max_position:g}",
            )
        if spec is not None:
            cap = limits.max_position_notional_per_currency.get(spec.base_currency)
            if cap is not None:
                exposure = self._currency_exposure(account, spec.base_currency, order, after)
                if exposure is None or exposure > cap:
                    shown = "unknown" if exposure is None else f"{exposure:,.2f}"
                    return Rejection(
                        ReasonCode.RISK_LIMIT_EXCEEDED,
                        f"{spec.base_currency} position notional would be {shown} USD, "
                        f"max_position_notional_per_currency is {cap:,.2f}",
                    )
        return None

    def _currency_exposure(
        self, account: str, currency: str, order: OrderRecord, after: float
    ) -> float | None:
        total = 0.0
        sizes = {name: size for name, size in self.book.positions_of(account).items() if size}
        sizes[order.instrument_name] = after
        for name, size in sizes.items():
            spec = self.book.instrument(name)
            if spec is None or spec.base_currency != currency:
                continue
            price = order.price if name == order.instrument_name else None
            value = self.notional_usd(spec, abs(size), self._mark(name) or price)
            if value is None:
                return None
            total += value
        return total

    def notional_usd(
        self, spec: InstrumentSpec, amount: float, price: float | None
    ) -> float | None:
        """USD notional of ``amount`` of an instrument: inverse contracts are quoted in USD
        already; options are worth their underlying (index); linear ones amount x price."""
        if spec.instrument_type == "reversed":
            return amount
        if spec.kind == "option":
            index = self._index_price(spec.base_currency)
            return amount * index if index is not None else None
        return amount * price if price is not None else None


def _state_message(account_id: str, state: TradingState, why: str) -> str:
    return f"account {account_id} is {state.value}" + (f" ({why})" if why else "")
