"""The whole path, for real: Kafka -> Faust worker -> paper exchange -> reports -> events
-> ClickHouse, with the services running as separate processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay

from oms.auth.signing import sign_headers
from oms.backoff import Backoff
from oms.client import OrderClient
from oms.exchange.deribit.client import DeribitClient
from oms.exchange.errors import RateLimited
from oms.kafka.admin import ensure_topics
from oms.schemas import DeadLetter, OrderEvent, OrderEventType, ReasonCode, Topic, derive_order_id
from oms.secrets import SecretStore, SigningKeys, write_signing_keys
from oms.settings import Settings
from oms_dev.devstack.net import free_port
from oms_dev.harness import (
    OmsServices,
    isolated_settings,
    settings_env,
    wait_http_ok,
    worker_ready,
    write_account_secrets,
)

pytestmark = pytest.mark.kafka

ACCOUNTS = ["acc-a", "acc-b", "acc-c", "acc-d"]
TERMINAL_OR_RESTING = {
    OrderEventType.OPEN,
    OrderEventType.FILLED,
    OrderEventType.REJECTED,
    OrderEventType.CANCELLED,
}


def make_settings(tmp: Path, bootstrap: str, partitions: int = 4) -> Settings:
    settings = isolated_settings(tmp, bootstrap, ACCOUNTS, partitions=partitions, label="t")
    # Fast recovery sweeps and sink flushes keep the tests short.
    return settings.model_copy(
        update={
            "worker": settings.worker.model_copy(
                update={"recovery_check_interval_s": 1.0, "submit_timeout_s": 3.0}
            ),
            "sink": settings.sink.model_copy(update={"flush_interval_s": 0.3}),
        }
    )


NO_EXCHANGE_ACCOUNT = "nobody"


async def start_stack(settings: Settings, workers: int = 1, sink: bool = True) -> OmsServices:
    keys = write_account_secrets(settings.resolved_secrets_file, ACCOUNTS)
    # A desk with a signing key but no exchange account: authentic, yet unknown to trading.
    keys[NO_EXCHANGE_ACCOUNT] = {
        f"{NO_EXCHANGE_ACCOUNT}-k1": "key-of-an-account-without-credentials"
    }
    write_signing_keys(settings.resolved_secrets_file, keys)
    await ensure_topics(settings)
    services = OmsServices(settings, settings.data_dir / "logs")
    services.add_paper_exchange("--accounts-file", str(settings.resolved_secrets_file))
    services.add_gateway()
    ports = [settings.worker.web_port] + [free_port() for _ in range(workers - 1)]
    for i, port in enumerate(ports):
        services.add_worker(i, port)
    if sink:
        services.add_sink()
    services.start_all()
    try:
        for port in ports:
            await worker_ready(port, within=120)
        if sink:
            await wait_http_ok(f"http://127.0.0.1:{settings.sink.query_port}/health", within=60)
    except BaseException:
        print(services.diagnostics())
        services.stop_all()
        raise
    return services


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Settings, OmsServices]]:
    settings = make_settings(tmp_path_factory.mktemp("pipeline"), kafka_bootstrap)
    services = await start_stack(settings)
    yield settings, services
    services.stop_all()


async def exchange_orders_by_label(settings: Settings, labels_by_account: dict[str, list[str]]):
    """How many orders the exchange holds per label (the duplicate check)."""
    store = SecretStore(settings.resolved_secrets_file)
    counts: Counter[str] = Counter()

    async def lookup(account: str, labels: list[str]) -> None:
        async with DeribitClient(
            settings.exchange.url, store.credentials(account), settings=settings.exchange
        ) as client:
            for label in labels:
                # The account's credits are shared with the worker's own lookups: a client
                # that is told to slow down waits and asks again, as the worker does.
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type(RateLimited),
                    wait=Backoff(0.05, 1.0),
                    stop=stop_after_delay(60),
                    reraise=True,
                ):
                    with attempt:
                        orders = await client.call(
                            "private/get_order_state_by_label",
                            {"currency": "BTC", "label": label},
                        )
                counts[label] += len(orders)

    await asyncio.gather(*(lookup(a, ls) for a, ls in labels_by_account.items()))
    return counts


async def final_event(client: OrderClient, order_id: str, within: float = 60) -> OrderEvent:
    return await client.wait_for_event(
        order_id, lambda e: e.event_type in TERMINAL_OR_RESTING, timeout=within
    )


async def test_200_mixed_orders_reach_expected_states(stack: tuple[Settings, OmsServices]) -> None:
    settings, services = stack
    clients = {a: OrderClient(a, settings=settings) for a in ACCOUNTS}
    for client in clients.values():
        await client.start()
    expected: dict[str, tuple[str, OrderEventType]] = {}
    try:
        for i in range(200):
            account = ACCOUNTS[i % len(ACCOUNTS)]
            kind = i % 4
            if kind == 0:  # resting buy far below the market
                args: dict[str, Any] = {"direction": "buy", "price": 1_000.0}
                want = OrderEventType.OPEN
            elif kind == 1:  # resting sell far above
                args = {"direction": "sell", "price": 1_000_000.0}
                want = OrderEventType.OPEN
            elif kind == 2:  # marketable
                args = {"direction": "buy", "order_type": "market"}
                want = OrderEventType.FILLED
            else:
                args = {"direction": "sell", "order_type": "market"}
                want = OrderEventType.FILLED
            order_id = await clients[account].submit_advanced_order(
                instrument_name="BTC-PERPETUAL", amount=10, **args
            )
            expected[order_id] = (account, want)
        results = await asyncio.gather(
            *(final_event(clients[a], oid) for oid, (a, _) in expected.items())
        )
    except BaseException:
        print(services.diagnostics())
        raise
    finally:
        for client in clients.values():
            await client.close()
    got = {e.order_id: e.event_type for e in results}
    assert got == {oid: want for oid, (_, want) in expected.items()}

    # The worker owns every partition here: its commands' answers were applied where they
    # arrived, none left to the order_state agent through execution-reports.
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{settings.worker.web_port}/stats"
        async with session.get(url) as resp:
            order_state = (await resp.json())["order_state"]
    assert order_state["reports_applied_directly"] >= len(expected)
    assert order_state["reports_through_topic"] == 0

    by_account: dict[str, list[str]] = {}
    for oid, (account, _) in expected.items():
        by_account.setdefault(account, []).append(oid)
    counts = await exchange_orders_by_label(settings, by_account)
    assert all(counts[oid] == 1 for oid in expected), "every label exactly once at the exchange"

    # ClickHouse agrees with the order state the events reported.
    from oms.sinks.query import run_query

    ids = ",".join(f"'{oid}'" for oid in expected)
    want_status = {
        oid: ("open" if w is OrderEventType.OPEN else "filled") for oid, (_, w) in expected.items()
    }
    rows: dict[str, str] = {}
    for _ in range(60):
        result = await run_query(
            settings, f"SELECT order_id, status FROM orders FINAL WHERE order_id IN ({ids})"
        )
        rows = {r[0]: r[1] for r in result.rows}
        if rows == want_status:
            break
        await asyncio.sleep(0.5)
    assert rows == want_status


async def read_dead_letters(settings: Settings, want: int, within: float = 30) -> list[DeadLetter]:
    consumer = AIOKafkaConsumer(
        settings.topic(Topic.DEAD_LETTERS),
        bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    letters: list[DeadLetter] = []
    try:
        async with asyncio.timeout(within):
            async for message in consumer:
                letters.append(DeadLetter.from_bytes(message.value))
                if len(letters) >= want:
                    break
    finally:
        await consumer.stop()
    return letters


async def test_bad_input_is_rejected_with_reasons(stack: tuple[Settings, OmsServices]) -> None:
    settings, services = stack
    async with OrderClient("acc-a", settings=settings) as client:
        # Malformed bytes: dead-lettered with a reason, nothing else.
        await client.send_raw(b"{this is not json", key=b"junk")
        await client.send_raw(b"\x00\xff\xfe binary", key=None)

        def request(**kw: Any) -> bytes:
            body = {
                "request_id": uuid.uuid4().hex,
                "account_id": "acc-a",
                "instrument_name": "BTC-PERPETUAL",
                "amount": 10,
                "direction": "buy",
                "price": 1000.0,
            }
            body.update(kw)
            return orjson.dumps({k: v for k, v in body.items() if v is not ...})

        cases = {
            "missing": (request(amount=...), ReasonCode.SCHEMA_INVALID),
            "unknown_field": (request(colour="red"), ReasonCode.SCHEMA_INVALID),
            "negative": (request(amount=-10), ReasonCode.INVALID_AMOUNT),
            "zero": (request(amount=0), ReasonCode.INVALID_AMOUNT),
            "not_multiple": (request(amount=15), ReasonCode.AMOUNT_NOT_MULTIPLE),
            "off_tick": (request(price=1000.3), ReasonCode.PRICE_OFF_TICK),
            "unknown_instrument": (
                request(instrument_name="DOGE-PERP"),
                ReasonCode.UNKNOWN_INSTRUMENT,
            ),
            "unknown_account": (
                request(account_id=NO_EXCHANGE_ACCOUNT),
                ReasonCode.UNKNOWN_ACCOUNT,
            ),
        }
        order_ids = {}
        keys = SigningKeys(settings.resolved_secrets_file)
        for name, (raw, _) in cases.items():
            body = orjson.loads(raw)
            order_ids[name] = derive_order_id(body["account_id"], body["request_id"])
            key = keys.for_signing(body["account_id"])
            assert key is not None
            # Signed byte for byte as sent (integer amounts included), like any client does.
            await client.send_raw(raw, key=order_ids[name].encode(), headers=sign_headers(raw, key))
        for name, (_, reason) in cases.items():
            event = await client.wait_for_event(order_ids[name], timeout=30)
            assert event.event_type is OrderEventType.REJECTED, name
            assert event.reason_code is reason, (name, event.reason_code, event.message)
            assert event.message

        # Cancel of an unknown order.
        await client.cancel_order("o-doesnotexist00000000000", request_id="cancel-unknown")
        event = await client.wait_for_event("o-doesnotexist00000000000", timeout=30)
        assert event.event_type is OrderEventType.COMMAND_REJECTED
        assert event.reason_code is ReasonCode.UNKNOWN_ORDER

        # Duplicate request_id: acknowledged as a duplicate, executed once.
        rid = f"dup-{uuid.uuid4().hex}"
        first = await client.submit_advanced_order(
            "BTC-PERPETUAL", 10, "buy", price=1000.0, request_id=rid
        )
        await client.wait_for_event(first, lambda e: e.event_type is OrderEventType.OPEN)
        second = await client.submit_advanced_order(
            "BTC-PERPETUAL", 10, "buy", price=1000.0, request_id=rid
        )
        assert second == first
        dup = await client.wait_for_event(first, lambda e: e.event_type is OrderEventType.DUPLICATE)
        assert dup.reason_code is ReasonCode.DUPLICATE_REQUEST
        await asyncio.sleep(1.0)
        counts = await exchange_orders_by_label(settings, {"acc-a": [first]})
        assert counts[first] == 1

        # Cancel works and is idempotent.
        await client.cancel_order(first, request_id=f"c-{rid}")
        cancelled = await client.wait_for_event(
            first, lambda e: e.event_type is OrderEventType.CANCELLED
        )
        assert cancelled.status is not None and cancelled.status.value == "cancelled"

    letters = await read_dead_letters(settings, want=4)
    reasons = Counter(letter.reason_code for letter in letters)
    assert reasons[ReasonCode.MALFORMED_JSON] == 2
    assert reasons[ReasonCode.SCHEMA_INVALID] == 2  # "missing" and "unknown_field"
    dead = [n for n in ("worker-0", "gateway", "paper-exchange", "sink") if not services[n].alive]
    assert not dead, f"services died: {dead}"


def cli(settings: Settings) -> Any:
    """Runs ``oms <args>`` against the stack's settings; returns its output."""
    # Wide enough that rich never truncates an order id in a table.
    env = {**os.environ, **settings_env(settings), "COLUMNS": "250"}

    async def oms(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "oms.cli.main",
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, out.decode()
        return out.decode()

    return oms


async def test_cli_conditional_order_queue_and_waiting_list(
    stack: tuple[Settings, OmsServices],
) -> None:
    """`oms submit --when`, `oms queue`, `oms orders --state waiting`, `oms cancel`."""
    settings, _ = stack
    oms = cli(settings)
    out = await oms(
        "submit", "BTC-PERPETUAL", "buy", "10", "--price", "1000", "--account", "acc-b",
        "--when", "BTC-PERPETUAL.last_price >= 100000000", "--when", "mark_price > 90000000",
        "--expire", "600", "--wait", "30",
    )  # fmt: skip
    found = re.search(r"submitted\s+(o-[0-9a-f]+)", out)
    assert found and re.search(r"waiting\s+" + found.group(1), out), out
    order_id = found.group(1)
    queue = await oms("queue", "--worker", f"http://127.0.0.1:{settings.worker.web_port}")
    waiting = re.search(r"waiting \(delayed/conditional\): (\d+)", queue)
    assert waiting and int(waiting.group(1)) >= 1, queue
    for _ in range(40):
        listed = await oms("orders", "--state", "waiting", "--account", "acc-b")
        if order_id in listed:
            break
        await asyncio.sleep(0.5)
    assert order_id in listed, listed
    out = await oms("cancel", order_id, "--account", "acc-b", "--wait", "30")
    assert re.search(r"cancelled\s+" + order_id, out), out
    bad = await oms_fails(settings, "submit", "BTC-PERPETUAL", "buy", "10", "--when", "x ~ 1")
    assert "cannot parse condition" in bad


async def oms_fails(settings: Settings, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "oms.cli.main",
        *args,
        env={**os.environ, **settings_env(settings)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode != 0, out.decode()
    return out.decode()


async def test_cli_submit_and_sql_while_the_stack_runs(
    stack: tuple[Settings, OmsServices],
) -> None:
    """The README tour through the real `oms` command line."""
    settings, _ = stack
    oms = cli(settings)
    out = await oms(
        "submit",
        "BTC-PERPETUAL",
        "buy",
        "10",
        "--price",
        "1000",
        "--account",
        "acc-b",
        "--wait",
        "30",
    )
    order_id = re.search(r"submitted\s+(o-[0-9a-f]+)", out)
    assert order_id, out
    assert re.search(r"open\s+" + order_id.group(1), out), out
    query = f"SELECT status FROM orders FINAL WHERE order_id = '{order_id.group(1)}'"
    for _ in range(40):
        result = json.loads(await oms("sql", query, "--format", "json"))
        if result["rows"]:
            break
        await asyncio.sleep(0.5)
    assert result["columns"] == ["status"] and result["rows"] == [["open"]]


async def test_passive_fill_arrives_through_the_gateway(
    stack: tuple[Settings, OmsServices],
) -> None:
    """A resting order filled later by someone else: only the exchange's stream can tell."""
    settings, _ = stack
    store = SecretStore(settings.resolved_secrets_file)
    async with (
        OrderClient("acc-c", settings=settings) as maker,
        DeribitClient(
            settings.exchange.url, store.credentials("acc-d"), settings=settings.exchange
        ) as taker,
    ):
        for _attempt in range(5):
            ticker = await taker.ticker("BTC-PERPETUAL")
            bid, ask = ticker["best_bid_price"], ticker["best_ask_price"]
            if ask - bid < 1.0:
                await asyncio.sleep(0.2)
                continue
            # Best ask of the book by half a tick-step inside the spread; a market buy from
            # another account then hits it first (price priority).
            price = ask - 0.5
            order_id = await maker.submit_advanced_order(
                "BTC-PERPETUAL", 10, "sell", price=price, post_only=True
            )
            opened = await maker.wait_for_event(order_id)
            assert opened.event_type is OrderEventType.OPEN, opened
            await taker.call(
                "private/buy",
                {"instrument_name": "BTC-PERPETUAL", "amount": 10, "type": "market"},
            )
            filled = await maker.wait_for_event(
                order_id,
                lambda e: e.event_type in (OrderEventType.FILLED, OrderEventType.PARTIALLY_FILLED),
                timeout=30,
            )
            assert filled.filled_amount > 0
            assert filled.details.get("source") == "subscription"
            return
    raise AssertionError("the paper market never had a spread to rest inside")
