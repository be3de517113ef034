"""Queued, delayed and conditional orders through the real pipeline: Kafka, a worker process,
the paper exchange. Ticks are published by the test (no gateway), so every trigger is
deterministic."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from oms.algos import twap
from oms.client import OrderClient, fetch_queue_statistics
from oms.kafka.admin import ensure_topics
from oms.schemas import MarketTick, OrderEvent, OrderEventType, ReasonCode, Topic, now_ms
from oms.settings import Settings
from oms_dev.harness import (
    OmsServices,
    isolated_settings,
    wait_http_ok,
    worker_ready,
    write_account_secrets,
)
from tests.integration.test_pipeline import exchange_orders_by_label

pytestmark = pytest.mark.kafka

ACCOUNTS = ["acc-q", "acc-r", "acc-h"]
BTC, ETH = "BTC-PERPETUAL", "ETH-PERPETUAL"
# Far below the paper market: a limit buy here rests (open), which proves it was sent.
RESTING_BUY = 1000.0


def held_settings(tmp: Path, bootstrap: str, **exchange: Any) -> Settings:
    settings = isolated_settings(tmp, bootstrap, ACCOUNTS, partitions=4, label="h")
    return settings.model_copy(
        update={
            "worker": settings.worker.model_copy(
                update={"recovery_check_interval_s": 1.0, "submit_timeout_s": 3.0}
            ),
            "exchange": settings.exchange.model_copy(update=exchange),
            "queue": settings.queue.model_copy(update={"processing_interval": 0.2}),
            # Orders above 1,000 are sliced over 2 s (none of the other tests go that high).
            "risk": settings.risk.model_copy(
                update={"slice_above_amount": 1_000.0, "slice_duration_s": 2.0}
            ),
        }
    )


async def start(settings: Settings) -> OmsServices:
    write_account_secrets(settings.resolved_secrets_file, ACCOUNTS)
    await ensure_topics(settings)
    services = OmsServices(settings, settings.data_dir / "logs")
    services.add_paper_exchange("--accounts-file", str(settings.resolved_secrets_file))
    services.add_worker(0)
    services.start_all()
    try:
        await worker_ready(settings.worker.web_port, within=120)
    except BaseException:
        print(services.diagnostics())
        services.stop_all()
        raise
    return services


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Settings, OmsServices]]:
    # A slow matching-engine budget (5/s, burst 5) makes the queue the bottleneck.
    settings = held_settings(
        tmp_path_factory.mktemp("held"), kafka_bootstrap, matching_rate_per_s=5, matching_burst=5
    )
    services = await start(settings)
    yield settings, services
    services.stop_all()


class Ticks:
    """Publishes ticker snapshots on ``market-ticks`` as the gateway would."""

    def __init__(self, settings: Settings) -> None:
        self._topic = settings.topic(Topic.MARKET_TICKS)
        self._producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap)

    async def __aenter__(self) -> Ticks:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, instrument: str, **values: float) -> int:
        timestamp = now_ms()
        tick = MarketTick(instrument_name=instrument, timestamp=timestamp, **values)
        await self._producer.send_and_wait(self._topic, tick.to_bytes(), key=instrument.encode())
        return timestamp


def types(client: OrderClient, order_id: str) -> list[OrderEventType]:
    return [e.event_type for e in client.events_of(order_id)]


async def event_of(
    client: OrderClient, order_id: str, kinds: Sequence[OrderEventType], within: float = 30
) -> OrderEvent:
    return await client.wait_for_event(order_id, lambda e: e.event_type in kinds, timeout=within)


async def assert_quiet(client: OrderClient, order_id: str, seconds: float = 1.0) -> None:
    """Nothing beyond ``waiting`` happens to the order for a while."""
    await asyncio.sleep(seconds)
    assert types(client, order_id) == [OrderEventType.WAITING], types(client, order_id)


async def test_conditions_trigger_on_the_right_tick(stack: tuple[Settings, OmsServices]) -> None:
    settings, _ = stack
    async with OrderClient("acc-q", settings=settings) as client, Ticks(settings) as ticks:
        await ticks.send(BTC, last_price=60_000, index_price=60_000, mark_price=60_000)
        await ticks.send(ETH, best_bid_price=3_000, best_ask_price=3_001)
        await asyncio.sleep(1.0)  # the worker's tick feed has the starting values
        cases = {
            "ge": ["BTC-PERPETUAL.last_price >= 61000"],
            "cross": ["BTC-PERPETUAL.index_price crosses_below 59000"],
            "bid": ["ETH-PERPETUAL.best_bid_price > 3100"],
            "both": [f"{BTC}.mark_price < 59500", f"{ETH}.best_ask_price <= 2990"],
        }
        ids = {}
        for name, conditions in cases.items():
            ids[name] = await client.create_conditional_order(
                BTC, 10, "buy", conditions, price=RESTING_BUY, post_only=True
            )
        for order_id in ids.values():
            waiting = await event_of(client, order_id, [OrderEventType.WAITING])
            assert waiting.status is not None and waiting.status.value == "waiting"
            assert waiting.details["strategy"] == "conditional"
        await ticks.send(BTC, last_price=60_500, index_price=59_500, mark_price=59_400)
        await assert_quiet(client, ids["ge"])
        first = await ticks.send(BTC, last_price=61_000, index_price=59_000, mark_price=59_300)
        ge = await event_of(client, ids["ge"], [OrderEventType.TRIGGERED])
        cross = await event_of(client, ids["cross"], [OrderEventType.TRIGGERED])
        for event in (ge, cross):
            assert event.details["tick"]["timestamp"] == first
            assert event.status is not None and event.status.value == "queued"
        assert ge.details["tick"]["last_price"] == 61_000
        assert cross.details["conditions"][0]["value"] == 59_000
        # Cross-instrument, all-of: mark price holds already, the ETH ask completes it.
        assert types(client, ids["both"]) == [OrderEventType.WAITING]
        second = await ticks.send(ETH, best_bid_price=3_150, best_ask_price=2_990)
        both = await event_of(client, ids["both"], [OrderEventType.TRIGGERED])
        bid = await event_of(client, ids["bid"], [OrderEventType.TRIGGERED])
        assert both.details["tick"]["timestamp"] == second == bid.details["tick"]["timestamp"]
        assert [c["held"] for c in both.details["conditions"]] == [True, True]
        for order_id in ids.values():
            opened = await event_of(client, order_id, [OrderEventType.OPEN])
            assert opened.previous_status is not None
            assert types(client, order_id)[:4] == [
                OrderEventType.WAITING,
                OrderEventType.TRIGGERED,
                OrderEventType.SUBMITTED,
                OrderEventType.OPEN,
            ]
    counts = await exchange_orders_by_label(settings, {"acc-q": list(ids.values())})
    assert all(counts[i] == 1 for i in ids.values()), counts
    # The worker holds every partition: what its engine fired was applied in place.
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{settings.worker.web_port}/stats") as r,
    ):
        release = (await r.json())["release"]
    assert release["triggers_applied_directly"] >= len(ids)
    assert release["triggers_through_topic"] == 0


async def test_trailing_stop_through_the_pipeline(stack: tuple[Settings, OmsServices]) -> None:
    settings, _ = stack
    async with OrderClient("acc-r", settings=settings) as client, Ticks(settings) as ticks:
        await ticks.send(ETH, mark_price=3_000)
        await asyncio.sleep(1.0)
        order_id = await client.create_conditional_order(
            ETH,
            1,
            "sell",
            [{"kind": "trailing", "field": "mark_price", "offset": 50}],
            order_type="market",
        )
        waiting = await event_of(client, order_id, [OrderEventType.WAITING])
        assert waiting.order is not None
        assert waiting.order.conditions[0]["direction"] == "down"  # from the sell side
        for price in (3_100, 3_200, 3_160):
            await ticks.send(ETH, mark_price=price)
        await assert_quiet(client, order_id)
        hit = await ticks.send(ETH, mark_price=3_150)
        triggered = await event_of(client, order_id, [OrderEventType.TRIGGERED])
        assert triggered.details["tick"]["timestamp"] == hit
        await event_of(client, order_id, [OrderEventType.SUBMITTED])


async def test_delayed_order_is_released_at_its_time(stack: tuple[Settings, OmsServices]) -> None:
    settings, _ = stack
    async with OrderClient("acc-q", settings=settings) as client:
        order_id = await client.submit_advanced_order(
            BTC, 10, "buy", price=RESTING_BUY, post_only=True, delay=2.0
        )
        waiting = await event_of(client, order_id, [OrderEventType.WAITING])
        release_at = waiting.details["release_at"]
        assert waiting.details["strategy"] == "delayed"
        triggered = await event_of(client, order_id, [OrderEventType.TRIGGERED])
        assert triggered.details["fired_at"] >= release_at
        # Functional bound only (the figure itself is measured by the benchmark).
        assert triggered.details["fired_at"] - release_at < 3_000
        await event_of(client, order_id, [OrderEventType.OPEN])


async def test_expiration_and_time_window(stack: tuple[Settings, OmsServices]) -> None:
    settings, _ = stack
    async with OrderClient("acc-q", settings=settings) as client:
        expiring = await client.create_conditional_order(
            BTC,
            10,
            "buy",
            ["BTC-PERPETUAL.last_price >= 10000000"],
            price=RESTING_BUY,
            expiration=1.0,
        )
        window = await client.create_conditional_order(
            BTC,
            10,
            "buy",
            ["BTC-PERPETUAL.last_price >= 10000000", f"time < {now_ms() + 1500}"],
            price=RESTING_BUY,
        )
        for order_id in (expiring, window):
            expired = await event_of(client, order_id, [OrderEventType.EXPIRED])
            assert expired.reason_code is ReasonCode.CONDITION_EXPIRED
    counts = await exchange_orders_by_label(settings, {"acc-q": [expiring, window]})
    assert counts[expiring] == counts[window] == 0


async def test_cancel_and_amend_held_orders(stack: tuple[Settings, OmsServices]) -> None:
    settings, _ = stack
    async with OrderClient("acc-r", settings=settings) as client, Ticks(settings) as ticks:
        waiting = await client.create_conditional_order(
            BTC, 10, "buy", ["BTC-PERPETUAL.last_price >= 5000000"], price=RESTING_BUY
        )
        await event_of(client, waiting, [OrderEventType.WAITING])
        await client.amend_order(waiting, price=RESTING_BUY - 100)
        amended = await event_of(client, waiting, [OrderEventType.AMENDED])
        assert amended.price == RESTING_BUY - 100
        await client.cancel_order(waiting)
        cancelled = await event_of(client, waiting, [OrderEventType.CANCELLED])
        assert cancelled.previous_status is not None
        # The condition comes after the cancel: nothing happens.
        await ticks.send(BTC, last_price=5_000_000)
        await asyncio.sleep(1.0)
        assert OrderEventType.TRIGGERED not in types(client, waiting)
    counts = await exchange_orders_by_label(settings, {"acc-r": [waiting]})
    assert counts[waiting] == 0


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"conditions": [{"kind": "price", "operator": ">", "value": 1}] * 6}, "too_many"),
        (
            {"conditions": [{"kind": "price", "field": "volume", "operator": ">", "value": 1}]},
            "cond",
        ),
        ({"conditions": [{"kind": "price", "operator": "~", "value": 1}]}, "cond"),
        ({"conditions": [{"kind": "price", "operator": ">", "value": "lots"}]}, "cond"),
        (
            {
                "conditions": [
                    {"kind": "price", "instrument_name": "DOGE-X", "operator": ">", "value": 1}
                ]
            },
            "instrument",
        ),
        ({"conditions": [{"kind": "time", "operator": ">=", "value": 1_000}]}, "past"),
        ({"conditions": [{"kind": "expiration", "seconds": 0}]}, "cond"),
        (
            {"expiration": -5.0, "conditions": [{"kind": "time", "operator": "<", "value": 9e12}]},
            "cond",
        ),
        ({"delay": 301.0}, "delay"),
        ({"execute_at": 1_000}, "past"),
        ({"execute_at": 9_000_000_000_000}, "delay"),
    ],
)
async def test_bad_timing_and_conditions_are_rejected_at_intake(
    stack: tuple[Settings, OmsServices], fields: dict[str, Any], reason: str
) -> None:
    expected = {
        "too_many": ReasonCode.TOO_MANY_CONDITIONS,
        "cond": ReasonCode.INVALID_CONDITION,
        "instrument": ReasonCode.UNKNOWN_INSTRUMENT,
        "past": ReasonCode.TIME_IN_PAST,
        "delay": ReasonCode.DELAY_TOO_LONG,
    }[reason]
    settings, _ = stack
    async with OrderClient("acc-r", settings=settings) as client:
        from oms.schemas import OrderRequest

        request = OrderRequest(
            request_id=f"bad-{secrets.token_hex(4)}",
            account_id="acc-r",
            instrument_name=BTC,
            amount=10,
            direction="buy",
            price=RESTING_BUY,
            execute_immediately=False,
            **fields,
        )
        await client.send(request)
        rejected = await event_of(client, request.key, [OrderEventType.REJECTED])
        assert rejected.reason_code is expected, rejected.message
        assert rejected.message


async def test_high_priority_overtakes_when_the_rate_limit_binds(
    stack: tuple[Settings, OmsServices],
) -> None:
    """5 order entries per second: 30 low orders queue up; 5 high ones sent later still go
    out before most of them."""
    settings, _ = stack
    async with OrderClient("acc-q", settings=settings) as client:
        low = [
            await client.submit_advanced_order(
                BTC, 10, "buy", price=RESTING_BUY, execute_immediately=False, priority="low"
            )
            for _ in range(30)
        ]
        await event_of(client, low[-1], [OrderEventType.QUEUED])
        base = f"http://127.0.0.1:{settings.worker.web_port}"
        stats = await fetch_queue_statistics([base])
        assert stats["depth"]["low"] > 10, stats
        # The same statistics, exported for Prometheus.
        async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as resp:
            metrics = await resp.text()
        depth = re.search(r'oms_queue_depth\{priority="low"\} (\S+)', metrics)
        assert depth is not None and float(depth.group(1)) > 0, metrics[:2000]
        assert "oms_queue_oldest_age_seconds" in metrics and "oms_orders_waiting" in metrics
        high = [
            await client.submit_advanced_order(
                BTC, 10, "buy", price=RESTING_BUY, execute_immediately=False, priority="high"
            )
            for _ in range(5)
        ]
        # The paper exchange numbers orders as they arrive ("BTC-<seq>").
        arrival: dict[str, int] = {}
        for order_id in [*low, *high]:
            opened = await event_of(client, order_id, [OrderEventType.OPEN], within=60)
            assert opened.exchange_order_id is not None
            arrival[order_id] = int(opened.exchange_order_id.rsplit("-", 1)[1])
        last_high = max(arrival[h] for h in high)
        low_after = sum(arrival[o] > last_high for o in low)
        assert low_after >= 10, (low_after, arrival)
    counts = await exchange_orders_by_label(settings, {"acc-q": [*low, *high]})
    assert set(counts.values()) == {1}


async def test_full_queue_rejects_new_requests(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = held_settings(tmp_path, kafka_bootstrap, matching_rate_per_s=1, matching_burst=1)
    settings = settings.model_copy(
        update={"queue": settings.queue.model_copy(update={"max_queue_size": 3})}
    )
    services = await start(settings)
    try:
        async with OrderClient("acc-q", settings=settings) as client:
            ids = [
                await client.submit_advanced_order(
                    BTC, 10, "buy", price=RESTING_BUY, execute_immediately=False
                )
                for _ in range(8)
            ]
            outcomes = [
                await event_of(
                    client, i, [OrderEventType.QUEUED, OrderEventType.REJECTED], within=30
                )
                for i in ids
            ]
            rejected = [e for e in outcomes if e.event_type is OrderEventType.REJECTED]
            assert rejected, [e.event_type for e in outcomes]
            assert all(e.reason_code is ReasonCode.QUEUE_FULL for e in rejected)
            # Every queued one is still sent: the limit refuses, it never drops.
            for event in outcomes:
                if event.event_type is OrderEventType.QUEUED:
                    await event_of(client, event.order_id, [OrderEventType.OPEN], within=60)
    finally:
        services.stop_all()


async def test_sigkill_loses_no_held_order_and_sends_none_twice(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Queued (throttled), delayed and conditional orders wait; the worker is SIGKILLed and
    restarted; every one of them then executes exactly once, and not before its time."""
    settings = held_settings(tmp_path, kafka_bootstrap, matching_rate_per_s=2, matching_burst=2)
    services = await start(settings)
    try:
        async with OrderClient("acc-q", settings=settings) as client, Ticks(settings) as ticks:
            await ticks.send(BTC, last_price=60_000)
            queued = [
                await client.submit_advanced_order(
                    BTC, 10, "buy", price=RESTING_BUY, execute_immediately=False
                )
                for _ in range(16)
            ]
            delayed = [
                await client.submit_advanced_order(
                    BTC, 10, "buy", price=RESTING_BUY, post_only=True, delay=4.0
                )
                for _ in range(4)
            ]
            conditional = [
                await client.create_conditional_order(
                    BTC, 10, "buy", ["BTC-PERPETUAL.last_price >= 62000"], price=RESTING_BUY
                )
                for _ in range(4)
            ]
            release_at = {}
            for order_id in delayed + conditional:
                event = await event_of(client, order_id, [OrderEventType.WAITING])
                release_at[order_id] = event.details["release_at"]
            await event_of(client, queued[-1], [OrderEventType.QUEUED])
            services["worker-0"].kill()
            sent_before_kill = sum(
                OrderEventType.OPEN in types(client, order_id) for order_id in queued
            )
            assert sent_before_kill < len(queued), "the queue drained before the kill"
            services["worker-0"].start()
            await worker_ready(settings.worker.web_port, within=120)
            await wait_http_ok(
                f"http://127.0.0.1:{settings.worker.web_port}/stats",
                within=60,
                ready=lambda body: body["tick_feed"]["ready"],
            )
            await ticks.send(BTC, last_price=62_500)
            everything = queued + delayed + conditional
            for order_id in everything:
                try:
                    await event_of(client, order_id, [OrderEventType.OPEN], within=90)
                except TimeoutError:
                    async with (
                        aiohttp.ClientSession() as session,
                        session.get(f"http://127.0.0.1:{settings.worker.web_port}/stats") as r,
                    ):
                        stats = await r.text()
                    raise AssertionError(
                        f"{order_id} never opened: {types(client, order_id)}; worker: {stats}"
                    ) from None
            for order_id in delayed + conditional:
                triggered = {
                    e.event_id
                    for e in client.events_of(order_id)
                    if e.event_type is OrderEventType.TRIGGERED
                }
                assert len(triggered) == 1, (order_id, triggered)
            for order_id in delayed:
                first = next(
                    e
                    for e in client.events_of(order_id)
                    if e.event_type is OrderEventType.TRIGGERED
                )
                assert first.details["fired_at"] >= release_at[order_id]
        counts = await exchange_orders_by_label(settings, {"acc-q": everything})
        assert {counts[o] for o in everything} == {1}, counts
    except BaseException:
        print(services.diagnostics())
        raise
    finally:
        services.stop_all()


async def best_quotes(settings: Settings, account: str) -> tuple[float, float]:
    from oms.exchange.deribit.client import DeribitClient
    from oms.secrets import SecretStore

    store = SecretStore(settings.resolved_secrets_file)
    async with DeribitClient(
        settings.exchange.url, store.credentials(account), settings=settings.exchange
    ) as exchange:
        ticker = await exchange.ticker(BTC)
    return float(ticker["best_bid_price"]), float(ticker["best_ask_price"])


async def test_bracket_children_follow_the_entry_and_cancel_each_other(
    stack: tuple[Settings, OmsServices],
) -> None:
    """Market entry fills; the take profit goes out sized to the fill and rests; the stop
    watches its condition; when a tick fires the stop and it fills, the take profit is
    cancelled."""
    settings, _ = stack
    bid, ask = await best_quotes(settings, "acc-r")
    take_profit = round(ask * 1.02 * 2) / 2  # on the 0.5 tick, above the market
    async with OrderClient("acc-r", settings=settings) as client, Ticks(settings) as ticks:
        await ticks.send(BTC, last_price=ask)
        entry = await client.submit_advanced_order(
            BTC,
            20,
            "buy",
            order_type="market",
            contingency={
                "type": "bracket",
                "orders": [
                    {"order_type": "limit", "price": take_profit},
                    {
                        "order_type": "market",
                        "conditions": [
                            {"kind": "price", "operator": "<=", "value": round(bid * 0.5)}
                        ],
                    },
                ],
            },
        )
        filled = await event_of(client, entry, [OrderEventType.FILLED])
        assert filled.order is not None and filled.order.links is not None
        tp_id, sl_id = filled.order.links["children"]
        tp_open = await event_of(client, tp_id, [OrderEventType.OPEN])
        assert tp_open.amount == 20 and tp_open.direction is not None
        assert tp_open.direction.value == "sell"
        sl_watch = await event_of(client, sl_id, [OrderEventType.TRIGGERED])
        assert sl_watch.status is not None and sl_watch.status.value == "waiting"
        assert sl_watch.amount == 20
        await ticks.send(BTC, last_price=round(bid * 0.4))
        sl_filled = await event_of(client, sl_id, [OrderEventType.FILLED])
        assert sl_filled.filled_amount == 20
        tp_cancelled = await event_of(client, tp_id, [OrderEventType.CANCELLED])
        assert tp_cancelled.filled_amount == 0
    counts = await exchange_orders_by_label(settings, {"acc-r": [entry, tp_id, sl_id]})
    assert counts[entry] == counts[tp_id] == counts[sl_id] == 1


async def test_oco_fill_of_one_cancels_the_other_and_unfilled_parent_cancels_children(
    stack: tuple[Settings, OmsServices],
) -> None:
    settings, _ = stack
    async with OrderClient("acc-r", settings=settings) as client:
        first = await client.submit_advanced_order(
            BTC,
            10,
            "buy",
            order_type="market",
            contingency={
                "type": "oco",
                "orders": [{"direction": "buy", "price": RESTING_BUY, "reduce_only": False}],
            },
        )
        filled = await event_of(client, first, [OrderEventType.FILLED])
        assert filled.order is not None and filled.order.links is not None
        (other,) = filled.order.links["siblings"]
        cancelled = await event_of(client, other, [OrderEventType.CANCELLED])
        assert cancelled.reason_code in (None, ReasonCode.LINKED_ORDER_CANCELLED)
        # An oto parent that never fills: cancelling it cancels its waiting child.
        parent = await client.submit_advanced_order(
            BTC,
            10,
            "buy",
            price=RESTING_BUY,
            contingency={"type": "oto", "orders": [{"order_type": "market"}]},
        )
        opened = await event_of(client, parent, [OrderEventType.OPEN])
        assert opened.order is not None and opened.order.links is not None
        (child,) = opened.order.links["children"]
        await event_of(client, child, [OrderEventType.WAITING])
        await client.cancel_order(parent)
        await event_of(client, parent, [OrderEventType.CANCELLED])
        child_cancelled = await event_of(client, child, [OrderEventType.CANCELLED])
        assert child_cancelled.reason_code is ReasonCode.LINKED_ORDER_CANCELLED
    counts = await exchange_orders_by_label(settings, {"acc-r": [first, other, child]})
    assert counts[first] == counts[other] == 1 and counts[child] == 0


async def test_children_of_a_held_parent_are_cancelled_with_it(
    stack: tuple[Settings, OmsServices],
) -> None:
    settings, _ = stack
    async with OrderClient("acc-r", settings=settings) as client:
        parent = await client.create_conditional_order(
            BTC,
            10,
            "buy",
            ["BTC-PERPETUAL.last_price >= 100000000"],
            price=RESTING_BUY,
            contingency={
                "type": "bracket",
                "orders": [{"price": 1_000_000}, {"order_type": "market"}],
            },
        )
        waiting = await event_of(client, parent, [OrderEventType.WAITING])
        assert waiting.order is not None and waiting.order.links is not None
        children = waiting.order.links["children"]
        for child in children:
            await event_of(client, child, [OrderEventType.WAITING])
        await client.cancel_order(parent)
        await event_of(client, parent, [OrderEventType.CANCELLED])
        for child in children:
            cancelled = await event_of(client, child, [OrderEventType.CANCELLED])
            assert cancelled.reason_code is ReasonCode.LINKED_ORDER_CANCELLED


async def test_queued_order_breaching_risk_at_release_is_rejected_not_sent(
    stack: tuple[Settings, OmsServices],
) -> None:
    """The account is halted while its delayed order waits: the order is refused when it
    leaves the queue (risk is checked again at release), and never reaches the exchange."""
    import os
    import sys

    from oms_dev.harness import settings_env

    settings, _ = stack
    async with OrderClient("acc-h", settings=settings) as client:
        order_id = await client.submit_advanced_order(BTC, 10, "buy", price=RESTING_BUY, delay=3.0)
        await event_of(client, order_id, [OrderEventType.WAITING])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "oms.cli.main", "risk", "halt", "--account", "acc-h",
            "--actor", "tester", "--reason", "test",
            env={**os.environ, **settings_env(settings)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, out.decode()
        await client.wait_for_event(
            "account:acc-h",
            lambda e: e.event_type is OrderEventType.RISK_STATE_CHANGED,
            timeout=30,
        )
        rejected = await event_of(client, order_id, [OrderEventType.REJECTED], within=30)
        assert rejected.reason_code is ReasonCode.TRADING_HALTED, rejected
        assert OrderEventType.TRIGGERED in types(client, order_id)
        assert OrderEventType.SUBMITTED not in types(client, order_id)
    counts = await exchange_orders_by_label(settings, {"acc-h": [order_id]})
    assert counts[order_id] == 0


async def test_orders_above_the_slicing_threshold_are_sliced(
    stack: tuple[Settings, OmsServices],
) -> None:
    settings, _ = stack
    async with OrderClient("acc-q", settings=settings) as client:
        parent = await client.submit_advanced_order(BTC, 2_500, "buy", price=RESTING_BUY)
        working = await event_of(client, parent, [OrderEventType.OPEN])
        assert working.details["strategy"] == "sliced" and working.details["algo"] == "twap"
        assert working.order is not None
        assert working.order.metadata["twap_slices"] == 3
        children = [twap.child_order_id(working.order, i) for i in range(3)]
        amounts = []
        for child in children:
            opened = await event_of(client, child, [OrderEventType.OPEN], within=30)
            amounts.append(opened.amount)
        assert sum(a or 0 for a in amounts) == 2_500
    counts = await exchange_orders_by_label(settings, {"acc-q": [parent, *children]})
    assert counts[parent] == 0 and all(counts[c] == 1 for c in children)


async def test_a_held_or_queued_twap_is_worked_in_slices_never_sent_whole(
    stack: tuple[Settings, OmsServices],
) -> None:
    """A TWAP parent is never sent itself: asked for with a delay, it waits and then starts
    its slices (timed from its release); asked for with execute_immediately=false, it has no
    queue turn to wait for and starts at once."""
    settings, _ = stack
    algo = {"algo": "twap", "twap_duration": 2, "twap_slices": 2}
    async with OrderClient("acc-q", settings=settings) as client:
        delayed = await client.submit_advanced_order(
            BTC, 20, "buy", price=RESTING_BUY, delay=2.0, metadata=algo
        )
        queued = await client.submit_advanced_order(
            BTC, 20, "buy", price=RESTING_BUY, execute_immediately=False, metadata=algo
        )
        waiting = await event_of(client, delayed, [OrderEventType.WAITING])
        assert waiting.details["strategy"] == "delayed"
        parents = {}
        for parent in (delayed, queued):
            parents[parent] = await event_of(client, parent, [OrderEventType.OPEN], within=30)
            assert parents[parent].details["algo"] == "twap"
        released = parents[delayed].order
        assert released is not None and released.triggered_at is not None
        assert OrderEventType.TRIGGERED in types(client, delayed)
        children = {p: [twap.child_order_id(parents[p].order, i) for i in range(2)]
                    for p in parents}  # fmt: skip
        opened_at = {}
        for child in [*children[delayed], *children[queued]]:
            opened = await event_of(client, child, [OrderEventType.OPEN], within=30)
            assert opened.amount == 10
            opened_at[child] = opened.timestamp
        # Slices of the held parent are due from its release, one second apart (2 over 2 s),
        # not from its creation (then both would have been due at once when it was released).
        second = children[delayed][1]
        assert opened_at[second] - released.triggered_at >= 900, opened_at
    counts = await exchange_orders_by_label(
        settings, {"acc-q": [delayed, queued, *children[delayed], *children[queued]]}
    )
    assert counts[delayed] == 0 and counts[queued] == 0
    assert all(counts[c] == 1 for c in [*children[delayed], *children[queued]])
