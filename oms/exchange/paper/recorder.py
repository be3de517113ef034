"""What the engine and the account store report about changes to durable state.

The journal (:mod:`oms.exchange.paper.journal`) implements :class:`Recorder` to make those
changes durable; without one (in-memory exchange) :data:`NULL_RECORDER` ignores them. A change
is recorded before anything is sent about it, so whatever the transports send next waits for
the group commit that covers it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from oms.exchange.paper.accounts import Account
    from oms.exchange.paper.orders import Order
    from oms.exchange.paper.positions import Position


class Recorder(Protocol):
    """Receives every change to the state a restart must bring back."""

    def order(self, order: Order) -> None:
        """A user order was created or changed."""

    def order_gone(self, order_id: str) -> None:
        """A closed order left the retained history."""

    def trade(self, account_id: str, trade: dict[str, Any]) -> None:
        """A user trade (one side of a fill) happened."""

    def trade_gone(self, trade: dict[str, Any]) -> None:
        """A user trade is no longer served by any query."""

    def position(self, account_id: str, position: Position) -> None:
        """A position changed."""

    def account(self, account: Account) -> None:
        """An account was created or its balances or credentials changed."""

    def duplicate_label(self, label: str, count: int) -> None:
        """A label is now used by ``count`` orders."""


class NullRecorder:
    """Forgets everything: the in-memory exchange."""

    def order(self, order: Order) -> None:
        return None

    def order_gone(self, order_id: str) -> None:
        return None

    def trade(self, account_id: str, trade: dict[str, Any]) -> None:
        return None

    def trade_gone(self, trade: dict[str, Any]) -> None:
        return None

    def position(self, account_id: str, position: Position) -> None:
        return None

    def account(self, account: Account) -> None:
        return None

    def duplicate_label(self, label: str, count: int) -> None:
        return None


NULL_RECORDER = NullRecorder()
