"""Where linked orders (oco, oto, bracket) react to each other. Pure functions, no I/O.

Linked orders live in different partitions (they have different order ids), so none of them
may write another's record. Instead each order's owner publishes *facts* about it (its filled
amount, and whether it has ended) as ``link`` triggers on ``order-triggers``, keyed by the
order they concern; the ``release`` agent there records the facts on that order and works out
the amount it should now have:

* an ``oto``/``bracket`` child: its parent's filled amount (scaled by the child's amount over
  the parent's), less what its ``oco`` siblings have filled;
* an ``oco`` member: its own amount less what the others filled (same instrument), or nothing
  once any other filled (across instruments, where amounts are not comparable).

Facts are monotonic (the largest filled amount wins) and the amount is recomputed from all of
them, so a fact delivered twice, late, or replayed after a crash changes nothing. Children are
created by the parent's owner through the same topic (``create`` triggers) before any fact
about the parent can exist, so a fact never arrives before its order.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Awaitable, Callable
from typing import Any

from oms.schemas import Direction, OrderRecord, OrderRequest
from oms.schemas.conditions import OrderTrigger, TriggerKind
from oms.schemas.contingency import child_request_id

EPSILON = 1e-9


def opposite(direction: Direction) -> Direction:
    return Direction.SELL if direction is Direction.BUY else Direction.BUY


def plan_children(
    request: OrderRequest,
) -> tuple[dict[str, Any], list[tuple[OrderRequest, dict[str, Any]]]]:
    """The parent's link record and each child's request and link record."""
    contingency = request.contingency
    assert contingency is not None and request.direction is not None
    assert request.amount is not None and request.instrument_name is not None
    parent_id = request.key
    children: list[OrderRequest] = []
    for index, spec in enumerate(contingency.orders):
        held = contingency.type != "oco"
        children.append(
            OrderRequest(
                request_id=child_request_id(request.request_id, index),
                account_id=request.account_id,
                venue=request.venue,  # a linked order trades where its group does
                instrument_name=spec.instrument_name or request.instrument_name,
                direction=spec.direction or opposite(request.direction),
                amount=spec.amount if spec.amount is not None else request.amount,
                order_type=spec.order_type,
                price=spec.price,
                trigger_price=spec.trigger_price,
                time_in_force=spec.time_in_force,
                post_only=spec.post_only,
                reduce_only=held if spec.reduce_only is None else spec.reduce_only,
                priority=spec.priority,
                conditions=spec.conditions,
                condition_match=spec.condition_match,
                execute_immediately=not held and not spec.conditions,
                metadata={**spec.metadata, "parent_order_id": parent_id},
            )
        )
    ids = [child.key for child in children]
    same = {request.instrument_name} | {c.instrument_name for c in children}
    kind = contingency.type
    if kind == "oco":
        parent_links: dict[str, Any] = _links(
            kind, "member", siblings=ids, amount=request.amount, same_instrument=len(same) == 1
        )
    else:
        parent_links = _links(kind, "parent", children=ids)
    planned = []
    for child in children:
        assert child.amount is not None
        others = [i for i in ids if i != child.key]
        if kind == "oco":
            links = _links(
                kind,
                "member",
                siblings=[parent_id, *others],
                amount=child.amount,
                same_instrument=len(same) == 1,
            )
        else:
            links = _links(
                kind,
                "child",
                parent=parent_id,
                siblings=others if kind == "bracket" else [],
                ratio=child.amount / request.amount,
                hold=True,
            )
        planned.append((child, links))
    return parent_links, planned


def _links(kind: str, role: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "role": role, "facts": {}, **fields}


def facts_about(order: OrderRecord) -> list[OrderTrigger]:
    """What the order's linked orders must learn about it (its fill, whether it ended)."""
    links = order.links
    if not links:
        return []
    fact = {
        "source": order.order_id,
        "filled": order.filled_amount,
        "final": order.status.is_terminal,
    }
    triggers = []
    for child in links.get("children", []):
        triggers.append(_fact(child, "parent", fact))
    for sibling in links.get("siblings", []):
        triggers.append(_fact(sibling, "sibling", fact))
    return triggers


async def announce(publish: Callable[[OrderTrigger], Awaitable[None]], order: OrderRecord) -> None:
    """Publish the facts about ``order`` (for changes made outside the order-state agent,
    e.g. a held order cancelled or expired in the table)."""
    for fact in facts_about(order):
        await publish(fact)


def _fact(target: str, relation: str, fact: dict[str, Any]) -> OrderTrigger:
    return OrderTrigger(
        order_id=target,
        kind=TriggerKind.LINK,
        reason=f"{relation} {fact['source']} filled {fact['filled']:g}"
        + (" and ended" if fact["final"] else ""),
        details={**fact, "relation": relation},
    )


def record_fact(links: dict[str, Any], details: dict[str, Any]) -> dict[str, Any]:
    """Links with one more fact (monotonic: the larger fill wins, an end stays an end)."""
    facts = dict(links.get("facts") or {})
    source = str(details["source"])
    previous = facts.get(source) or {"filled": 0.0, "final": False}
    facts[source] = {
        "filled": max(float(previous["filled"]), float(details["filled"])),
        "final": bool(previous["final"] or details["final"]),
    }
    return {**links, "facts": facts}


def desired_amount(order: OrderRecord, links: dict[str, Any], step: float) -> float:
    """The total amount (own fills included) the order should have, given the facts."""
    facts: dict[str, dict[str, Any]] = links.get("facts") or {}
    siblings = links.get("siblings", [])
    sibling_filled = sum(float(facts.get(s, {}).get("filled", 0.0)) for s in siblings)
    if links["role"] == "child":
        parent = facts.get(links["parent"], {"filled": 0.0})
        target = _floor(float(parent["filled"]) * float(links.get("ratio", 1.0)), step)
        return max(0.0, target - sibling_filled)
    if links.get("same_instrument"):
        return max(0.0, float(links["amount"]) - sibling_filled)
    return 0.0 if sibling_filled > EPSILON else float(links["amount"])


def parent_ended_unfilled(links: dict[str, Any]) -> bool:
    if links["role"] != "child":
        return False
    parent = (links.get("facts") or {}).get(links["parent"])
    return bool(parent and parent["final"] and float(parent["filled"]) <= EPSILON)


def _floor(amount: float, step: float) -> float:
    if step <= 0:
        return amount
    return round(math.floor(amount / step + EPSILON) * step, 12)


def link_request_id(order_id: str, links: dict[str, Any]) -> str:
    """An idempotency key for the amend/cancel a set of facts causes."""
    state = repr(sorted((k, v["filled"], v["final"]) for k, v in links["facts"].items()))
    return "link-" + hashlib.blake2b(f"{order_id}{state}".encode(), digest_size=12).hexdigest()
