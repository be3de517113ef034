"""Linked orders: children planned from a request, facts, and the amounts they imply."""

from __future__ import annotations

from oms.orders.links import (
    desired_amount,
    facts_about,
    parent_ended_unfilled,
    plan_children,
    record_fact,
)
from oms.schemas import Direction, OrderRecord, OrderRequest, OrderStatus
from oms.schemas.conditions import TriggerKind


def bracket_request(kind: str = "bracket", **child: object) -> OrderRequest:
    return OrderRequest.model_validate(
        {
            "request_id": "entry-1",
            "account_id": "acc",
            "instrument_name": "BTC-PERPETUAL",
            "amount": 100,
            "direction": "buy",
            "order_type": "market",
            "contingency": {
                "type": kind,
                "orders": [
                    {"order_type": "limit", "price": 80000, **child},
                    {
                        "order_type": "market",
                        "conditions": [{"kind": "price", "operator": "<=", "value": 60000}],
                    },
                ],
            },
        }
    )


def record(request: OrderRequest, links: dict[str, object], **kw: object) -> OrderRecord:
    assert request.direction is not None and request.amount is not None
    return OrderRecord(
        order_id=request.key,
        request_id=request.request_id,
        account_id=request.account_id,
        instrument_name=request.instrument_name or "",
        direction=request.direction,
        order_type=request.order_type,
        amount=request.amount,
        links=links,
        **kw,  # type: ignore[arg-type]
    )


def test_bracket_children_are_held_closing_orders_with_stable_ids() -> None:
    request = bracket_request()
    parent, children = plan_children(request)
    assert parent["role"] == "parent" and len(parent["children"]) == 2
    (tp, tp_links), (sl, sl_links) = children
    assert tp.direction is Direction.SELL and tp.reduce_only and tp.amount == 100
    assert tp_links["hold"] and tp_links["parent"] == request.key
    assert tp_links["siblings"] == [sl.key] and sl_links["siblings"] == [tp.key]
    again = plan_children(bracket_request())[1]
    assert [c.key for c, _ in again] == [tp.key, sl.key]  # replay-safe ids
    assert parent["children"] == [tp.key, sl.key]


def test_child_follows_parent_fills_less_what_its_sibling_filled() -> None:
    request = bracket_request()
    _, [(tp, tp_links), (sl, _)] = plan_children(request)
    child = record(tp, tp_links)
    links = record_fact(tp_links, {"source": request.key, "filled": 30, "final": False})
    assert desired_amount(child, links, step=10) == 30
    links = record_fact(links, {"source": request.key, "filled": 20, "final": False})  # stale
    assert desired_amount(child, links, step=10) == 30
    links = record_fact(links, {"source": request.key, "filled": 100, "final": True})
    links = record_fact(links, {"source": sl.key, "filled": 40, "final": False})
    assert desired_amount(child, links, step=10) == 60
    assert not parent_ended_unfilled(links)


def test_child_scaled_across_instruments_and_rounded_down_to_the_step() -> None:
    request = bracket_request(kind="oto", instrument_name="ETH-PERPETUAL", amount=7)
    _, [(child_request, links), _] = plan_children(request)
    assert links["ratio"] == 0.07
    child = record(child_request, links)
    links = record_fact(links, {"source": request.key, "filled": 50, "final": False})
    assert desired_amount(child, links, step=1) == 3  # 3.5 rounded down


def test_parent_ending_unfilled_cancels_children() -> None:
    request = bracket_request()
    _, [(_tp, tp_links), _] = plan_children(request)
    links = record_fact(tp_links, {"source": request.key, "filled": 0, "final": True})
    assert parent_ended_unfilled(links)


def test_oco_members_reduce_each_other_on_one_instrument() -> None:
    request = bracket_request(kind="oco", direction="buy", reduce_only=False)
    parent_links, [(member, links), _] = plan_children(request)
    assert parent_links["role"] == "member" and not member.reduce_only
    assert request.key in links["siblings"]
    order = record(member, links)
    links = record_fact(links, {"source": request.key, "filled": 30, "final": False})
    assert desired_amount(order, links, step=10) == 70


def test_facts_go_to_children_and_siblings() -> None:
    request = bracket_request()
    parent_links, children = plan_children(request)
    parent = record(request, parent_links, filled_amount=40, status=OrderStatus.FILLED)
    facts = facts_about(parent)
    assert {f.order_id for f in facts} == {c.key for c, _ in children}
    assert all(f.kind is TriggerKind.LINK and f.details["final"] for f in facts)
    tp, tp_links = children[0]
    assert [f.order_id for f in facts_about(record(tp, tp_links))] == [children[1][0].key]


def test_linked_orders_trade_at_their_groups_venue() -> None:
    request = bracket_request().model_copy(update={"venue": "second"})
    _, children = plan_children(request)
    assert [child.venue for child, _ in children] == ["second", "second"]
    assert {child.venue for child, _ in plan_children(bracket_request())[1]} == {"deribit"}
