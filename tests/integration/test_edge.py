"""The edge with producers that are not ours, in the default (signed) configuration.

Two workers share the partitions, so a request read by one worker's edge often belongs to an
order the other worker owns: every case below only passes if the edge routes by order id.
Requests come from a raw confluent-kafka producer (librdkafka's default partitioner,
``consistent_random``), without a key, on a partition chosen by hand, or are not requests at
all (tombstones, empty values, garbage), and must each end as the user expects.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from confluent_kafka import Producer

from oms.auth.signing import sign_headers
from oms.client import OrderClient
from oms.kafka.partitioning import partition_of
from oms.schemas import DeadLetter, OrderEventType, ReasonCode, Topic, derive_order_id
from oms.secrets import SigningKey, SigningKeys
from oms.settings import Settings
from oms_dev.harness import OmsServices
from tests.security_stack import stack_settings, start_services, write_keys

pytestmark = pytest.mark.kafka

ACCOUNT = "edge-a"
PARTITIONS = 4


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Settings, OmsServices]]:
    settings = stack_settings(tmp_path_factory.mktemp("edge"), kafka_bootstrap, [ACCOUNT], "edge")
    assert settings.risk.auth_mode == "signed" and settings.kafka.partitions == PARTITIONS
    write_keys(settings, [ACCOUNT])
    services = await start_services(settings, workers=2)
    yield settings, services
    services.stop_all()


@pytest.fixture
async def client(stack: Any) -> AsyncIterator[OrderClient]:
    async with OrderClient(ACCOUNT, settings=stack[0]) as oms:
        yield oms


def signing_key(settings: Settings) -> SigningKey:
    key = SigningKeys(settings.resolved_secrets_file).for_signing(ACCOUNT)
    assert key is not None
    return key


def body(**fields: Any) -> bytes:
    """A submit as another language writes it: integer numbers, no order_id."""
    request = {
        "request_id": uuid.uuid4().hex,
        "account_id": ACCOUNT,
        "instrument_name": "BTC-PERPETUAL",
        "direction": "buy",
        "amount": 10,
        **fields,
    }
    return orjson.dumps(request)


def order_id_of(value: bytes) -> str:
    request = orjson.loads(value)
    return derive_order_id(request["account_id"], request["request_id"])


async def produce_raw(
    settings: Settings, records: list[tuple[bytes | None, bytes | None, int | None, bool]]
) -> None:
    """(value, key, partition, sign) records through librdkafka with its defaults."""
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    topic = settings.topic(Topic.ORDER_REQUESTS)
    key = signing_key(settings)
    for value, record_key, partition, sign in records:
        headers = sign_headers(value, key) if sign and value else None
        if partition is None:
            producer.produce(topic, value=value, key=record_key, headers=headers)
        else:
            producer.produce(
                topic, value=value, key=record_key, headers=headers, partition=partition
            )
    assert await asyncio.to_thread(producer.flush, 30) == 0


async def outcome(client: OrderClient, order_id: str, wanted: OrderEventType) -> Any:
    return await client.wait_for_event(order_id, lambda e: e.event_type is wanted, timeout=45)


async def test_librdkafka_producer_without_a_key_and_on_any_partition(
    stack: Any, client: OrderClient
) -> None:
    settings, _ = stack
    # Market orders fill at once: the fill report reaches the order's owner only if the
    # request was routed there, whichever worker's edge read it.
    market = [body(order_type="market") for _ in range(8)]
    resting = [body(price=1000) for _ in range(4)]
    # One resting order goes to a partition chosen so it is *not* its order's partition.
    wrong = body(price=1000)
    wrong_partition = (partition_of(order_id_of(wrong), PARTITIONS) + 1) % PARTITIONS
    records: list[tuple[bytes | None, bytes | None, int | None, bool]] = [
        (value, None, None, True) for value in market
    ]
    # Keyed by something else than the order id: CRC32 (librdkafka) of an arbitrary key.
    records += [(value, f"desk-{i}".encode(), None, True) for i, value in enumerate(resting)]
    records.append((wrong, None, wrong_partition, True))
    await produce_raw(settings, records)
    for value in market:
        filled = await outcome(client, order_id_of(value), OrderEventType.FILLED)
        assert filled.filled_amount == 10
    for value in [*resting, wrong]:
        opened = await outcome(client, order_id_of(value), OrderEventType.OPEN)
        assert opened.exchange_order_id
    # Cancels from the same raw producer, again without keys.
    cancels = [
        orjson.dumps(
            {
                "command": "cancel",
                "request_id": uuid.uuid4().hex,
                "account_id": ACCOUNT,
                "order_id": order_id_of(value),
            }
        )
        for value in [*resting, wrong]
    ]
    await produce_raw(settings, [(value, None, None, True) for value in cancels])
    for value in [*resting, wrong]:
        await outcome(client, order_id_of(value), OrderEventType.CANCELLED)


async def test_a_submit_with_a_foreign_order_id_is_refused_on_its_own_id(
    stack: Any, client: OrderClient
) -> None:
    settings, _ = stack
    victim = await client.submit_advanced_order("BTC-PERPETUAL", 10, "buy", price=1000.0)
    await outcome(client, victim, OrderEventType.OPEN)
    claims = body(price=1000, order_id=victim)
    await produce_raw(settings, [(claims, None, None, True)])
    refused = await outcome(client, order_id_of(claims), OrderEventType.REJECTED)
    assert refused.reason_code is ReasonCode.ORDER_ID_MISMATCH
    # The order it named saw nothing but its own life.
    await client.cancel_order(victim)
    await outcome(client, victim, OrderEventType.CANCELLED)
    assert [e.event_type for e in client.events_of(victim)] == [
        OrderEventType.SUBMITTED,
        OrderEventType.OPEN,
        OrderEventType.CANCELLED,
    ]


async def dead_letters(settings: Settings) -> list[DeadLetter]:
    """The dead letters of this test's bad records (told apart by their keys and bytes)."""
    from oms_dev.devstack.testing import consume_json

    found = await consume_json(settings.kafka.bootstrap, settings.topic(Topic.DEAD_LETTERS), None)
    letters = [DeadLetter.model_validate(value) for _, value in found]
    return [
        letter
        for letter in letters
        if letter.source_topic == settings.topic(Topic.ORDER_REQUESTS)
        and (letter.key in ("k-tombstone", "k-empty") or "not json" in letter.payload)
    ]


async def edge_counters(settings: Settings, services: OmsServices) -> list[dict[str, int]]:
    out = []
    async with aiohttp.ClientSession() as session:
        for name, service in services.processes.items():
            if not name.startswith("worker-"):
                continue
            port = service.args[service.args.index("--web-port") + 1]
            async with session.get(f"http://127.0.0.1:{port}/stats") as resp:
                out.append((await resp.json())["edge"])
    return out


async def test_tombstones_empty_values_and_garbage_become_dead_letters(
    stack: Any, client: OrderClient
) -> None:
    settings, services = stack
    pids = {name: s.proc.pid for name, s in services.processes.items() if s.proc}
    bad: list[tuple[bytes | None, bytes | None, int | None, bool]] = [
        (None, b"k-tombstone", partition, False) for partition in range(PARTITIONS)
    ]
    bad += [(b"", b"k-empty", 0, False), (b"\x00\xffnot json", None, 1, False)]
    await produce_raw(settings, bad)
    deadline = asyncio.get_running_loop().time() + 45
    while True:
        letters = await dead_letters(settings)
        reasons = sorted(letter.reason_code.value for letter in letters)
        if len(letters) == len(bad) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.5)
    assert reasons == sorted(
        [ReasonCode.TOMBSTONE.value] * PARTITIONS
        + [ReasonCode.EMPTY_PAYLOAD.value, ReasonCode.MALFORMED_JSON.value]
    )
    # Every partition's edge is still reading: a valid request after them trades.
    after = [body(order_type="market") for _ in range(PARTITIONS)]
    await produce_raw(
        settings, [(value, None, partition, True) for partition, value in enumerate(after)]
    )
    for value in after:
        await outcome(client, order_id_of(value), OrderEventType.FILLED)
    assert {name: s.proc.pid for name, s in services.processes.items() if s.proc} == pids
    assert all(s.alive for s in services.processes.values())
    counters = await edge_counters(settings, services)
    assert sum(c.get("dead_letters", 0) for c in counters) >= len(bad)
