"""``oms bench e2e``: orders through the whole real path, against a raw Kafka baseline.

Self-contained: starts a Kafka broker on free ports, the paper exchange, the gateway and a
worker, publishes N order requests (optionally paced), and measures, per order, the time
from publishing the request to receiving its first exchange-acknowledged order event.

Baseline, same broker, same run: a raw aiokafka produce -> consume -> produce -> consume
passthrough of messages of the same sizes (request in, event out), i.e. what two Kafka hops
cost with no order logic at all.

``preload``: before the workers start, their table is filled with that many ended orders
(:mod:`oms_dev.benchmarks.preload`), and the figures say how many the table held when the
measured orders were published and what the workers' resident memory was.
:func:`run_e2e_compare_preload` runs the same load without, then with, on one broker.

Nothing is timed on a cold stack: the broker first carries ``broker_warmup`` messages, then
the stack ``warmup`` orders. ``cpu_budget`` is what an order cost in CPU in every process on
the machine, the broker and this benchmark's own clients included, and the order rate at
which that fills every core, with and without the workers' share: the most the workers'
speed alone could bring on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from oms.auth.signing import RequestSigner
from oms.kafka.acls import COMPONENT_PRINCIPALS, acl_rules, apply_acls
from oms.kafka.admin import ensure_topics
from oms.kafka.security import KafkaConnection, as_connection
from oms.schemas import OrderEvent, OrderEventType, OrderRequest, Topic
from oms.schemas.risk import AccountLimits
from oms.secrets import Credentials, SigningKeys, write_secrets_file, write_signing_keys
from oms.settings import Settings
from oms_dev.benchmarks.preload import preload_ended_orders
from oms_dev.devstack.kafka import KafkaBroker
from oms_dev.devstack.kafka.secure import BrokerSecurity
from oms_dev.devstack.net import free_port
from oms_dev.devstack.stack import connect_settings
from oms_dev.harness import TIER1_RATE, OmsServices, isolated_settings, worker_ready

# A request's wire form: its value and the headers that sign it (none when unsigned).
Encode = Callable[[OrderRequest], tuple[bytes, list[tuple[str, bytes]]]]

ACK_EVENTS = frozenset(
    {
        OrderEventType.OPEN,
        OrderEventType.PARTIALLY_FILLED,
        OrderEventType.FILLED,
        OrderEventType.CANCELLED,
        OrderEventType.REJECTED,
    }
)


@dataclass
class E2EConfig:
    orders: int = 2_000
    rate: float | None = None
    accounts: int | None = None
    partitions: int = 8
    # Orders through the stack before the measured ones, unmeasured (a stack in service is
    # warm: connections open, caches filled, the broker's hot paths compiled).
    warmup: int = 500
    timeout_s: float = 300.0
    # Signed requests verified by the edge plus every pre-trade risk check: the default
    # configuration. False measures trusted mode with the checks off, for comparison.
    secure: bool = True
    # Order-processing workers in one consumer group.
    workers: int = 1
    # Ended orders in the workers' table before they start (0: an empty table).
    preload: int = 0
    # Seconds of no orders after the warm-up, during which each process's CPU is measured
    # (0: none): what the stack costs when nothing happens.
    idle_s: float = 0.0
    # Messages put through a fresh broker before anything is measured (its JIT warm-up).
    broker_warmup: int = 30_000


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(values_ms: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values_ms, 50), 2),
        "p90": round(percentile(values_ms, 90), 2),
        "p99": round(percentile(values_ms, 99), 2),
        "max": round(max(values_ms), 2) if values_ms else math.nan,
        "mean": round(statistics.fmean(values_ms), 2) if values_ms else math.nan,
    }


def accounts_needed(config: E2EConfig) -> int:
    if config.accounts:
        return config.accounts
    # Enough tier-1 accounts that the exchange's per-account limit is never what is measured:
    # each account is kept under 40% of its matching-engine rate, since a token bucket run
    # near its limit queues (measured: 13 accounts at 300/s gave p50 5.8 s, 50 gave 71 ms).
    target = config.rate or 600.0
    return max(50, math.ceil(target / (TIER1_RATE * 0.4)))


def make_requests(n: int, accounts: list[str], prefix: str) -> list[OrderRequest]:
    """Half resting limit orders far from the market, half marketable: both get acked."""
    requests = []
    for i in range(n):
        marketable = i % 2 == 0
        buy = i % 4 < 2
        requests.append(
            OrderRequest(
                request_id=f"{prefix}-{i}",
                account_id=accounts[i % len(accounts)],
                instrument_name="BTC-PERPETUAL",
                amount=10.0,
                direction="buy" if buy else "sell",
                order_type="market" if marketable else "limit",
                price=None if marketable else (1_000.0 if buy else 1_000_000.0),
            )
        )
    return requests


class EventCollector:
    """Reads order-events from the end and records the first ack time of each order."""

    def __init__(self, kafka: KafkaConnection | str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(**as_connection(kafka).aiokafka(enable_auto_commit=False))
        self._topic = topic
        self.first_ack: dict[str, float] = {}
        self.first_ack_type: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._wanted: set[str] = set()
        self._done = asyncio.Event()

    async def start(self) -> None:
        await self._consumer.start()
        parts = [
            TopicPartition(self._topic, p)
            for p in self._consumer.partitions_for_topic(self._topic) or []
        ]
        if not parts:
            await self._consumer._client.force_metadata_update()
            parts = [
                TopicPartition(self._topic, p)
                for p in self._consumer.partitions_for_topic(self._topic) or []
            ]
        self._consumer.assign(parts)
        await self._consumer.seek_to_end(*parts)
        for tp in parts:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    def expect(self, order_ids: set[str]) -> None:
        self._wanted = set(order_ids)
        self._done.clear()
        if self._wanted <= self.first_ack.keys():
            self._done.set()

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=100, max_records=5_000)
            now = time.perf_counter()
            for messages in batch.values():
                for message in messages:
                    event = OrderEvent.from_bytes(message.value)
                    if event.event_type in ACK_EVENTS and event.order_id not in self.first_ack:
                        self.first_ack[event.order_id] = now
                        self.first_ack_type[event.order_id] = event.event_type.value
            if self._wanted and self._wanted <= self.first_ack.keys():
                self._done.set()

    async def wait(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._done.wait(), seconds)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self._consumer.stop()


async def publish(
    producer: AIOKafkaProducer,
    topic: str,
    requests: list[OrderRequest],
    rate: float | None,
    sent_at: dict[str, float],
    *,
    encode: Encode,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Publish ``requests`` at ``rate``, each encoded by ``encode`` (signed in the default
    configuration: :func:`secure_setup` says which), noting when each was sent."""
    start = time.perf_counter()
    for i, request in enumerate(requests):
        if rate:
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        sent_at[request.key] = time.perf_counter()
        value, headers = encode(request)
        await producer.send(topic, value=value, key=request.key.encode(), headers=headers)
        if on_progress and i % 100 == 0:
            on_progress(i)
    await producer.flush()


async def baseline_passthrough(
    bootstrap: KafkaConnection | str,
    prefix: str,
    n: int,
    request_size: int,
    event_size: int,
    partitions: int,
) -> float:
    """Messages/s of raw produce -> consume -> produce -> consume (two hops), same broker."""
    t_in, t_out = f"{prefix}baseline-in", f"{prefix}baseline-out"
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**as_connection(bootstrap).aiokafka())
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, partitions, 1) for t in (t_in, t_out)], validate_only=False
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(**as_connection(bootstrap).aiokafka(), linger_ms=2)
    relay_producer = AIOKafkaProducer(**as_connection(bootstrap).aiokafka(), linger_ms=2)
    relay = AIOKafkaConsumer(
        t_in,
        **as_connection(bootstrap).aiokafka(),
        group_id=f"{prefix}relay",
        auto_offset_reset="earliest",
    )
    sink = AIOKafkaConsumer(
        t_out,
        **as_connection(bootstrap).aiokafka(),
        group_id=f"{prefix}sink",
        auto_offset_reset="earliest",
    )
    for client in (producer, relay_producer, relay, sink):
        await client.start()
    request_body = b"x" * request_size
    event_body = b"y" * event_size
    received = 0
    done = asyncio.Event()

    async def run_relay() -> None:
        async for message in relay:
            await relay_producer.send(t_out, value=event_body, key=message.key)

    async def run_sink() -> None:
        nonlocal received
        async for _ in sink:
            received += 1
            if received >= n:
                done.set()

    tasks = [asyncio.create_task(run_relay()), asyncio.create_task(run_sink())]
    # Both groups must own their partitions before anything is timed.
    while not relay.assignment() or not sink.assignment():  # noqa: ASYNC110 - no event exists
        await asyncio.sleep(0.05)
    start = time.perf_counter()
    for i in range(n):
        await producer.send(t_in, value=request_body, key=f"k{i}".encode())
    await producer.flush()
    await asyncio.wait_for(done.wait(), 300)
    elapsed = time.perf_counter() - start
    for task in tasks:
        task.cancel()
    for client in (producer, relay_producer, relay, sink):
        await client.stop()
    return n / elapsed


async def start_warm_broker(
    broker: KafkaBroker, config: E2EConfig, on_status: Callable[[str], None]
) -> float | None:
    """Start ``broker`` and put ``config.broker_warmup`` messages through it (the baseline's
    two hops, unmeasured); returns the seconds that took.

    A fresh broker spends its first tens of seconds under load compiling its hot paths (the
    JVM's JIT): measured on a cold broker, Kafka took 2.3 ms of CPU per order against 1.3-1.5
    once warm, on cores the OMS shares, and the first run's throughput came out ~20% lower.
    A broker in service is warm; so is this one before anything is timed.
    """
    on_status("starting Kafka")
    await broker.astart(die_with_parent=True)
    if not config.broker_warmup:
        return None
    on_status(f"warming Kafka up ({config.broker_warmup} messages through two hops)")
    started = time.perf_counter()
    await baseline_passthrough(
        # The admin's login on a secure broker (--secure-transport), plaintext otherwise.
        broker.admin_connection(),
        "warmup.",
        config.broker_warmup,
        300,
        1_500,
        config.partitions,
    )
    return round(time.perf_counter() - started, 1)


async def run_e2e(config: E2EConfig, on_status: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark (one worker, or ``config.workers``) and return its figures."""
    base = Path(tempfile.mkdtemp(prefix="oms-bench-e2e-"))
    broker = KafkaBroker.isolated(base / "kafka", partitions=config.partitions)
    try:
        warmup_s = await start_warm_broker(broker, config, on_status)
        result = await _measure(config, broker, base, config.workers, on_status, True)
        return {**result, "broker_warmup_s": warmup_s}
    finally:
        await broker.astop()


async def run_e2e_scaling(
    config: E2EConfig, worker_counts: list[int], on_status: Callable[[str], None] = print
) -> dict[str, Any]:
    """The same load with each number of workers in turn, on one broker; ``scaling`` is the
    throughput of the largest count over the smallest's."""
    base = Path(tempfile.mkdtemp(prefix="oms-bench-e2e-"))
    broker = KafkaBroker.isolated(base / "kafka", partitions=config.partitions)
    runs: dict[str, dict[str, Any]] = {}
    try:
        await start_warm_broker(broker, config, on_status)
        for n in worker_counts:
            runs[str(n)] = await _measure(
                config, broker, base / f"workers-{n}", n, on_status, n == worker_counts[0]
            )
    finally:
        await broker.astop()
    low, high = runs[str(min(worker_counts))], runs[str(max(worker_counts))]
    a, b = low["throughput_per_s"], high["throughput_per_s"]
    return {
        "workers": {n: r["throughput_per_s"] for n, r in runs.items()},
        "scaling": round(b / a, 3) if a else None,
        "cpu_count": os.cpu_count(),
        "runs": runs,
    }


async def run_e2e_compare_preload(
    config: E2EConfig, preload: int, on_status: Callable[[str], None] = print
) -> dict[str, Any]:
    """The same load with ``preload`` ended orders in the table, and with an empty table, on
    one broker; ``throughput_preloaded_vs_empty`` is the first's throughput over the
    second's. A run with an empty table goes first (it also measures the baseline), so that
    neither compared run pays for what a first run warms up, the broker's warm-up
    (:func:`start_warm_broker`) notwithstanding. The empty run compared comes after the
    preloaded one."""
    base = Path(tempfile.mkdtemp(prefix="oms-bench-e2e-"))
    broker = KafkaBroker.isolated(base / "kafka", partitions=config.partitions)
    runs: dict[str, dict[str, Any]] = {}
    try:
        await start_warm_broker(broker, config, on_status)
        for name, count in (("warm_up", 0), ("preloaded", preload), ("empty", 0)):
            on_status(f"run {name}")
            runs[name] = await _measure(
                replace(config, preload=count),
                broker,
                base / name,
                config.workers,
                on_status,
                name == "warm_up",
            )
    finally:
        await broker.astop()
    empty, loaded = runs["empty"], runs["preloaded"]
    a, b = empty["throughput_per_s"], loaded["throughput_per_s"]
    return {
        "preload": preload,
        "throughput_empty_per_s": a,
        "throughput_preloaded_per_s": b,
        "throughput_preloaded_vs_empty": round(b / a, 3) if a else None,
        "throughput_warm_up_per_s": runs["warm_up"]["throughput_per_s"],
        "worker_cpu_ms_per_order": {
            name: run["worker_cpu_ms_per_order"] for name, run in runs.items()
        },
        "worker_rss_mb": {name: run["worker_rss_mb"] for name, run in runs.items()},
        "table_orders": {name: run["table_orders"] for name, run in runs.items()},
        "runs": runs,
    }


async def run_e2e_secure_transport(
    config: E2EConfig, on_status: Callable[[str], None] = print
) -> dict[str, Any]:
    """The same load over plaintext, then over SASL_SSL (TLS, SCRAM-SHA-512, every component
    its own principal, the ACL table enforced), each on a fresh broker of its own;
    ``sasl_ssl_vs_plaintext`` is the second's throughput over the first's."""
    base = Path(tempfile.mkdtemp(prefix="oms-bench-e2e-"))
    runs: dict[str, dict[str, Any]] = {}
    for name in ("plaintext", "sasl_ssl"):
        security = None
        if name == "sasl_ssl":
            security = BrokerSecurity.ensure(
                base / name / "tls", base / name / "kafka-users.json", COMPONENT_PRINCIPALS.values()
            )
        broker = KafkaBroker.isolated(
            base / name / "kafka", partitions=config.partitions, security=security
        )
        on_status(f"{name}:")
        try:
            await start_warm_broker(broker, config, on_status)
            runs[name] = await _measure(
                config, broker, base / name / "run", config.workers, on_status, False
            )
        finally:
            await broker.astop()
    plain, tls = runs["plaintext"]["throughput_per_s"], runs["sasl_ssl"]["throughput_per_s"]
    return {
        "throughput_plaintext_per_s": plain,
        "throughput_sasl_ssl_per_s": tls,
        "sasl_ssl_vs_plaintext": round(tls / plain, 3) if plain else None,
        "latency_ms_plaintext": runs["plaintext"]["latency_ms"],
        "latency_ms_sasl_ssl": runs["sasl_ssl"]["latency_ms"],
        "runs": runs,
    }


def _worker_rss_mb(services: OmsServices) -> float:
    """Resident memory of the workers (and their children), MB."""
    total = 0
    for name, service in services.processes.items():
        if not name.startswith("worker-") or service.proc is None:
            continue
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(service.proc.pid)
            total += proc.memory_info().rss
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
    return round(total / (1024 * 1024), 1)


async def table_orders(web_ports: list[int]) -> int | None:
    """Orders in the workers' tables (their ``/stats``; None from workers that do not say,
    such as those of earlier versions)."""
    total = 0
    async with aiohttp.ClientSession() as session:
        for port in web_ports:
            async with session.get(f"http://127.0.0.1:{port}/stats") as resp:
                table = (await resp.json()).get("table")
            if table is None:
                return None
            total += int(table["orders"])
    return total


async def _wait_for_table(web_ports: list[int], at_least: int, within_s: float) -> None:
    """Until the workers' tables hold ``at_least`` orders (restored from the changelog; a
    worker that does not report its table has restored it when it acknowledges the
    warm-up orders, which it reads only after its recovery)."""
    deadline = time.monotonic() + within_s
    while (held := await table_orders(web_ports)) is not None and held < at_least:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the workers restored {held} of {at_least} preloaded orders")
        await asyncio.sleep(1.0)


def _process_cpu_s(pid: int | None, *, children: bool = True) -> float:
    """User + system CPU seconds of a process (and its children) so far (0 if gone)."""
    if pid is None:
        return 0.0
    try:
        proc = psutil.Process(pid)
        total = sum(proc.cpu_times()[:2])
        for child in proc.children(recursive=True) if children else ():
            with contextlib.suppress(psutil.Error):
                total += sum(child.cpu_times()[:2])
        return float(total)
    except psutil.Error:
        return 0.0


def _cpu_snapshot(services: OmsServices) -> dict[str, float]:
    return {
        name: _process_cpu_s(s.proc.pid if s.proc else None)
        for name, s in services.processes.items()
    }


# The processes besides the OMS's that an order costs CPU in: the broker, and this benchmark
# (the traders' side: signing and publishing requests, reading the events).
KAFKA = "kafka"
LOAD_GENERATOR = "load-generator"


def _machine_cpu_snapshot(services: OmsServices, broker: KafkaBroker) -> dict[str, float]:
    snapshot = _cpu_snapshot(services)
    snapshot[KAFKA] = _process_cpu_s(broker.pid())
    # Its children are the services and the broker, counted above.
    snapshot[LOAD_GENERATOR] = _process_cpu_s(os.getpid(), children=False)
    return snapshot


def cpu_budget(cpu_s: dict[str, float], orders: int, cores: int) -> dict[str, Any]:
    """What an order costs in CPU on this machine, per process, and the order rate at which
    that would fill every core: with everything as measured, and if the workers cost nothing
    (the most that speeding up the workers alone can reach)."""
    per_order = {name: round(s * 1000 / orders, 3) for name, s in cpu_s.items()}
    total = sum(per_order.values())
    workers = sum(v for k, v in per_order.items() if k.startswith("worker-"))
    return {
        "cores": cores,
        "ms_per_order": per_order,
        "total_ms_per_order": round(total, 3),
        "ceiling_per_s": round(cores * 1000 / total, 1) if total > 0 else None,
        "ceiling_without_workers_per_s": (
            round(cores * 1000 / (total - workers), 1) if total > workers else None
        ),
    }


# After the warm-up, before the idle window: the last acknowledgements' work settles.
IDLE_SETTLE_S = 3.0


async def idle_cpu(
    services: OmsServices,
    seconds: float,
    on_status: Callable[[str], None],
    settle_s: float = IDLE_SETTLE_S,
) -> dict[str, float]:
    """CPU milliseconds per second each service uses over ``seconds`` with no orders (after
    ``settle_s``)."""
    on_status(f"idle for {seconds:g} s (CPU measured)")
    await asyncio.sleep(settle_s)
    before = _cpu_snapshot(services)
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    after = _cpu_snapshot(services)
    elapsed = time.perf_counter() - started
    return {name: round((after[name] - before[name]) * 1000 / elapsed, 2) for name in after}


async def _measure(
    config: E2EConfig,
    broker: KafkaBroker,
    base: Path,
    workers: int,
    on_status: Callable[[str], None],
    with_baseline: bool,
) -> dict[str, Any]:
    """Start the services with ``workers`` workers on ``broker``, time the orders, stop. On
    a secure broker the services log in as their own principals, the benchmark as the
    admin."""
    bootstrap = broker.bootstrap
    services: OmsServices | None = None
    try:
        n_accounts = accounts_needed(config)
        accounts = [f"bench-{i}" for i in range(n_accounts)]
        settings = isolated_settings(
            base, bootstrap, accounts, partitions=config.partitions, label="bench"
        )
        write_secrets_file(
            settings.resolved_secrets_file,
            {a: Credentials(f"cid-{a}", secrets.token_hex(16)) for a in accounts},
        )
        settings, encode = secure_setup(settings, accounts, config.secure)
        settings = connect_settings(settings, broker)
        kafka = KafkaConnection.from_settings(settings)
        await ensure_topics(settings)
        if broker.security is not None:
            await apply_acls(kafka, acl_rules(settings))
        preload_s = None
        if config.preload:
            on_status(f"preloading {config.preload} ended orders into the workers' table")
            started = time.perf_counter()
            await preload_ended_orders(
                settings,
                config.preload,
                accounts,
                on_progress=lambda i: on_status(f"preloading: {i} of {config.preload}"),
            )
            preload_s = round(time.perf_counter() - started, 1)
        services = OmsServices(settings, base / "logs")
        services.add_paper_exchange("--accounts-file", str(settings.resolved_secrets_file))
        services.add_gateway()
        ports = [settings.worker.web_port] + [free_port() for _ in range(workers - 1)]
        for i, port in enumerate(ports):
            services.add_worker(i, port)
        on_status(f"starting paper exchange, gateway, {workers} worker(s) ({n_accounts} accounts)")
        services.start_all()
        for port in ports:
            await worker_ready(port, within=600)
        restore_s = None
        if config.preload:
            on_status(f"waiting for the workers to restore {config.preload} orders")
            started = time.perf_counter()
            await _wait_for_table(ports, config.preload, within_s=900)
            restore_s = round(time.perf_counter() - started, 1)

        collector = EventCollector(kafka, settings.topic(Topic.ORDER_EVENTS))
        await collector.start()
        producer = AIOKafkaProducer(**kafka.aiokafka(linger_ms=1))
        await producer.start()
        requests_topic = settings.topic(Topic.ORDER_REQUESTS)
        try:
            on_status(f"warm-up ({config.warmup} orders)")
            warm = make_requests(config.warmup, accounts, f"warm-{uuid.uuid4().hex[:6]}")
            collector.expect({r.key for r in warm})
            await publish(producer, requests_topic, warm, None, {}, encode=encode)
            if not await collector.wait(120):
                raise RuntimeError(
                    "warm-up orders were not acknowledged:\n" + services.diagnostics()
                )

            idle = await idle_cpu(services, config.idle_s, on_status) if config.idle_s else None
            requests = make_requests(config.orders, accounts, f"run-{uuid.uuid4().hex[:6]}")
            sent_at: dict[str, float] = {}
            collector.expect({r.key for r in requests})
            on_status(f"publishing {config.orders} orders to {workers} worker(s)")
            held_before = await table_orders(ports)
            rss_before = _worker_rss_mb(services)
            cpu_before = _machine_cpu_snapshot(services, broker)
            buckets_before = await stage_buckets(ports)
            psutil.cpu_percent(None)  # starts the machine-wide window read below
            t0 = time.perf_counter()
            await publish(producer, requests_topic, requests, config.rate, sent_at, encode=encode)
            complete = await collector.wait(config.timeout_s)
            waited_until = time.perf_counter()
            cpu_after = _machine_cpu_snapshot(services, broker)
            machine_busy = psutil.cpu_percent(None)
            buckets_after = await stage_buckets(ports)
            rss_after = _worker_rss_mb(services)
            held_after = await table_orders(ports)
            acked = [k for k in sent_at if k in collector.first_ack]
            t_end = max(collector.first_ack[k] for k in acked) if acked else time.perf_counter()
            seconds = t_end - t0
            latencies = [(collector.first_ack[k] - sent_at[k]) * 1000 for k in acked]
            ack_types: dict[str, int] = {}
            for k in acked:
                kind = collector.first_ack_type[k]
                ack_types[kind] = ack_types.get(kind, 0) + 1
            request_size = len(requests[0].to_bytes())
        finally:
            await producer.stop()
            await collector.stop()
        throughput = len(acked) / seconds if seconds > 0 else 0.0
        # CPU seconds each process used while the measured orders went through.
        cpu_s = {name: round(cpu_after[name] - cpu_before[name], 2) for name in cpu_after}
        worker_cpu = sum(v for k, v in cpu_s.items() if k.startswith("worker-"))
        result: dict[str, Any] = {
            "orders": config.orders,
            "acknowledged": len(acked),
            "complete": complete,
            "accounts": n_accounts,
            "rate": config.rate,
            "workers": workers,
            "seconds": round(seconds, 3),
            "throughput_per_s": round(throughput, 1),
            "latency_ms": latency_summary(latencies),
            "latency_histogram": latency_histogram(latencies),
            "first_events": ack_types,
            "cpu_s": cpu_s,
            "idle_cpu_ms_per_s": idle,
            "worker_cpu_ms_per_order": round(worker_cpu * 1000 / len(acked), 3) if acked else None,
            # Every process on the machine (other sessions included), % of all cores.
            "machine_cpu_busy_pct": machine_busy,
            "cpu_budget": cpu_budget(cpu_s, len(acked), psutil.cpu_count() or 1) if acked else None,
            "partitions": config.partitions,
            "signing_and_risk_checks": config.secure,
            # Ended orders written into the table before the workers started, how long that
            # and their restore took; the orders the tables held when the measured orders
            # were published and when the last was acknowledged; the workers' RSS then.
            "preload": config.preload,
            "preload_s": preload_s,
            "restore_s": restore_s,
            "table_orders": {"before": held_before, "after": held_after},
            "worker_rss_mb": {"before": rss_before, "after": rss_after},
            # For the charts: the measured orders only (warm-up subtracted), all workers.
            "stage_latency_buckets": bucket_counts(buckets_before, buckets_after),
            "timeline": timeline(
                t0, list(sent_at.values()), [collector.first_ack[k] for k in acked]
            ),
            "max_ack_gap_ms": round(
                max_ack_gap_s(
                    list(sent_at.values()),
                    [collector.first_ack[k] for k in acked],
                    end=waited_until,
                )
                * 1000,
                1,
            ),
        }
        if with_baseline:
            on_status("measuring the raw Kafka baseline")
            baseline = await baseline_passthrough(
                bootstrap,
                settings.kafka.topic_prefix,
                config.orders,
                request_size,
                1_500,
                config.partitions,
            )
            result["baseline_throughput_per_s"] = round(baseline, 1)
            result["ratio"] = round(throughput / baseline, 3) if baseline else None
        return result
    finally:
        if services is not None:
            services.stop_all()


def latency_histogram(values_ms: list[float], bins: int = 50) -> dict[str, Any]:
    """Equal-width bins from 0 to the largest value (for the chart; compact in JSON)."""
    top = max(values_ms, default=0.0) or 1.0
    width = top / bins
    counts = [0] * bins
    for v in values_ms:
        counts[min(bins - 1, int(v / width))] += 1
    return {"edges_ms": [round(i * width, 3) for i in range(bins + 1)], "counts": counts}


TIMELINE_STEP_S = 0.5


def max_ack_gap_s(published: list[float], acknowledged: list[float], end: float) -> float:
    """The longest time during which orders were outstanding and none was acknowledged.

    ``published`` and ``acknowledged`` are the times (any clock, seconds) each order was sent
    and first acknowledged; orders never acknowledged stay outstanding until ``end``. A stall
    shows here even when the mean throughput looks fine.
    """
    events = sorted([(t, 0) for t in published] + [(t, 1) for t in acknowledged])
    outstanding = 0
    since = 0.0  # the last acknowledgement, or when orders became outstanding
    longest = 0.0
    for t, is_ack in events:
        if is_ack:
            if outstanding > 0:
                longest = max(longest, t - since)
                outstanding -= 1
            since = t
        else:
            if outstanding == 0:
                since = t
            outstanding += 1
    if outstanding > 0:
        longest = max(longest, end - since)
    return longest


def timeline(t0: float, published: list[float], acknowledged: list[float]) -> dict[str, Any]:
    """Orders published and acknowledged per second, in steps of ``TIMELINE_STEP_S``."""
    end = max([*published, *acknowledged, t0])
    steps = int((end - t0) / TIMELINE_STEP_S) + 1

    def per_second(times: list[float]) -> list[float]:
        counts = [0] * steps
        for t in times:
            counts[min(steps - 1, max(0, int((t - t0) / TIMELINE_STEP_S)))] += 1
        return [c / TIMELINE_STEP_S for c in counts]

    return {
        "step_s": TIMELINE_STEP_S,
        "published_per_s": per_second(published),
        "acknowledged_per_s": per_second(acknowledged),
    }


# stage -> upper bound (s, "+Inf" as inf) -> cumulative count, summed over workers
StageBuckets = dict[str, dict[float, float]]


async def stage_buckets(web_ports: list[int]) -> StageBuckets:
    """The workers' ``oms_stage_latency_seconds`` histogram buckets (Prometheus text)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: StageBuckets = {}
    async with aiohttp.ClientSession() as session:
        for port in web_ports:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                text = await resp.text()
            for family in text_string_to_metric_families(text):
                if family.name != "oms_stage_latency_seconds":
                    continue
                for sample in family.samples:
                    if sample.name.endswith("_bucket"):
                        stage = out.setdefault(sample.labels["stage"], {})
                        le = float(sample.labels["le"])
                        stage[le] = stage.get(le, 0.0) + sample.value
    return out


def bucket_counts(before: StageBuckets, after: StageBuckets) -> dict[str, list[list[float | None]]]:
    """Per stage, ``[upper bound ms, count]`` of the observations between two scrapes
    (non-cumulative; the last bound, +Inf, is None so that it survives JSON)."""
    out: dict[str, list[list[float | None]]] = {}
    for stage, cumulative in after.items():
        earlier = before.get(stage, {})
        previous = 0.0
        rows = []
        for le in sorted(cumulative):
            total = cumulative[le] - earlier.get(le, 0.0)
            rows.append([None if math.isinf(le) else le * 1000, total - previous])
            previous = total
        if previous > 0:
            out[stage] = rows
    return out


def unsigned(request: OrderRequest) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A request's value without signature headers (trusted mode)."""
    return request.to_bytes(), []


def secure_setup(settings: Settings, accounts: list[str], secure: bool) -> tuple[Settings, Encode]:
    """Settings and request encoder with signing + every risk check on, or both off."""
    if not secure:
        risk = settings.risk.model_copy(update={"auth_mode": "trusted", "checks_enabled": False})
        return settings.model_copy(update={"risk": risk}), unsigned
    keys = {a: {f"{a}-k1": secrets.token_hex(32)} for a in accounts}
    write_signing_keys(settings.resolved_secrets_file, keys)
    # Every limit set, none binding: the checks all run, no order is refused.
    limits = AccountLimits(
        max_order_amount=1e9,
        max_order_notional=1e12,
        max_position=1e12,
        max_position_notional_per_currency={"BTC": 1e15},
        max_open_orders=1_000_000,
        price_band_pct=10_000,
        max_daily_loss={"BTC": 1e9},
    )
    risk = settings.risk.model_copy(
        update={
            "auth_mode": "signed",
            "checks_enabled": True,
            "default_limits": limits,
        }
    )
    signer = RequestSigner(SigningKeys(settings.resolved_secrets_file))
    return settings.model_copy(update={"risk": risk}), signer.message


def dumps(result: dict[str, Any]) -> str:
    return orjson.dumps(result).decode()
