"""The mixed order flow every chaos scenario runs, against a full stack, with the scenario's
fault running beside it.

The stack: its own Kafka broker on free ports (or ``bootstrap``), the paper exchange, the
gateway, one worker, the position keeper and the notifier (console channel), each a real
process. The flow (spread over accounts, paced): a quarter marketable buys and a quarter
marketable sells (expected: filled), a quarter resting orders cancelled by the client
``cancel_after_s`` after submitting, a quarter resting orders with a short
``auto_cancel_timeout`` (cancelled, reason auto_cancelled). An order whose every attempt
was refused ends rejected (retries exhausted), which is correct too.

The fault is a coroutine given a :class:`FaultContext`; it runs from the first order, may
wait for ``ctx.published`` (every order and cancel sent) or ``ctx.stop`` (every order ended,
or the time limit), must undo what it injected before returning, and returns what it did
(``faults`` of the result; a ``summary`` key is printed in the verdict line).
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from oms.auth.signing import RequestSigner
from oms.kafka.reading import topic_partitions
from oms.kafka.security import as_connection
from oms.schemas import (
    CommandType,
    NotificationRecord,
    OrderEvent,
    OrderRequest,
    Topic,
    now_ms,
)
from oms.secrets import SecretStore, SigningKeys
from oms.settings import Settings
from oms_dev.chaos.verdict import (
    TERMINAL,
    audit_notifications,
    audit_orders,
    compare_positions,
    make_result,
    order_counts,
)
from oms_dev.devstack.kafka import KafkaBroker
from oms_dev.harness import (
    OmsServices,
    ServiceProcess,
    isolated_settings,
    paper_admin,
    start_bench_broker,
    start_paper_stack,
    wait_http_ok,
    worker_ready,
)

KINDS = ("market_buy", "market_sell", "client_cancel", "auto_cancel")
StatusFn = Callable[[str], None]


@dataclass
class FlowConfig:
    """The order flow and the checks around it."""

    orders: int = 1_000
    rate: float = 50.0  # orders/s
    accounts: int = 20
    partitions: int = 8
    auto_cancel_s: float = 4.0
    cancel_after_s: float = 1.0
    timeout_s: float = 240.0  # for every order to end once the flow is published
    settle_s: float = 3.0  # after the end: a late duplicate terminal event would show
    notify_timeout_s: float = 60.0
    positions_timeout_s: float = 30.0
    bootstrap: str | None = None  # None: an isolated broker (needed to restart it)


@dataclass
class ChaosStack:
    """The processes one scenario runs against."""

    base: Path
    broker: KafkaBroker | None
    bootstrap: str
    settings: Settings
    services: OmsServices

    @property
    def worker(self) -> ServiceProcess:
        return self.services["worker-0"]

    async def restart_worker(self, within: float = 120.0) -> float:
        """Start the (killed) worker again and wait until it serves; returns the seconds."""
        t0 = time.monotonic()
        self.worker.start()
        await worker_ready(self.settings.worker.web_port, within)
        return time.monotonic() - t0

    def dead_services(self) -> list[str]:
        """Services whose process exited on its own."""
        return [name for name, s in self.services.processes.items() if not s.alive]

    async def stop(self) -> None:
        self.services.stop_all()
        if self.broker is not None:
            await self.broker.astop()


@dataclass
class FaultContext:
    """What a scenario's fault coroutine gets."""

    stack: ChaosStack
    config: FlowConfig
    on_status: StatusFn
    published: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0  # orders published so far

    @property
    def flow_seconds(self) -> float:
        """How long publishing the flow takes at its rate."""
        return self.config.orders / self.config.rate

    async def paper_admin(self, method: str, **params: Any) -> Any:
        return await paper_admin(self.stack.settings, method, **params)


Fault = Callable[[FaultContext], Coroutine[Any, Any, dict[str, Any]]]


def chaos_settings(base: Path, bootstrap: str, accounts: list[str], config: FlowConfig) -> Settings:
    """Isolated settings tuned for a stack whose connections are cut often."""
    settings = isolated_settings(
        base, bootstrap, accounts, partitions=config.partitions, label="chaos"
    )
    return settings.model_copy(
        update={
            # Sessions may never live 30 s here, so the client's reconnect backoff would climb
            # to its 10 s cap and keep the OMS offline most of the run: cap it at 1 s.
            "exchange": settings.exchange.model_copy(update={"reconnect_max_delay": 1.0}),
            "worker": settings.worker.model_copy(
                update={"recovery_check_interval_s": 1.0, "submit_timeout_s": 5.0}
            ),
            "lifecycle": settings.lifecycle.model_copy(
                update={
                    "check_interval": 0.5,
                    "monitoring_interval": 5.0,
                    "retry_attempts": 4,
                    "retry_delay": 0.2,
                    "retry_max_delay": 2.0,
                    "metrics_sample_interval": 0.0,
                }
            ),
        }
    )


async def start_paper(
    config: FlowConfig, on_status: StatusFn, tune: Callable[[Settings], Settings] | None = None
) -> ChaosStack:
    """Broker (or ``config.bootstrap``), paper exchange, gateway and worker, all ready;
    ``tune`` adjusts the settings before anything starts (a scenario's own knobs)."""
    base = Path(tempfile.mkdtemp(prefix="oms-chaos-"))
    broker, bootstrap = await start_bench_broker(
        base, config.partitions, config.bootstrap, on_status
    )
    try:
        accounts = [f"chaos-{i}" for i in range(config.accounts)]
        settings = chaos_settings(base, bootstrap, accounts, config)
        if tune is not None:
            settings = tune(settings)
        services, _ = await start_paper_stack(settings, base / "logs", on_status)
    except BaseException:
        if broker is not None:
            await broker.astop()
        raise
    return ChaosStack(base, broker, bootstrap, settings, services)


async def start_stack(config: FlowConfig, on_status: StatusFn) -> ChaosStack:
    """Broker, paper exchange, gateway, worker, position keeper and notifier, all ready."""
    stack = await start_paper(config, on_status)
    settings, services = stack.settings, stack.services
    try:
        on_status("starting position keeper and notifier")
        services.add_position_keeper()
        services.add_notifier()
        services.start_all()
        await wait_http_ok(
            f"http://127.0.0.1:{settings.positions.web_port}/health",
            120.0,
            ready=lambda body: bool(body.get("ready")),
        )
        await wait_http_ok(f"http://127.0.0.1:{settings.notify.web_port}/health", 120.0)
    except BaseException:
        await stack.stop()
        raise
    return stack


def plan_requests(
    config: FlowConfig, accounts: list[str], run: str
) -> list[tuple[str, OrderRequest]]:
    """The flow's orders with their kind (see the module docstring)."""
    out = []
    for i in range(config.orders):
        kind = KINDS[i % len(KINDS)]
        fields: dict[str, Any] = {
            "request_id": f"{run}-{i}",
            "account_id": accounts[i % len(accounts)],
            "instrument_name": "BTC-PERPETUAL",
            "amount": 10.0,
        }
        if kind == "market_buy":
            fields |= {"direction": "buy", "order_type": "market"}
        elif kind == "market_sell":
            fields |= {"direction": "sell", "order_type": "market"}
        else:
            fields |= {"direction": "buy", "order_type": "limit", "price": 1_000.0}
            if kind == "auto_cancel":
                fields["metadata"] = {"auto_cancel_timeout": config.auto_cancel_s}
        out.append((kind, OrderRequest(**fields)))
    return out


class TopicCollector:
    """Every record of a topic from its beginning (the topics are the run's own), decoded
    with ``parse``; survives a broker restart (aiokafka reconnects, positions are kept)."""

    def __init__(self, bootstrap: str, topic: str, on_record: Callable[[bytes], None]) -> None:
        self._consumer = AIOKafkaConsumer(
            **as_connection(bootstrap).aiokafka(),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self._topic = topic
        self._on_record = on_record
        self._task: asyncio.Task[None] | None = None
        self.records = 0

    async def start(self) -> None:
        await self._consumer.start()
        tps = await topic_partitions(self._consumer, self._topic)
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=200, max_records=5_000)
            except KafkaError:  # the broker is away: the consumer reconnects on its own
                await asyncio.sleep(0.5)
                continue
            for messages in batch.values():
                for message in messages:
                    self.records += 1
                    self._on_record(message.value or b"")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._consumer.stop()


class EventLog:
    """Order events of the run: all of them, and the terminal states per order."""

    def __init__(self) -> None:
        self.events: list[OrderEvent] = []
        self.terminal: dict[str, dict[str, OrderEvent]] = defaultdict(dict)

    def add(self, raw: bytes) -> None:
        event = OrderEvent.from_bytes(raw)
        self.events.append(event)
        if event.status in TERMINAL and event.previous_status is not None:
            # Keyed by status: a re-announcement of the same status is one state.
            self.terminal[event.order_id].setdefault(event.status.value, event)


async def exchange_positions(settings: Settings) -> dict[tuple[str, str], float]:
    """Every account's ``private/get_positions`` (HTTP, basic auth) by account and
    instrument."""
    store = SecretStore(settings.resolved_secrets_file)
    url = f"http://{settings.paper.host}:{settings.paper.port}/api/v2/private/get_positions"
    out: dict[tuple[str, str], float] = {}
    async with aiohttp.ClientSession() as session:
        for account in settings.accounts:
            creds = store.credentials(account)
            assert creds is not None, account
            token = base64.b64encode(f"{creds.client_id}:{creds.client_secret}".encode())
            body = {"jsonrpc": "2.0", "id": 1, "method": "private/get_positions",
                    "params": {"currency": "any"}}  # fmt: skip
            headers = {"Authorization": f"Basic {token.decode()}"}
            async with session.post(url, json=body, headers=headers) as resp:
                data = await resp.json()
            if "error" in data:
                raise RuntimeError(f"get_positions {account}: {data['error']}")
            for p in data["result"]:
                out[(account, p["instrument_name"])] = float(p.get("size") or 0.0)
    return out


async def keeper_positions(settings: Settings) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{settings.positions.web_port}/positions"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        body: list[dict[str, Any]] = await resp.json()
    return body


async def _send(
    producer: AIOKafkaProducer, topic: str, request: OrderRequest, signer: RequestSigner
) -> None:
    """Publish, signed, retrying a send the broker did not confirm (while it restarts): a
    request published twice is one order (the worker answers the second with a
    ``duplicate`` event, which is no terminal state). Each attempt is signed afresh, so a
    first copy the broker did keep is a duplicate, not a replay."""
    for attempt in range(6):
        value, headers = signer.message(request)
        try:
            await producer.send_and_wait(
                topic, value=value, key=request.key.encode(), headers=headers
            )
            return
        except KafkaError:
            if attempt == 5:
                raise
            await asyncio.sleep(2.0)


async def _wait_until(check: Callable[[], bool], deadline: float, step: float = 0.5) -> bool:
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


class PacedFlow:
    """The flow's orders (:func:`plan_requests`) published at ``config.rate``, the client
    cancels ``cancel_after_s`` after theirs, and the run's order events as they come."""

    def __init__(self, stack: ChaosStack, config: FlowConfig, run: str) -> None:
        self.settings = stack.settings
        self.config = config
        self.log = EventLog()
        self.planned = plan_requests(config, self.settings.accounts, run)
        self.kind_of = {request.key: kind for kind, request in self.planned}
        self._signer = RequestSigner(SigningKeys(self.settings.resolved_secrets_file))
        self._events = TopicCollector(
            stack.bootstrap, self.settings.topic(Topic.ORDER_EVENTS), self.log.add
        )
        # Not idempotent: aiokafka's idempotent producer fails for good
        # (OutOfOrderSequenceNumber) after the broker restarts. A request sent twice is one
        # order (see _send).
        self._producer = AIOKafkaProducer(
            **as_connection(stack.bootstrap).aiokafka(),
            linger_ms=1,
            acks="all",
            request_timeout_ms=30_000,
        )

    async def start(self) -> None:
        await self._events.start()
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()
        await self._events.stop()

    def ended(self) -> int:
        """Orders of the flow with a terminal state so far."""
        return sum(1 for oid in self.kind_of if self.log.terminal.get(oid))

    def all_ended(self) -> bool:
        return all(self.log.terminal.get(oid) for oid in self.kind_of)

    async def wait_all_ended(self, deadline: float) -> bool:
        """Wait until every order ended or ``deadline`` (monotonic); whether they all did."""
        return await _wait_until(self.all_ended, deadline)

    async def publish(self, on_sent: Callable[[int], None] = lambda _: None) -> None:
        """Send every order, paced, and its client cancel; returns once all were sent.
        ``on_sent(n)`` runs after the n-th order went out (raising stops the flow)."""
        config = self.config
        topic = self.settings.topic(Topic.ORDER_REQUESTS)

        async def cancel_later(request: OrderRequest) -> None:
            await asyncio.sleep(config.cancel_after_s)
            cancel = OrderRequest(
                command=CommandType.CANCEL,
                request_id=f"cancel-{request.request_id}",
                account_id=request.account_id,
                order_id=request.key,
            )
            await _send(self._producer, topic, cancel, self._signer)

        pending: set[asyncio.Task[None]] = set()
        t0 = time.monotonic()
        for i, (kind, request) in enumerate(self.planned):
            if (delay := t0 + i / config.rate - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            request.created_at = now_ms()
            # Sent in the background so a broker restart does not stop the pacing.
            pending.add(asyncio.create_task(_send(self._producer, topic, request, self._signer)))
            if kind == "client_cancel":
                pending.add(asyncio.create_task(cancel_later(request)))
            on_sent(i + 1)
        await asyncio.gather(*pending)

    async def audit(self) -> dict[str, Any]:
        """:func:`oms_dev.chaos.verdict.audit_orders` against the orders the paper exchange
        holds per label; duplicates at the exchange also count the labels it saw twice."""
        at_exchange: dict[str, list[dict[str, Any]]] = {}
        gate = asyncio.Semaphore(32)

        async def lookup(order_id: str) -> None:
            async with gate:
                at_exchange[order_id] = list(
                    await paper_admin(self.settings, "admin/get_orders_by_label", label=order_id)
                )

        await asyncio.gather(*(lookup(oid) for oid in self.kind_of))
        stats = await paper_admin(self.settings, "admin/get_stats", include_labels=False)
        orders = audit_orders(self.kind_of, self.log.terminal, at_exchange)
        labels_twice = len(stats.get("duplicate_labels", {}))
        orders["duplicates_at_exchange"] = max(orders["duplicates_at_exchange"], labels_twice)
        orders["details"]["exchange_duplicate_labels"] = labels_twice
        # What happened to a few lost orders, to tell where they stopped.
        lost = set(orders["details"]["examples"]["lost"])
        histories: dict[str, list[str]] = {oid: [] for oid in lost}
        for event in self.log.events:
            if event.order_id in lost:
                reason = f" ({event.reason_code.value})" if event.reason_code else ""
                histories[event.order_id].append(f"{event.event_type.value}{reason}")
        orders["details"]["lost_histories"] = {
            oid: {"events": events, "at_exchange": [o.get("order_state") for o in at_exchange[oid]]}
            for oid, events in histories.items()
        }
        return orders


async def run_flow(
    scenario: str, config: FlowConfig, fault: Fault, on_status: StatusFn = print
) -> dict[str, Any]:
    """Start the stack, run the flow with ``fault`` beside it, audit, stop; the result has
    the shape of :func:`oms_dev.chaos.verdict.make_result`."""
    stack = await start_stack(config, on_status)
    try:
        return await _run_on(stack, scenario, config, fault, on_status)
    finally:
        await stack.stop()


async def _run_on(
    stack: ChaosStack, scenario: str, config: FlowConfig, fault: Fault, on_status: StatusFn
) -> dict[str, Any]:
    settings = stack.settings
    flow = PacedFlow(stack, config, f"{scenario}-{uuid.uuid4().hex[:6]}")
    log = flow.log
    records: list[NotificationRecord] = []
    notes = TopicCollector(
        stack.bootstrap,
        settings.topic(Topic.NOTIFICATIONS),
        lambda raw: records.append(NotificationRecord.from_bytes(raw)),
    )
    await flow.start()
    await notes.start()
    ctx = FaultContext(stack, config, on_status)
    fault_task = asyncio.create_task(fault(ctx))
    t0 = time.monotonic()
    try:
        on_status(f"{scenario}: publishing {config.orders} orders")

        def sent(n: int) -> None:
            ctx.sent = n
            if fault_task.done():
                fault_task.result()  # a fault that failed stops the run with its error
            if n % 50 == 1:
                on_status(f"{scenario}: {n:,}/{config.orders:,} sent, {flow.ended():,} ended")

        await flow.publish(sent)
        ctx.published.set()

        deadline = time.monotonic() + config.timeout_s
        on_status(f"{scenario}: waiting for every order to end")
        await flow.wait_all_ended(deadline)
        ctx.stop.set()
        faults = await fault_task
        await flow.wait_all_ended(deadline)
        elapsed = time.monotonic() - t0
        await asyncio.sleep(config.settle_s)

        on_status(f"{scenario}: checking notifications")
        n_lost, n_doubled, n_details = audit_notifications(log.events, records)
        n_deadline = time.monotonic() + config.notify_timeout_s
        while n_lost and time.monotonic() < n_deadline:
            await asyncio.sleep(1.0)
            n_lost, n_doubled, n_details = audit_notifications(log.events, records)
    finally:
        if not fault_task.done():
            fault_task.cancel()
        await flow.stop()
        await notes.stop()

    on_status(f"{scenario}: checking positions and the exchange, label by label")
    p_deadline = time.monotonic() + config.positions_timeout_s
    while True:
        mismatched, p_examples = compare_positions(
            await keeper_positions(settings), await exchange_positions(settings)
        )
        if not mismatched or time.monotonic() > p_deadline:
            break
        await asyncio.sleep(1.0)
    orders = await flow.audit()
    dead = stack.dead_services()
    mismatch_events = sum(1 for e in log.events if e.event_type.value == "position_mismatch")
    details = {
        **orders["details"],
        "events": len(log.events),
        "position_mismatch_events": mismatch_events,
        "positions_examples": p_examples,
        "notifications": n_details,
        "services_restarted": {n: s.starts for n, s in stack.services.processes.items()},
    }
    return make_result(
        scenario,
        requests=config.orders,
        **order_counts(orders),
        positions_mismatched=mismatched,
        notifications_lost=n_lost,
        notifications_doubled=n_doubled,
        faults=faults,
        seconds=elapsed,
        details=details,
        extra_failure=f"services down at the end: {', '.join(dead)}" if dead else None,
    )
