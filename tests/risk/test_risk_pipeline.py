"""Permissions, limits and trading states through the real pipeline (Kafka, a worker, the
paper exchange), changed at runtime with the ``oms risk`` CLI as an operator would."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from oms.client import OrderClient
from oms.schemas import (
    DeadLetter,
    OrderEvent,
    OrderEventType,
    PositionRecord,
    ReasonCode,
    Topic,
)
from oms.schemas.risk import AccountControls, AccountLimits, AccountPermissions
from oms.settings import Settings
from oms_dev.harness import OmsServices, settings_env
from tests.security_stack import stack_settings, start_services, wait_event, write_keys

pytestmark = pytest.mark.kafka

ACCOUNTS = ["r-free", "r-halt", "r-reduce", "r-loss", "r-lim", "r-perm", "r-amend"]
BTC_PERP = "BTC-PERPETUAL"


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Settings, OmsServices]]:
    settings = stack_settings(
        tmp_path_factory.mktemp("risk"),
        kafka_bootstrap,
        ACCOUNTS,
        "risk",
        auth_mode="signed",
        accounts={
            # Limits and permissions that live in settings (no runtime change).
            "r-perm": AccountControls(permissions=AccountPermissions(allowed_kinds=["option"])),
            "r-loss": AccountControls(limits=AccountLimits(max_daily_loss={"BTC": 1.0})),
        },
    )
    write_keys(settings, ACCOUNTS)
    # Two workers: each owns half the request partitions, so an account's orders (keyed by
    # order id) are checked by both, and every runtime change must reach both.
    services = await start_services(settings, workers=2)
    yield settings, services
    services.stop_all()


@pytest.fixture
async def clients(stack: Any) -> AsyncIterator[dict[str, OrderClient]]:
    clients = {a: OrderClient(a, settings=stack[0]) for a in ACCOUNTS}
    for client in clients.values():
        await client.start()
    yield clients
    for client in clients.values():
        await client.close()


def risk_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings_env(settings), "COLUMNS": "200"}
    actor = ["--actor", "tester"] if args[0] not in ("show", "audit") else []
    return subprocess.run(
        [sys.executable, "-m", "oms.cli.main", "risk", *args, *actor],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


async def outcome(client: OrderClient, order_id: str) -> OrderEvent:
    """The intake decision: accepted (submitted) or rejected."""
    return await wait_event(
        client,
        order_id,
        lambda e: e.event_type in (OrderEventType.SUBMITTED, OrderEventType.REJECTED),
    )


async def until_refused(
    client: OrderClient, submit: Callable[[], Any], reason: ReasonCode, tries: int = 60
) -> OrderEvent:
    """Submit fresh orders until one is refused for ``reason``: a runtime change reaches
    every worker within moments (eventually consistent), not before it was published."""
    for _ in range(tries):
        order_id = await submit()
        event = await outcome(client, order_id)
        if event.event_type is OrderEventType.REJECTED:
            assert event.reason_code is reason, event
            return event
        await client.cancel_order(order_id)
        await asyncio.sleep(0.25)
    raise AssertionError(f"never refused with {reason.value}")


def resting(client: OrderClient, direction: str = "buy", amount: float = 10, **kw: Any) -> Any:
    price = 1_000.0 if direction == "buy" else 1_000_000.0
    return lambda: client.submit_advanced_order(
        BTC_PERP, amount, direction, price=kw.pop("price", price), **kw
    )


async def produce(settings: Settings, topic: Topic, key: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic(topic), value=value, key=key.encode())
    finally:
        await producer.stop()


async def read_all(settings: Settings, topic: Topic) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        settings.topic(topic),
        bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=3_000)
        return [m.value for ms in batch.values() for m in ms]
    finally:
        await consumer.stop()


async def test_halted_account_is_refused_while_others_trade(
    stack: Any, clients: dict[str, OrderClient]
) -> None:
    settings, _ = stack
    halt, free = clients["r-halt"], clients["r-free"]
    open_id = await resting(halt)()
    assert (await wait_event(halt, open_id)).event_type is OrderEventType.OPEN
    ok(risk_cli(settings, "halt", "--account", "r-halt", "--cancel-open", "--reason", "test"))
    changed = await wait_event(
        halt, "account:r-halt", lambda e: e.event_type is OrderEventType.RISK_STATE_CHANGED
    )
    assert changed.details["to"] == "halted" and changed.details["actor"] == "tester"
    assert changed.reason_code is ReasonCode.TRADING_HALTED
    # Halting with --cancel-open cancelled the resting order.
    await wait_event(halt, open_id, lambda e: e.event_type is OrderEventType.CANCELLED)
    await until_refused(halt, resting(halt), ReasonCode.TRADING_HALTED)
    other = await resting(free)()
    assert (await wait_event(free, other)).event_type is OrderEventType.OPEN
    accepted = await outcome(free, other)
    assert accepted.details["execution_strategy"] == "immediate"
    assert accepted.details["execution_reason"]
    ok(risk_cli(settings, "resume", "--account", "r-halt"))
    for _ in range(60):
        event = await outcome(halt, again := await resting(halt)())
        if event.event_type is OrderEventType.SUBMITTED:
            break
        await asyncio.sleep(0.25)
    assert (await wait_event(halt, again)).event_type is OrderEventType.OPEN


async def test_reducing_passes_reduce_only_and_refuses_increase(
    stack: Any, clients: dict[str, OrderClient]
) -> None:
    settings, _ = stack
    client = clients["r-reduce"]
    # A long position, as the position keeper would publish it.
    record = PositionRecord(
        record_id="r-reduce-1", account_id="r-reduce", instrument_name=BTC_PERP, size=100.0
    )
    await produce(settings, Topic.POSITIONS, record.key, record.to_bytes())
    ok(risk_cli(settings, "reduce", "--account", "r-reduce"))
    refused = await until_refused(client, resting(client, "buy"), ReasonCode.TRADING_REDUCING)
    assert "reducing" in (refused.message or "")
    reduce_id = await resting(client, "sell", amount=50, reduce_only=True)()
    assert (await outcome(client, reduce_id)).event_type is OrderEventType.SUBMITTED
    too_big = await resting(client, "sell", amount=200)()
    assert (await outcome(client, too_big)).reason_code is ReasonCode.TRADING_REDUCING


async def test_daily_loss_switches_the_account_to_reducing(
    stack: Any, clients: dict[str, OrderClient]
) -> None:
    settings, _ = stack
    client = clients["r-loss"]
    record = PositionRecord(
        record_id="r-loss-1",
        account_id="r-loss",
        instrument_name=BTC_PERP,
        size=0.0,
        size_before=100.0,
        realized_pnl=-1.5,
        fee=0.01,
    )
    await produce(settings, Topic.POSITIONS, record.key, record.to_bytes())
    changed = await wait_event(
        client, "account:r-loss", lambda e: e.event_type is OrderEventType.RISK_STATE_CHANGED
    )
    assert changed.details["to"] == "reducing" and changed.details["actor"] == "risk-engine"
    assert "daily loss" in changed.details["reason"]
    refused = await outcome(client, await resting(client)())
    assert refused.reason_code is ReasonCode.TRADING_REDUCING


async def test_limits_changed_at_runtime_with_an_audit_record(
    stack: Any, clients: dict[str, OrderClient]
) -> None:
    settings, _ = stack
    client = clients["r-lim"]
    ok(
        risk_cli(
            settings, "limits", "--account", "r-lim", "max_order_amount=100", "max_open_orders=2"
        )
    )
    await until_refused(client, resting(client, amount=200), ReasonCode.RISK_LIMIT_EXCEEDED)
    first, second = await resting(client)(), await resting(client)()
    for order_id in (first, second):
        assert (await wait_event(client, order_id)).event_type is OrderEventType.OPEN
    third = await outcome(client, await resting(client)())
    assert third.reason_code is ReasonCode.RISK_LIMIT_EXCEEDED
    assert "max_open_orders" in (third.message or "")
    ok(risk_cli(settings, "limits", "--account", "r-lim", "price_band_pct=5"))
    fat = await until_refused(client, resting(client), ReasonCode.PRICE_BAND_EXCEEDED)
    assert "mark" in (fat.message or "")

    audits = [orjson.loads(v) for v in await read_all(settings, Topic.RISK_AUDIT)]
    mine = [a for a in audits if a["account_id"] == "r-lim"]
    assert [a["actor"] for a in mine] == ["tester", "tester"]
    assert mine[0]["changes"]["limits.max_order_amount"] == {"from": None, "to": 100.0}
    assert mine[1]["changes"] == {"limits.price_band_pct": {"from": None, "to": 5.0}}
    shown = ok(risk_cli(settings, "show", "--account", "r-lim"))
    assert '"price_band_pct": 5.0' in shown


async def test_nonsense_limits_are_refused(stack: Any, clients: dict[str, OrderClient]) -> None:
    settings, _ = stack
    for bad in ("max_order_amount=-5", "max_order_amount=abc", "max_open_orders=1.5", "nope=1"):
        result = risk_cli(settings, "limits", "--account", "r-free", bad)
        assert result.returncode == 2, result.stdout
        assert "schema_invalid" in result.stdout
    # Nonsense written straight to the controls topic: dead-lettered, previous controls kept.
    client = clients["r-free"]
    await produce(
        settings,
        Topic.RISK_CONTROLS,
        "r-free",
        orjson.dumps({"account_id": "r-free", "limits": {"max_order_amount": -1}, "version": 9}),
    )
    letters: list[DeadLetter] = []
    for _ in range(40):
        letters = [
            DeadLetter.from_bytes(v)
            for v in await read_all(settings, Topic.DEAD_LETTERS)
            if b"risk-controls" in v
        ]
        if letters:
            break
        await asyncio.sleep(0.25)
    assert letters and letters[0].reason_code is ReasonCode.SCHEMA_INVALID
    assert letters[0].key == "r-free"
    order_id = await resting(client, amount=1_000)()
    assert (await wait_event(client, order_id)).event_type is OrderEventType.OPEN


async def test_permissions_from_settings(stack: Any, clients: dict[str, OrderClient]) -> None:
    client = clients["r-perm"]
    event = await outcome(client, await resting(client)())
    assert event.reason_code is ReasonCode.PERMISSION_DENIED
    assert "option" in (event.message or "")


async def test_amends_in_reducing_and_a_read_only_account(
    stack: Any, clients: dict[str, OrderClient]
) -> None:
    settings, _ = stack
    client = clients["r-amend"]
    order_id = await resting(client)()
    assert (await wait_event(client, order_id)).event_type is OrderEventType.OPEN
    ok(risk_cli(settings, "reduce", "--account", "r-amend"))
    await until_refused(client, resting(client), ReasonCode.TRADING_REDUCING)

    def rejected(event: OrderEvent) -> bool:
        return event.event_type is OrderEventType.COMMAND_REJECTED

    await client.amend_order(order_id, amount=20)  # would increase: refused
    event = await wait_event(client, order_id, rejected)
    assert event.reason_code is ReasonCode.TRADING_REDUCING
    await client.amend_order(order_id, price=1_000.5)  # same size: allowed
    amended = await wait_event(client, order_id, lambda e: e.event_type is OrderEventType.AMENDED)
    assert amended.price == 1_000.5

    ok(risk_cli(settings, "permissions", "--account", "r-amend", "read_only=true"))
    for _ in range(60):  # probes are refused anyway (reducing) until read-only arrives
        probe = await outcome(client, await resting(client)())
        if probe.reason_code is ReasonCode.PERMISSION_DENIED:
            break
        await asyncio.sleep(0.25)
    assert probe.reason_code is ReasonCode.PERMISSION_DENIED and "read-only" in (
        probe.message or ""
    )
    request_id = await client.cancel_order(order_id)
    refused = await wait_event(
        client, order_id, lambda e: rejected(e) and e.request_id == request_id
    )
    assert refused.reason_code is ReasonCode.PERMISSION_DENIED

    static = risk_cli(settings, "permissions", "--account", "r-amend", "exchange_account=other")
    assert static.returncode == 2 and "permission_denied" in static.stdout
