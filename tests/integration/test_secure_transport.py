"""The stack over SASL_SSL with least-privilege ACLs, against a real secure broker.

One secure broker for the module (certificates and SCRAM users made locally, the standard
authorizer, ``allow.everyone.if.no.acl.found=false``), the paper exchange, gateway, one
worker, the position keeper and the notifier, each logged in as its own principal. Two desks:
``desk-a`` owns ``alice``, ``desk-b`` owns ``bob``. Every refusal is checked twice: the
client gets a clear error, and an admin read of the topic shows nothing was written.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from oms.client import OrderClient
from oms.kafka.acls import COMPONENT_PRINCIPALS, acl_rules, apply_acls
from oms.kafka.admin import account_topic_specs, ensure_topic_specs
from oms.kafka.reading import end_offsets, read_messages
from oms.kafka.security import KafkaConnection
from oms.schemas import OrderEventType, Topic
from oms.secrets import load_kafka_users
from oms.settings import AccountTopicKind, Settings
from oms_dev.devstack.kafka.secure import ensure_scram_users
from oms_dev.devstack.stack import Stack
from oms_dev.devstack.testing import wait_for_records
from oms_dev.harness import OmsServices, wait_http_ok
from tests.auth.test_auth_pipeline import (  # noqa: F401  (collected here, see below)
    test_signed_request_trades_and_its_replay_is_refused,
    test_unsigned_request_is_refused,
)
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
DESKS = {"desk-a": ["alice"], "desk-b": ["bob"]}
KINDS: tuple[AccountTopicKind, ...] = ("events", "positions", "notifications")


@dataclass
class SecureStack:
    stack: Stack
    services: OmsServices
    keys: dict[str, dict[str, str]]
    # Every error a refused client saw: they must not carry a password either.
    errors: list[str] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        """The admin's settings (the tooling's principal, a super user)."""
        return self.stack.settings

    @property
    def admin(self) -> KafkaConnection:
        return KafkaConnection.from_settings(self.settings)

    def user(self, name: str, password: str | None = None) -> KafkaConnection:
        """A SASL_SSL connection as ``name`` (its stored password unless given)."""
        stored = load_kafka_users(self.settings.resolved_secrets_file)[name]
        return self.admin.as_user(name, password or stored)

    def settings_of(self, user: str) -> Settings:
        kafka = self.settings.kafka.model_copy(update={"username": user})
        return self.settings.model_copy(update={"kafka": kafka})


@pytest.fixture(scope="module")
async def secure(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SecureStack]:
    tmp = tmp_path_factory.mktemp("secure")
    settings = stack_settings(tmp, "unused:0", ACCOUNTS, "secure", auth_mode="signed")
    settings = settings.model_copy(update={"desks": DESKS})
    stack = Stack.isolated(tmp, settings, secure=True)
    await stack.start()
    try:
        keys = write_keys(stack.settings, ACCOUNTS)
        # Every account's own topics, as the fan-out creates them.
        await ensure_topic_specs(stack.settings, account_topic_specs(stack.settings, ACCOUNTS))
        services = await start_services(stack.settings)
        services.add_position_keeper().start()
        services.add_notifier().start()
        services.add_fanout().start()
        try:
            for port in (stack.settings.positions.web_port, stack.settings.notify.web_port):
                await wait_http_ok(f"http://127.0.0.1:{port}/health", within=120)
        except BaseException:
            print(services.diagnostics())
            services.stop_all()
            raise
        yield SecureStack(stack, services, keys)
        services.stop_all()
    finally:
        await stack.stop()


@pytest.fixture
async def alice(secure: SecureStack) -> AsyncIterator[OrderClient]:
    """The SDK as the tooling's principal: it follows the shared events topic, which no desk
    may read. The signed-request tests of tests/auth/test_auth_pipeline.py, imported above,
    run with it unchanged over SASL_SSL."""
    async with OrderClient("alice", settings=secure.settings) as client:
        assert client.signing_key is not None
        yield client


async def _records(admin: KafkaConnection, topic: str) -> int:
    """How many records the topic holds (its end offsets, read as the admin)."""
    ends = await end_offsets(admin, topic, wait_s=10)
    assert ends, f"{topic} does not exist"
    return sum(ends.values())


async def _values_since(
    admin: KafkaConnection, topic: str, since: dict[TopicPartition, int]
) -> list[bytes]:
    """The values written to ``topic`` after the offsets ``since`` (read as the admin)."""
    return [m.value or b"" for m in await read_messages(admin, topic, since=since)]


async def _refused_write(
    s: SecureStack, kafka: KafkaConnection, topic: str, error: type[Exception]
) -> None:
    """Sending to ``topic`` as ``kafka`` fails with ``error``, and its record is not there
    (the topic may grow meanwhile: the services write some of these topics all along)."""
    since = await end_offsets(s.admin, topic, wait_s=10)
    marker = f"refused-{uuid.uuid4().hex}".encode()
    producer = AIOKafkaProducer(**kafka.aiokafka(acks="all", request_timeout_ms=10_000))
    try:
        with pytest.raises(error) as refused:
            await producer.start()
            await producer.send_and_wait(topic, marker, key=b"k")
        s.errors.append(f"{refused.value!r} {refused.value}")
    finally:
        await producer.stop()
    assert marker not in await _values_since(s.admin, topic, since), f"{topic} was written"


async def test_signed_orders_flow_over_sasl_ssl(secure: SecureStack) -> None:
    # The desk's principal sends the signed request and follows the events with the SDK,
    # from alice's own topic (the only one it may read); the admin follows the shared one.
    async with (
        OrderClient("alice", settings=secure.settings_of("desk-a")) as desk,
        OrderClient("alice", settings=secure.settings) as watcher,
    ):
        assert desk.signing_key is not None
        order_id = await desk.submit_advanced_order(
            instrument_name="BTC-PERPETUAL", amount=10, direction="buy", price=1_000.0
        )
        opened = await wait_event(
            watcher, order_id, lambda e: e.event_type is OrderEventType.OPEN, timeout=60
        )
        assert opened.account_id == "alice"
        await desk.cancel_order(order_id)
        await wait_event(
            watcher, order_id, lambda e: e.event_type is OrderEventType.CANCELLED, timeout=60
        )
        seen = await wait_event(
            desk, order_id, lambda e: e.event_type is OrderEventType.CANCELLED, timeout=60
        )
        assert seen.account_id == "alice"
    # The fan-out copied the order's events to alice's own topic, which desk-a reads.
    events = await wait_for_records(
        secure.user("desk-a"),
        secure.settings.account_topic("alice", "events"),
        lambda records: {order_id.encode()} <= {r.key for r in records},
        within_s=60,
    )
    assert all(orjson.loads(r.value or b"{}").get("account_id") == "alice" for r in events)
    for name in ("worker-0", "gateway", "positions", "notifier", "fanout"):
        assert secure.services[name].alive, secure.services.diagnostics()


async def test_a_wrong_password_is_refused(
    secure: SecureStack, caplog: pytest.LogCaptureFixture
) -> None:
    topic = secure.settings.topic(Topic.ORDER_REQUESTS)
    wrong = secure.user("desk-a", password="not-the-password")
    before = await _records(secure.admin, topic)
    producer = AIOKafkaProducer(**wrong.aiokafka(request_timeout_ms=10_000))
    with pytest.raises(KafkaConnectionError) as refused:
        await producer.start()
    await producer.stop()
    # aiokafka raises "unable to bootstrap" and logs why: the broker's own answer.
    said = [r.getMessage() for r in caplog.records] + [str(refused.value)]
    secure.errors.extend(said)
    assert any("invalid credentials" in line for line in said), said
    assert not any("not-the-password" in line for line in said)
    assert await _records(secure.admin, topic) == before


async def test_a_desk_added_after_the_format_gets_its_user_at_start(secure: SecureStack) -> None:
    """SCRAM users are made when the storage is formatted; a desk configured later is added
    when the stack starts (ensure_scram_users, then its ACLs), and users the broker knows keep
    their credentials."""
    s = secure.settings
    late = s.model_copy(update={"desks": {**s.desks, "desk-late": ["alice"]}})
    password = "late-desk-password-0123456789"
    added = await asyncio.to_thread(
        ensure_scram_users, secure.admin, {"desk-late": password, "oms-worker": "not-its-password"}
    )
    assert added == ["desk-late"]
    await apply_acls(secure.admin, [r for r in acl_rules(late) if r.principal == "desk-late"])
    producer = AIOKafkaProducer(**secure.admin.as_user("desk-late", password).aiokafka())
    try:
        await asyncio.wait_for(producer.start(), 60)  # authenticated as the new desk
        assert await producer.partitions_for(s.topic(Topic.ORDER_REQUESTS))
    finally:
        await producer.stop()
    # The worker still logs in with the password it had.
    assert secure.services["worker-0"].alive
    worker = AIOKafkaProducer(**secure.user("oms-worker").aiokafka())
    try:
        await asyncio.wait_for(worker.start(), 60)
    finally:
        await worker.stop()


async def test_a_plaintext_client_is_refused_by_the_secure_listener(
    secure: SecureStack, caplog: pytest.LogCaptureFixture
) -> None:
    topic = secure.settings.topic(Topic.ORDER_REQUESTS)
    before = await _records(secure.admin, topic)
    plain = KafkaConnection(secure.settings.kafka.bootstrap)
    producer = AIOKafkaProducer(**plain.aiokafka(request_timeout_ms=5_000))
    with pytest.raises(KafkaConnectionError) as refused:
        await asyncio.wait_for(producer.start(), 60)
    await producer.stop()
    said = [r.getMessage() for r in caplog.records] + [str(refused.value)]
    secure.errors.extend(said)
    assert await _records(secure.admin, topic) == before


async def test_a_trader_writes_only_the_request_topic(secure: SecureStack) -> None:
    s = secure.settings
    desk = secure.user("desk-a")
    allowed = s.topic(Topic.ORDER_REQUESTS)
    before = await _records(secure.admin, allowed)
    producer = AIOKafkaProducer(**desk.aiokafka(acks="all"))
    await producer.start()
    try:
        # Not a valid request: the edge dead-letters it, but the desk may send it.
        await producer.send_and_wait(allowed, b"not json", key=b"k")
    finally:
        await producer.stop()
    assert await _records(secure.admin, allowed) == before + 1
    changelog = f"{s.worker.app_id}-orders-changelog"
    for topic in (s.topic(Topic.ORDER_COMMANDS), changelog, s.account_topic("bob", "events")):
        await _refused_write(secure, desk, topic, TopicAuthorizationFailedError)


async def test_a_trader_reads_only_its_desks_account_topics(secure: SecureStack) -> None:
    s = secure.settings
    desk = secure.user("desk-a")
    # Its own: readable with a consumer group of the desk's (``<desk>.<anything>``).
    own = s.account_topic("alice", "events")
    producer = AIOKafkaProducer(**secure.admin.aiokafka(acks="all"))
    await producer.start()
    try:
        await producer.send_and_wait(own, b"{}", key=b"alice")
        for kind in KINDS:
            await producer.send_and_wait(s.account_topic("bob", kind), b"{}", key=b"bob")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        own, **desk.aiokafka(group_id="desk-a.reader", auto_offset_reset="earliest")
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=15_000)
        assert sum(len(records) for records in batch.values()) >= 1
    finally:
        await consumer.stop()
    # Another desk's: events, positions and notifications all refused, nothing read.
    for kind in KINDS:
        topic = s.account_topic("bob", kind)
        consumer = AIOKafkaConsumer(
            topic, **desk.aiokafka(group_id=f"desk-a.{kind}", auto_offset_reset="earliest")
        )
        read: list[object] = []
        try:
            with pytest.raises(TopicAuthorizationFailedError) as refused:
                async with asyncio.timeout(30):
                    await consumer.start()
                    while True:
                        batch = await consumer.getmany(timeout_ms=1_000)
                        read += [r for records in batch.values() for r in records]
            secure.errors.append(str(refused.value))
        finally:
            await consumer.stop()
        assert read == [], f"desk-a read {topic}"
    # ... and so is a consumer group not the desk's: another desk's, or one that merely starts
    # with the desk's name (as a desk "desk-ab"'s would).
    for group in ("desk-b.reader", "desk-a-reader"):
        stranger = AIOKafkaConsumer(
            own, **desk.aiokafka(group_id=group, auto_offset_reset="earliest")
        )
        with pytest.raises(GroupAuthorizationFailedError):
            await stranger.start()
            await stranger.getmany(timeout_ms=10_000)
        await stranger.stop()


async def test_the_sink_writes_only_dead_letters(secure: SecureStack) -> None:
    s = secure.settings
    sink = secure.user(COMPONENT_PRINCIPALS["sink"])
    dead = s.topic(Topic.DEAD_LETTERS)
    since = await end_offsets(secure.admin, dead, wait_s=10)
    marker = f"allowed-{uuid.uuid4().hex}".encode()
    producer = AIOKafkaProducer(**sink.aiokafka(acks="all"))
    await producer.start()
    try:
        await producer.send_and_wait(dead, marker, key=b"k")
    finally:
        await producer.stop()
    assert marker in await _values_since(secure.admin, dead, since)
    for topic in (Topic.ORDER_EVENTS, Topic.ORDER_REQUESTS, Topic.POSITIONS, Topic.METRICS):
        await _refused_write(secure, sink, s.topic(topic), TopicAuthorizationFailedError)


async def test_no_kafka_password_in_any_log_event_dead_letter_or_error(
    secure: SecureStack,
) -> None:
    broker_logs = [secure.stack.broker.log_file, secure.stack.broker.stdout_file]
    texts = await visible_texts(secure.settings, secure.services, *broker_logs)
    texts += secure.errors
    secrets = stored_secrets(secure.settings, secure.keys)
    passwords = load_kafka_users(secure.settings.resolved_secrets_file)
    assert set(passwords) >= {*COMPONENT_PRINCIPALS.values(), *DESKS}
    assert all(p in secrets for p in passwords.values())
    assert_no_secret(texts, secrets)
    # Nor in what the settings and connections show of themselves.
    shown = [repr(secure.settings), repr(secure.admin), repr(secure.user("desk-a"))]
    assert_no_secret(shown, list(passwords.values()))
