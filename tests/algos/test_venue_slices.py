"""A TWAP slice trades at its parent's venue (positions and checks are per venue)."""

from __future__ import annotations

from oms.algos import twap
from oms.schemas import Direction, OrderRecord, OrderType


def test_slices_trade_where_their_parent_was_sent() -> None:
    parent = OrderRecord(
        order_id="o-parent",
        request_id="r-parent",
        account_id="acc",
        venue="second",
        instrument_name="BTC-PERPETUAL",
        direction=Direction.BUY,
        order_type=OrderType.MARKET,
        amount=100.0,
    )
    child = twap.child_request(parent, 0, 50.0)
    assert child.venue == "second" and child.amount == 50.0
    default = twap.child_request(parent.model_copy(update={"venue": "deribit"}), 1, 50.0)
    assert default.venue == "deribit"
