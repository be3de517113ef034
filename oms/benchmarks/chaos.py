"""``oms bench chaos``: orders flow while the exchange misbehaves; every order must end in
exactly one correct terminal state, and no label may exist twice at the exchange.

Self-contained like ``bench e2e`` (its own Kafka broker on free ports, or ``bootstrap`` of a
running one), with the paper exchange started with ``--drop-every 3`` (every connection cut
every 3 s, executor sessions and gateway alike) and ``--rate-limit-fraction 0.1`` (10% of
order requests answered 10028).

The orders (spread over accounts, paced): a quarter marketable buys and a quarter
marketable sells (expected: filled), a quarter resting orders cancelled by the client soon
after submitting (cancelled; the cancel often lands during a disconnect), a quarter resting
orders with a short ``auto_cancel_timeout`` (cancelled, reason auto_cancelled). An order
whose every attempt was refused ends rejected (retries exhausted): correct too, and
counted.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from oms.harness import (
    OmsServices,
    isolated_settings,
    paper_admin,
    start_bench_broker,
    start_paper_stack,
)
from oms.schemas import (
    CommandType,
    OrderEvent,
    OrderRequest,
    OrderStatus,
    ReasonCode,
    Topic,
    now_ms,
)
from oms.settings import Settings

TERMINAL = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)
KINDS = ("market_buy", "market_sell", "client_cancel", "auto_cancel")
EXPECTED = {
    "market_buy": OrderStatus.FILLED,
    "market_sell": OrderStatus.FILLED,
    "client_cancel": OrderStatus.CANCELLED,
    "auto_cancel": OrderStatus.CANCELLED,
}
_EXCHANGE_STATE = {
    OrderStatus.FILLED: "filled",
    OrderStatus.CANCELLED: "cancelled",
}


@dataclass
class ChaosConfig:
    orders: int = 1_000
    rate: float = 50.0
    accounts: int = 20
    drop_every_s: float = 3.0
    rate_limit_fraction: float = 0.1
    auto_cancel_s: float = 4.0
    partitions: int = 8
    timeout_s: float = 240.0
    bootstrap: str | None = None


def _settings(base: Path, bootstrap: str, accounts: list[str], config: ChaosConfig) -> Settings:
    settings = isolated_settings(
        base, bootstrap, accounts, partitions=config.partitions, label="chaos"
    )
    return settings.model_copy(
        update={
            # Sessions never live 30 s here, so the client's reconnect backoff would climb to
            # its 10 s cap and keep the OMS offline most of the run: cap it at 1 s, which
            # also means more orders in flight across more disconnects.
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


def _requests(config: ChaosConfig, accounts: list[str], run: str) -> list[tuple[str, OrderRequest]]:
    out = []
    for i in range(config.orders):
        kind = KINDS[i % len(KINDS)]
        account = accounts[i % len(accounts)]
        fields: dict[str, Any] = {
            "request_id": f"{run}-{i}",
            "account_id": account,
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


class TerminalCollector:
    """Every order event from the end of ``order-events``: terminal statuses per order."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._topic = topic
        self.terminal: dict[str, dict[str, OrderEvent]] = defaultdict(dict)
        self.events = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        parts: set[int] | None = None
        while not parts:
            parts = self._consumer.partitions_for_topic(self._topic)
            if not parts:
                await self._consumer._client.force_metadata_update()
                await asyncio.sleep(0.2)
        tps = [TopicPartition(self._topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=5_000)
            for messages in batch.values():
                for message in messages:
                    event = OrderEvent.from_bytes(message.value)
                    self.events += 1
                    if event.status in TERMINAL and event.previous_status is not None:
                        # Keyed by status: a re-announcement of the same status is one state.
                        self.terminal[event.order_id].setdefault(event.status.value, event)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._consumer.stop()


async def run_chaos(
    config: ChaosConfig, on_status: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the scenario and return its counts (``ok`` says whether every check held)."""
    base = Path(tempfile.mkdtemp(prefix="oms-bench-chaos-"))
    broker, bootstrap = await start_bench_broker(
        base, config.partitions, config.bootstrap, on_status
    )
    services: OmsServices | None = None
    try:
        accounts = [f"chaos-{i}" for i in range(config.accounts)]
        settings = _settings(base, bootstrap, accounts, config)
        services, _ = await start_paper_stack(settings, base / "logs", on_status)

        collector = TerminalCollector(bootstrap, settings.topic(Topic.ORDER_EVENTS))
        await collector.start()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks="all")
        await producer.start()
        topic = settings.topic(Topic.ORDER_REQUESTS)
        planned = _requests(config, accounts, f"chaos-{uuid.uuid4().hex[:6]}")
        kind_of = {request.key: kind for kind, request in planned}
        try:
            await paper_admin(
                settings,
                "admin/set_faults",
                drop_every_s=config.drop_every_s,
                rate_limit_fraction=config.rate_limit_fraction,
                seed=7,
            )
            on_status(f"publishing {config.orders} orders under faults")
            t0 = time.monotonic()
            cancels: list[asyncio.Task[None]] = []

            async def cancel_later(request: OrderRequest) -> None:
                await asyncio.sleep(1.0)
                cancel = OrderRequest(
                    command=CommandType.CANCEL,
                    request_id=f"cancel-{request.request_id}",
                    account_id=request.account_id,
                    order_id=request.key,
                )
                await producer.send(topic, value=cancel.to_bytes(), key=cancel.key.encode())

            for i, (kind, request) in enumerate(planned):
                due = t0 + i / config.rate
                if (delay := due - time.monotonic()) > 0:
                    await asyncio.sleep(delay)
                # Created when sent, so the worker's end-to-end latency excludes the pacing.
                request.created_at = now_ms()
                await producer.send(topic, value=request.to_bytes(), key=request.key.encode())
                if kind == "client_cancel":
                    cancels.append(asyncio.create_task(cancel_later(request)))
            await asyncio.gather(*cancels)
            await producer.flush()
            on_status("waiting for every order to end")
            deadline = time.monotonic() + config.timeout_s
            while time.monotonic() < deadline:
                if all(collector.terminal.get(oid) for oid in kind_of):
                    break
                await asyncio.sleep(0.5)
            elapsed = time.monotonic() - t0
            # Faults off, then a settle period: a late duplicate terminal event would show.
            fired = (await paper_admin(settings, "admin/get_stats", include_labels=False)).get(
                "faults_fired", {}
            )
            await paper_admin(settings, "admin/set_faults")
            await asyncio.sleep(3.0)
        finally:
            await producer.stop()
            await collector.stop()

        on_status("checking the exchange, label by label")
        at_exchange: dict[str, list[dict[str, Any]]] = {}
        gate = asyncio.Semaphore(32)

        async def lookup(order_id: str) -> None:
            async with gate:
                at_exchange[order_id] = list(
                    await paper_admin(settings, "admin/get_orders_by_label", label=order_id)
                )

        await asyncio.gather(*(lookup(oid) for oid in kind_of))
        stats = await paper_admin(settings, "admin/get_stats", include_labels=False)
        report = _report(config, kind_of, collector, at_exchange, stats, fired, elapsed)
        summary_url = f"http://127.0.0.1:{settings.worker.web_port}/metrics/summary"
        async with aiohttp.ClientSession() as session, session.get(summary_url) as resp:
            summary = await resp.json()
        report["worker"] = {
            "executor": summary.get("executor", {}),
            "lifecycle": summary.get("lifecycle", {}),
            "success_rate": summary.get("success_rate"),
            "stages_ms": {
                name: {k: v for k, v in row.items() if k in ("count", "p50_ms", "p99_ms")}
                for name, row in summary.get("stages", {}).items()
            },
        }
        return report
    finally:
        if services is not None:
            services.stop_all()
        if broker is not None:
            await broker.astop()


def _report(
    config: ChaosConfig,
    kind_of: dict[str, str],
    collector: TerminalCollector,
    at_exchange: dict[str, list[dict[str, Any]]],
    stats: dict[str, Any],
    fired: dict[str, int],
    elapsed: float,
) -> dict[str, Any]:
    final: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    no_terminal, several, wrong, exchange_mismatch, twice = [], [], [], [], []
    for order_id, kind in kind_of.items():
        states = collector.terminal.get(order_id, {})
        orders = at_exchange.get(order_id, [])
        if len(orders) > 1:
            twice.append(order_id)
        if not states:
            no_terminal.append(order_id)
            continue
        if len(states) > 1:
            several.append(order_id)
        [(status_value, event)] = list(states.items())[:1]
        status = OrderStatus(status_value)
        final[f"{kind}:{status_value}"] += 1
        if event.reason_code is not None:
            reasons[event.reason_code.value] += 1
        expected = EXPECTED[kind]
        if status is OrderStatus.REJECTED:
            # Correct only when every attempt was refused and nothing reached the exchange.
            if event.reason_code is not ReasonCode.RETRIES_EXHAUSTED or orders:
                wrong.append(order_id)
        elif status is not expected or (
            kind == "auto_cancel" and event.reason_code is not ReasonCode.AUTO_CANCELLED
        ):
            wrong.append(order_id)
        elif not orders or orders[-1]["order_state"] != _EXCHANGE_STATE[status]:
            exchange_mismatch.append(order_id)
    ok = not (no_terminal or several or wrong or exchange_mismatch or twice)
    return {
        "ok": ok,
        "orders": config.orders,
        "seconds": round(elapsed, 1),
        "faults": {
            "drop_every_s": config.drop_every_s,
            "rate_limit_fraction": config.rate_limit_fraction,
            "fired": fired,
        },
        "final_states": dict(sorted(final.items())),
        "reason_codes": dict(sorted(reasons.items())),
        "orders_without_terminal_state": len(no_terminal),
        "orders_with_several_terminal_states": len(several),
        "orders_in_wrong_state": len(wrong),
        "orders_disagreeing_with_exchange": len(exchange_mismatch),
        "labels_twice_at_exchange": len(twice),
        "exchange_duplicate_labels": len(stats.get("duplicate_labels", {})),
        "examples": {
            "without_terminal": no_terminal[:5],
            "several": several[:5],
            "wrong": wrong[:5],
            "mismatch": exchange_mismatch[:5],
            "twice": twice[:5],
        },
    }
