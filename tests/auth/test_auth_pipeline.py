"""Request authentication through the real pipeline: Kafka, a worker, the paper exchange.

Every bad request is published to ``oms.order-requests`` and must come back as a
``command_rejected`` event with its reason code, without touching any order. Signatures
travel in Kafka headers over the exact value bytes (:mod:`oms.auth.signing`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from oms.auth.signing import sign_headers
from oms.client import OrderClient, new_request_id
from oms.schemas import CommandType, OrderEventType, OrderRequest, ReasonCode, now_ms
from oms.secrets import SigningKey
from oms.settings import Settings
from oms_dev.harness import OmsServices, worker_ready
from tests.security_stack import (
    assert_no_secret,
    stack_settings,
    start_services,
    stored_secrets,
    visible_texts,
    wait_event,
    write_keys,
)

pytestmark = pytest.mark.kafka

ACCOUNTS = ["alice", "bob"]


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Settings, OmsServices, dict[str, dict[str, str]]]]:
    settings = stack_settings(
        tmp_path_factory.mktemp("auth"), kafka_bootstrap, ACCOUNTS, "auth", auth_mode="signed"
    )
    keys = write_keys(settings, ACCOUNTS)
    services = await start_services(settings)
    yield settings, services, keys
    services.stop_all()


@pytest.fixture
async def alice(stack: Any) -> AsyncIterator[OrderClient]:
    async with OrderClient("alice", settings=stack[0]) as client:
        assert client.signing_key is not None, "the SDK picks the account's key up by itself"
        yield client


def resting_buy(account: str = "alice", **fields: Any) -> OrderRequest:
    return OrderRequest(
        request_id=new_request_id(),
        account_id=account,
        instrument_name="BTC-PERPETUAL",
        amount=10,
        direction="buy",
        price=1_000.0,
        **fields,
    )


def key_of(keys: dict[str, dict[str, str]], account: str) -> SigningKey:
    key_id, secret = next(iter(keys[account].items()))
    return SigningKey(account, key_id, secret.encode())


Message = tuple[bytes, list[tuple[str, bytes]]]


def signed(request: OrderRequest, key: SigningKey, **kwargs: Any) -> Message:
    value = request.to_bytes()
    return value, sign_headers(value, key, **kwargs)


async def publish(client: OrderClient, message: Message, order_id: str) -> None:
    value, headers = message
    await client.send_raw(value, key=order_id.encode(), headers=headers)


async def refused(client: OrderClient, order_id: str, reason: ReasonCode) -> None:
    event = await wait_event(
        client, order_id, lambda e: e.event_type is OrderEventType.COMMAND_REJECTED
    )
    assert event.reason_code is reason, event
    assert event.details.get("stage") == "authentication"
    assert event.order is None and event.status is None


async def test_signed_request_trades_and_its_replay_is_refused(alice: OrderClient) -> None:
    request = resting_buy()
    message = alice.message(request)
    await publish(alice, message, request.key)
    opened = await wait_event(alice, request.key)
    assert opened.event_type is OrderEventType.OPEN, opened
    # The very same bytes and headers again: a captured request replayed by someone else.
    await publish(alice, message, request.key)
    await refused(alice, request.key, ReasonCode.NONCE_REUSED)
    # A signed cancel works; its replay is refused too.
    cancel = OrderRequest(
        command=CommandType.CANCEL,
        request_id=new_request_id(),
        account_id="alice",
        order_id=request.key,
    )
    cancel_message = alice.message(cancel)
    await publish(alice, cancel_message, request.key)
    cancelled = await wait_event(
        alice, request.key, lambda e: e.event_type is OrderEventType.CANCELLED
    )
    assert cancelled.status is not None and cancelled.status.value == "cancelled"
    await publish(alice, cancel_message, request.key)
    replays = 0
    for _ in range(100):
        replays = sum(
            1 for e in alice.events_of(request.key) if e.reason_code is ReasonCode.NONCE_REUSED
        )
        if replays == 2:
            break
        await asyncio.sleep(0.1)
    assert replays == 2


async def test_unsigned_request_is_refused(alice: OrderClient) -> None:
    request = resting_buy()
    await alice.send_raw(request.to_bytes(), key=request.key.encode())
    await refused(alice, request.key, ReasonCode.SIGNATURE_MISSING)


async def test_signature_over_a_different_body_is_refused(stack: Any, alice: OrderClient) -> None:
    request = resting_buy()
    value, headers = signed(request, key_of(stack[2], "alice"))
    changed = value.replace(b'"price":1000.0', b'"price":2000.0')  # changed after signing
    assert changed != value
    await publish(alice, (changed, headers), request.key)
    await refused(alice, request.key, ReasonCode.SIGNATURE_INVALID)
    # A signature made with a wrong secret under the right key id is refused the same way.
    forged = signed(request, SigningKey("alice", key_of(stack[2], "alice").key_id, b"guess"))
    await publish(alice, forged, request.key)
    events = [
        e for e in alice.events_of(request.key) if e.reason_code is ReasonCode.SIGNATURE_INVALID
    ]
    if len(events) < 2:
        await wait_event(
            alice,
            request.key,
            lambda e: e.reason_code is ReasonCode.SIGNATURE_INVALID and e not in events,
        )


async def test_future_and_old_timestamps_are_refused(stack: Any, alice: OrderClient) -> None:
    key = key_of(stack[2], "alice")
    future = resting_buy()
    await publish(alice, signed(future, key, timestamp=now_ms() + 60_000), future.key)
    await refused(alice, future.key, ReasonCode.STALE_REQUEST)
    old = resting_buy()
    await publish(alice, signed(old, key, timestamp=now_ms() - 120_000), old.key)
    await refused(alice, old.key, ReasonCode.STALE_REQUEST)


async def test_unknown_key_and_another_accounts_key_are_refused(
    stack: Any, alice: OrderClient
) -> None:
    request = resting_buy()
    await publish(
        alice, signed(request, SigningKey("alice", "no-such-key", b"x" * 32)), request.key
    )
    await refused(alice, request.key, ReasonCode.UNKNOWN_KEY)
    # Bob signs a request in alice's name with his own (valid) key.
    as_alice = resting_buy()
    await publish(alice, signed(as_alice, key_of(stack[2], "bob")), as_alice.key)
    await refused(alice, as_alice.key, ReasonCode.UNKNOWN_KEY)


async def test_acting_on_another_accounts_order_is_not_owner(
    stack: Any, alice: OrderClient
) -> None:
    order_id = await alice.submit_advanced_order("BTC-PERPETUAL", 10, "buy", price=1_000.0)
    assert (await wait_event(alice, order_id)).event_type is OrderEventType.OPEN
    async with OrderClient("bob", settings=stack[0]) as bob:
        await bob.cancel_order(order_id)  # properly signed by bob
        event = await wait_event(
            alice, order_id, lambda e: e.event_type is OrderEventType.COMMAND_REJECTED
        )
    assert event.reason_code is ReasonCode.NOT_OWNER
    await alice.cancel_order(order_id)
    await wait_event(alice, order_id, lambda e: e.event_type is OrderEventType.CANCELLED)


async def test_nonces_survive_a_worker_crash(stack: Any, alice: OrderClient) -> None:
    settings, services, _keys = stack
    request = resting_buy()
    message = alice.message(request)
    await publish(alice, message, request.key)
    assert (await wait_event(alice, request.key)).event_type is OrderEventType.OPEN
    worker = services["worker-0"]
    worker.kill()
    worker.start()
    await worker_ready(settings.worker.web_port, within=120)
    # The restarted worker restored the nonce table from its changelog.
    await publish(alice, message, request.key)
    await refused(alice, request.key, ReasonCode.NONCE_REUSED)


async def test_no_secret_in_any_log_event_or_dead_letter(stack: Any) -> None:
    settings, services, keys = stack
    texts = await visible_texts(settings, services)
    assert any("unauthenticated" in t or "signature_" in t for t in texts)
    assert_no_secret(texts, stored_secrets(settings, keys))
