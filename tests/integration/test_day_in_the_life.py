"""A day in the life of the assembled system, in its default configuration.

Two workers share the partitions; signed requests come from the SDK and from a raw
confluent-kafka producer (librdkafka's default partitioner, no key). The day covers every
kind of order: immediate, queued, delayed, conditional (one fires, one waits), OCO, bracket,
trailing stop, TWAP, chase, auto-cancel and a partial fill under ``cancel_remaining``. Then,
in turn, one worker is killed and started again, the paper exchange is killed and started
again on its data, and the whole stack is stopped and started on its data. After each:

* every order's state in the OMS (its latest event) equals the exchange's;
* the TWAP children's fills sum to the parent's;
* every position the keeper holds equals ``private/get_positions``;
* no order is non-terminal in the OMS while the exchange has it terminal or unknown;
* no order that nobody touched got an event that changes it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from oms.auth.signing import sign_headers
from oms.client import OrderClient
from oms.schemas import OrderEvent, OrderEventType, OrderStatus, ReasonCode, Topic, derive_order_id
from oms.secrets import SigningKeys
from oms.settings import Settings
from oms_dev.chaos.flow import exchange_positions, keeper_positions
from oms_dev.chaos.verdict import compare_positions
from oms_dev.harness import OmsServices, paper_admin, paper_ready, wait_http_ok, worker_ready
from tests.security_stack import stack_settings, start_services, write_keys

pytestmark = pytest.mark.kafka

SDK_ACCOUNT, RAW_ACCOUNT = "life-sdk", "life-raw"
BTC = "BTC-PERPETUAL"
RESTING_BUY = 1_000.0
FAR_SELL = 1_000_000.0
# Far more than the market maker quotes at one price: a marketable buy fills partly.
LARGE = 500_000
# Statuses the exchange cannot know: held by the OMS, or an algorithm's parent.
HELD = frozenset({OrderStatus.WAITING, OrderStatus.QUEUED})


@dataclass
class Day:
    """The stack, an event follower for both accounts, and what each order is."""

    settings: Settings
    services: OmsServices
    client: OrderClient
    raw_client: OrderClient
    kinds: dict[str, str] = field(default_factory=dict)
    twap_parents: set[str] = field(default_factory=set)
    # When a client last acted on an order (monotonic s).
    touched_after: dict[str, float] = field(default_factory=dict)
    # Every event as it arrived: (monotonic s, event).
    arrivals: list[tuple[float, OrderEvent]] = field(default_factory=list)

    async def follow(self) -> None:
        async for event in self.client.events():
            self.arrivals.append((time.monotonic(), event))

    # -- requests ---------------------------------------------------------------------------

    async def submit(self, kind: str, *args: Any, **kwargs: Any) -> str:
        order_id = await self.client.submit_advanced_order(*args, **kwargs)
        self.kinds[order_id] = kind
        return order_id

    async def submit_raw(self, kind: str, **fields: Any) -> str:
        """A submit from a non-Python producer: integer numbers, no order_id, no key."""
        body = {
            "request_id": uuid.uuid4().hex,
            "account_id": RAW_ACCOUNT,
            "instrument_name": BTC,
            **fields,
        }
        value = orjson.dumps(body)
        key = SigningKeys(self.settings.resolved_secrets_file).for_signing(RAW_ACCOUNT)
        assert key is not None
        # A producer per request: librdkafka's has no close, and one kept alive would go on
        # calling a broker the test session has stopped.
        producer = Producer({"bootstrap.servers": self.settings.kafka.bootstrap})
        producer.produce(
            self.settings.topic(Topic.ORDER_REQUESTS), value=value, headers=sign_headers(value, key)
        )
        assert await asyncio.to_thread(producer.flush, 30) == 0
        order_id = derive_order_id(RAW_ACCOUNT, body["request_id"])
        self.kinds[order_id] = kind
        return order_id

    # -- what the OMS says ------------------------------------------------------------------

    def events(self, order_id: str) -> list[OrderEvent]:
        return self.client.events_of(order_id)

    def latest(self, order_id: str) -> OrderEvent | None:
        stated = [e for e in self.events(order_id) if e.status is not None]
        return max(stated, key=lambda e: e.version) if stated else None

    async def wait(
        self,
        order_id: str,
        *types: OrderEventType,
        timeout: float = 60.0,  # noqa: ASYNC109
    ) -> OrderEvent:
        return await self.client.wait_for_event(
            order_id, lambda e: e.event_type in types, timeout=timeout
        )

    # -- what the exchange says -------------------------------------------------------------

    async def at_exchange(self, order_id: str) -> list[dict[str, Any]]:
        return list(await paper_admin(self.settings, "admin/get_orders_by_label", label=order_id))

    # -- the checks -------------------------------------------------------------------------

    async def disagreements(self) -> list[str]:
        """Every way the OMS and the exchange disagree right now (empty: they agree)."""
        out: list[str] = []
        for order_id, kind in sorted(self.kinds.items()):
            out += await self._order_disagreements(order_id, kind)
        for parent in self.twap_parents:
            out += self._twap_disagreements(parent)
        mismatched, examples = compare_positions(
            await keeper_positions(self.settings), await exchange_positions(self.settings)
        )
        if mismatched:
            out += [f"position {example}" for example in examples]
        return out

    async def _order_disagreements(self, order_id: str, kind: str) -> list[str]:
        latest = self.latest(order_id)
        if latest is None or latest.status is None:
            return [f"{kind} {order_id}: no state in the OMS"]
        status = latest.status
        found = await self.at_exchange(order_id)
        if len(found) > 1:
            return [f"{kind} {order_id}: {len(found)} orders at the exchange"]
        if order_id in self.twap_parents or status in HELD:
            if found:
                return [f"{kind} {order_id}: {status.value} in the OMS, yet at the exchange"]
            return []
        if not found:
            if status in (OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED):
                return []  # never sent (cancelled or refused while held)
            return [f"{kind} {order_id}: {status.value} in the OMS, unknown to the exchange"]
        theirs = found[0]
        expected = {
            OrderStatus.OPEN: "open",
            OrderStatus.PARTIALLY_FILLED: "open",
            OrderStatus.FILLED: "filled",
            OrderStatus.CANCELLED: "cancelled",
            OrderStatus.REJECTED: "rejected",
        }.get(status)
        problems = []
        if theirs["order_state"] != expected:
            problems.append(
                f"{kind} {order_id}: {status.value} in the OMS, {theirs['order_state']} at "
                "the exchange"
            )
        if abs(float(theirs["filled_amount"]) - latest.filled_amount) > 1e-9:
            problems.append(
                f"{kind} {order_id}: filled {latest.filled_amount} in the OMS, "
                f"{theirs['filled_amount']} at the exchange"
            )
        return problems

    def _twap_disagreements(self, parent: str) -> list[str]:
        latest = self.latest(parent)
        assert latest is not None and latest.order is not None
        children = latest.order.children
        fills = 0.0
        for child in children:
            child_latest = self.latest(child)
            fills += child_latest.filled_amount if child_latest is not None else 0.0
        if abs(fills - latest.filled_amount) > 1e-9:
            return [f"twap {parent}: children filled {fills}, parent {latest.filled_amount}"]
        return []

    def untouched_changes(self, since: float) -> list[str]:
        """Events after ``since`` (monotonic) that change an order nobody acted on then."""
        changes = {
            OrderEventType.AMENDED,
            OrderEventType.FILLED,
            OrderEventType.PARTIALLY_FILLED,
            OrderEventType.CANCELLED,
            OrderEventType.REJECTED,
            OrderEventType.EXPIRED,
        }
        return [
            f"{self.kinds[event.order_id]} {event.order_id}: {event.event_type.value} after "
            f"the restart (request {event.request_id}, version {event.version}, "
            f"{event.details})"
            for arrived, event in self.arrivals
            if arrived >= since
            and event.order_id in self.kinds
            and self.touched_after.get(event.order_id, -1.0) < since
            and event.event_type in changes
            and not event.details.get("reannounced")
        ]

    async def converge(self, what: str, within: float = 120.0) -> None:
        """Wait until the OMS and the exchange agree; fail with the disagreements if not."""
        deadline = time.monotonic() + within
        problems = await self.disagreements()
        while problems and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            problems = await self.disagreements()
        assert problems == [], f"after {what}: " + "; ".join(problems[:10])


@pytest.fixture(scope="module")
async def day(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Day]:
    settings = stack_settings(
        tmp_path_factory.mktemp("life"), kafka_bootstrap, [SDK_ACCOUNT, RAW_ACCOUNT], "life"
    )
    assert settings.risk.auth_mode == "signed"
    write_keys(settings, [SDK_ACCOUNT, RAW_ACCOUNT])
    services = await start_services(settings, workers=2)
    services.add_position_keeper()
    services.start_all()
    await keeper_ready(settings)
    async with (
        OrderClient(SDK_ACCOUNT, settings=settings) as client,
        OrderClient(RAW_ACCOUNT, settings=settings, follow_events=False) as raw_client,
    ):
        day = Day(settings, services, client, raw_client)
        follower = asyncio.create_task(day.follow())
        yield day
        follower.cancel()
    services.stop_all()


async def keeper_ready(settings: Settings) -> None:
    await wait_http_ok(
        f"http://127.0.0.1:{settings.positions.web_port}/health",
        120.0,
        ready=lambda body: bool(body.get("ready")),
    )


async def all_ready(day: Day) -> None:
    await paper_ready(day.settings)
    for name, service in day.services.processes.items():
        if name.startswith("worker-"):
            port = int(service.args[service.args.index("--web-port") + 1])
            await worker_ready(port, within=120)
    await keeper_ready(day.settings)


async def test_a_day_of_every_kind_of_order_across_restarts(day: Day) -> None:
    ticker = await paper_admin(day.settings, "public/ticker", instrument_name=BTC)
    best_ask, best_bid = float(ticker["best_ask_price"]), float(ticker["best_bid_price"])
    out = OrderEventType

    # -- the morning: every kind of order --------------------------------------------------
    market = await day.submit("immediate", BTC, 10, "buy", order_type="market")
    raw_market = await day.submit_raw(
        "raw immediate", direction="sell", amount=10, order_type="market"
    )
    raw_resting = await day.submit_raw("raw resting", direction="buy", amount=20, price=1000)
    queued = await day.submit(
        "queued", BTC, 10, "buy", price=RESTING_BUY, execute_immediately=False, priority="low"
    )
    delayed = await day.submit("delayed", BTC, 10, "buy", price=RESTING_BUY, delay=2.0)
    fires = await day.submit(
        "conditional, fires",
        BTC,
        10,
        "buy",
        price=RESTING_BUY,
        execute_immediately=False,
        conditions=[f"{BTC}.last_price >= 1"],
    )
    waits = await day.submit(
        "conditional, waits",
        BTC,
        10,
        "buy",
        price=RESTING_BUY,
        execute_immediately=False,
        conditions=[f"{BTC}.last_price >= 100000000"],
    )
    oco = await day.submit(
        "oco",
        BTC,
        10,
        "buy",
        price=RESTING_BUY,
        contingency={
            "type": "oco",
            "orders": [{"direction": "sell", "price": FAR_SELL, "reduce_only": False}],
        },
    )
    bracket = await day.submit(
        "bracket",
        BTC,
        20,
        "buy",
        order_type="market",
        contingency={
            "type": "bracket",
            "orders": [
                {"order_type": "limit", "price": FAR_SELL},
                {
                    "order_type": "market",
                    "conditions": [
                        {"kind": "price", "operator": "<=", "value": round(best_bid * 0.2)}
                    ],
                },
            ],
        },
    )
    trailing = await day.submit(
        "trailing",
        BTC,
        10,
        "sell",
        order_type="market",
        execute_immediately=False,
        conditions=[{"kind": "trailing", "field": "mark_price", "offset_percent": 90}],
    )
    twap = await day.submit(
        "twap",
        BTC,
        30,
        "buy",
        order_type="market",
        metadata={"algo": "twap", "twap_duration": 3, "twap_slices": 3},
    )
    day.twap_parents.add(twap)
    chase_limit = best_bid - 2_000
    chase = await day.submit(
        "chase",
        BTC,
        10,
        "buy",
        price=best_bid - 3_000,
        post_only=True,
        metadata={"algo": "chase", "chase_limit": chase_limit},
    )
    auto = await day.submit(
        "auto-cancel", BTC, 10, "buy", price=RESTING_BUY, metadata={"auto_cancel_timeout": 2}
    )
    partial = await day.submit(
        "partial fill",
        BTC,
        LARGE,
        "buy",
        price=best_ask,
        metadata={"partial_fill_handling": "cancel_remaining"},
    )

    # -- each ends, or rests, as it should ------------------------------------------------
    assert (await day.wait(market, out.FILLED)).filled_amount == 10
    assert (await day.wait(raw_market, out.FILLED)).filled_amount == 10
    await day.wait(raw_resting, out.OPEN)
    await day.wait(queued, out.OPEN)
    await day.wait(delayed, out.OPEN)
    await day.wait(fires, out.OPEN)
    assert (await day.wait(waits, out.WAITING)).status is OrderStatus.WAITING
    oco_open = await day.wait(oco, out.OPEN)
    assert oco_open.order is not None and oco_open.order.links is not None
    (oco_sibling,) = oco_open.order.links["siblings"]
    day.kinds[oco_sibling] = "oco sibling"
    await day.wait(oco_sibling, out.OPEN)
    bracket_filled = await day.wait(bracket, out.FILLED)
    assert bracket_filled.order is not None and bracket_filled.order.links is not None
    take_profit, stop_loss = bracket_filled.order.links["children"]
    day.kinds[take_profit], day.kinds[stop_loss] = "take profit", "stop loss"
    await day.wait(take_profit, out.OPEN)
    await day.wait(stop_loss, out.TRIGGERED)  # released by its parent, watching its condition
    await day.wait(trailing, out.WAITING)
    twap_filled = await day.wait(twap, out.FILLED, timeout=60)
    assert twap_filled.filled_amount == 30 and twap_filled.order is not None
    for child in twap_filled.order.children:
        day.kinds[child] = "twap child"
    assert (await day.wait(chase, out.AMENDED)).price == chase_limit
    auto_cancelled = await day.wait(auto, out.CANCELLED)
    assert auto_cancelled.reason_code is ReasonCode.AUTO_CANCELLED
    partial_cancelled = await day.wait(partial, out.CANCELLED)
    assert partial_cancelled.reason_code is ReasonCode.PARTIAL_FILL_CANCELLED
    assert 0 < partial_cancelled.filled_amount < LARGE
    await day.converge("the morning")

    # -- then the restarts ------------------------------------------------------------------
    async def restart_worker() -> None:
        worker = day.services["worker-1"]
        worker.kill()
        worker.start()
        await all_ready(day)

    async def restart_exchange() -> None:
        paper = day.services["paper-exchange"]
        paper.kill()
        paper.start()
        await all_ready(day)

    async def restart_everything() -> None:
        day.services.stop_all()
        day.services.start_all()
        await all_ready(day)

    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("a worker killed and started", restart_worker),
        ("the paper exchange killed and started on its data", restart_exchange),
        ("the whole stack stopped and started on its data", restart_everything),
    ]
    for what, restart in steps:
        since = time.monotonic()
        await restart()
        await day.converge(what)
        assert day.untouched_changes(since) == [], what
        # Life goes on: a new order trades, an old resting one is amended, and only it.
        after = await day.submit(f"immediate after {what}", BTC, 10, "sell", order_type="market")
        assert (await day.wait(after, out.FILLED)).filled_amount == 10
        day.touched_after[raw_resting] = time.monotonic()
        new_price = RESTING_BUY - 10 * len(day.kinds)
        amend_id = await day.raw_client.amend_order(raw_resting, price=new_price)
        try:
            amended = await day.client.wait_for_event(
                raw_resting,
                lambda e, wanted=amend_id: e.event_type is out.AMENDED and e.request_id == wanted,
                timeout=60,
            )
        except TimeoutError:
            seen = [
                (e.event_type.value, e.request_id, e.reason_code) for e in day.events(raw_resting)
            ]
            raise AssertionError(
                f"after {what}: amend {amend_id} of {raw_resting} not acknowledged in 60 s; "
                f"its events: {seen[-6:]}"
            ) from None
        assert amended.price == new_price
        [at_exchange] = await day.at_exchange(raw_resting)
        assert at_exchange["price"] == new_price
        await day.converge(f"trading after {what}")

    # -- the evening: the client cancels what is left ----------------------------------------
    for order_id in (raw_resting, queued, delayed, fires, waits, oco, take_profit, trailing, chase):
        day.touched_after[order_id] = time.monotonic()
        client = day.raw_client if order_id == raw_resting else day.client
        await client.cancel_order(order_id)
        try:
            await day.wait(order_id, out.CANCELLED)
        except TimeoutError:
            kind = day.kinds[order_id]
            events = [(e.event_type.value, e.reason_code) for e in day.events(order_id)]
            raise AssertionError(f"{kind} {order_id} not cancelled: {events}") from None
    await day.converge("the evening")

    # What the day was, for whoever reads the run (pytest -s): orders by kind and final state.
    finals: dict[str, int] = {}
    for order_id, kind in day.kinds.items():
        latest = day.latest(order_id)
        state = latest.status.value if latest is not None and latest.status else "none"
        finals[f"{kind}: {state}"] = finals.get(f"{kind}: {state}", 0) + 1
    print(
        f"\nday in the life: {len(day.kinds)} orders, {len(day.arrivals)} events, "
        f"{len(steps)} restarts, OMS and exchange agreed after each"
    )
    for line, count in sorted(finals.items()):
        print(f"  {count:3d}  {line}")
