"""The gateway turns one user.changes batch into one report per order of ours."""

from __future__ import annotations

from oms.exchange.deribit.feed import reports_from_changes
from oms.schemas import ExchangeOrderState


def _order(label: str | None, state: str, filled: float, ts: int) -> dict[str, object]:
    return {
        "order_id": f"ex-{label}",
        "label": label,
        "order_state": state,
        "instrument_name": "BTC-PERPETUAL",
        "direction": "buy",
        "amount": 20.0,
        "price": 50_000.0,
        "filled_amount": filled,
        "average_price": 50_000.0 if filled else 0.0,
        "last_update_timestamp": ts,
    }


def _trade(label: str | None, trade_id: str) -> dict[str, object]:
    return {
        "trade_id": trade_id,
        "label": label,
        "order_id": f"ex-{label}",
        "instrument_name": "BTC-PERPETUAL",
        "amount": 10.0,
        "price": 50_000.0,
        "fee": 0.0001,
        "timestamp": 5,
    }


def test_latest_snapshot_per_order_with_all_its_trades() -> None:
    data = {
        "instrument_name": "BTC-PERPETUAL",
        "orders": [
            _order("o-a", "open", 0, 1),
            _order("o-a", "filled", 20, 3),
            _order("o-a", "open", 10, 2),
            _order(None, "open", 0, 1),
        ],
        "trades": [
            _trade("o-a", "t1"),
            _trade("o-a", "t2"),
            _trade("o-b", "t3"),
            _trade(None, "x"),
        ],
        "positions": [],
    }
    reports = {r.order_id: r for r in reports_from_changes(data, "acc")}
    assert set(reports) == {"o-a", "o-b"}
    assert reports["o-a"].order_state is ExchangeOrderState.FILLED
    assert reports["o-a"].filled_amount == 20
    assert [f.trade_id for f in reports["o-a"].fills] == ["t1", "t2"]
    assert reports["o-b"].order_state is None
    assert [f.trade_id for f in reports["o-b"].fills] == ["t3"]


def test_malformed_batch_yields_nothing() -> None:
    assert reports_from_changes(["not", "a", "dict"], "acc") == []
