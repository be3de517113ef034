"""``oms bench memory``: the worker's resident memory per 10,000 resting conditional orders,
per 10,000 open orders, and per 10,000 orders that ended and left its table.

A stack like ``bench e2e`` (own broker or ``bootstrap``, paper exchange, gateway, one
worker, 50 tier-1 accounts; ended orders leave the table ``retention_s`` after they end) is
warmed up with a few orders; then

1. ``orders`` conditional orders whose price condition is far out of reach are published;
   once the worker reports them all ``waiting`` (its ``/queue``), its RSS and peak RSS
   (``VmHWM``) are read;
2. ``orders`` limit orders far from the market are published; once each has its ``open``
   event, RSS and peak RSS are read again;
3. twice in a row, ``orders`` market orders are published; they fill at once, and once the
   worker's ``/stats`` shows every one of them purged (a marker each in place of the
   record), RSS and peak RSS are read again. The second round's growth is the steady state:
   the memory of the first round's purged records is reused, what remains are the markers.

``per_10k_*_mb`` is the RSS growth of each step scaled to 10,000 orders. RSS is what the
kernel reports for the worker process (Python's allocator keeps freed memory, so the figure
is an upper bound of what the orders themselves need, and the honest one for sizing).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from aiokafka import AIOKafkaProducer

from oms.auth.signing import RequestSigner
from oms.kafka.security import as_connection
from oms.schemas import OrderRequest, Topic
from oms.secrets import SigningKeys
from oms_dev.benchmarks.e2e import EventCollector
from oms_dev.harness import (
    OmsServices,
    isolated_settings,
    start_bench_broker,
    start_paper_stack,
)

MB = 1024 * 1024


@dataclass
class MemoryBenchConfig:
    orders: int = 10_000
    accounts: int = 50
    partitions: int = 8
    timeout_s: float = 600.0
    bootstrap: str | None = None
    # How long ended orders stay in the worker's table (its terminal_retention_s).
    retention_s: float = 5.0


def _memory(pid: int) -> dict[str, float]:
    """RSS and peak RSS (VmHWM) in MB of a process and its children."""
    process = psutil.Process(pid)
    procs = [process, *process.children(recursive=True)]
    rss = sum(p.memory_info().rss for p in procs) / MB
    peak = 0.0
    for p in procs:
        try:
            for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak += int(line.split()[1]) * 1024 / MB
        except OSError:
            pass
    return {"rss_mb": round(rss, 1), "peak_rss_mb": round(peak, 1)}


def _requests(
    n: int, accounts: list[str], run: str, conditional: bool, marketable: bool = False
) -> list[OrderRequest]:
    out = []
    for i in range(n):
        fields: dict[str, Any] = {
            "request_id": f"{run}-{i}",
            "account_id": accounts[i % len(accounts)],
            "instrument_name": "BTC-PERPETUAL",
            "amount": 10.0,
            "direction": "buy",
            "order_type": "limit",
            "price": 1_000.0,
        }
        if marketable:  # fills at once; buys and sells alternate per account
            fields.update(
                order_type="market", price=None, direction="buy" if i % 100 < 50 else "sell"
            )
        if conditional:
            fields["conditions"] = [
                {"kind": "price", "instrument_name": "BTC-PERPETUAL", "field": "last_price",
                 "operator": ">=", "value": 10_000_000.0 + i}
            ]  # fmt: skip
        out.append(OrderRequest(**fields))
    return out


async def _publish(
    bootstrap: str, topic: str, requests: list[OrderRequest], signer: RequestSigner
) -> None:
    producer = AIOKafkaProducer(**as_connection(bootstrap).aiokafka(), linger_ms=5, acks="all")
    await producer.start()
    try:
        futures = []
        for r in requests:
            value, headers = signer.message(r)
            futures.append(await producer.send(topic, value, key=r.key.encode(), headers=headers))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _waiting(port: int) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/queue") as resp,
    ):
        return int((await resp.json())["waiting"])


async def _table(port: int) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/stats") as resp,
    ):
        stats = await resp.json()
    table: dict[str, Any] = stats["table"]
    table["purged"] = int(stats["release"].get("purged", 0))
    return table


async def run_memory_bench(
    config: MemoryBenchConfig, on_status: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the benchmark and return its figures."""
    base = Path(tempfile.mkdtemp(prefix="oms-bench-memory-"))
    broker, bootstrap = await start_bench_broker(
        base, config.partitions, config.bootstrap, on_status
    )
    services: OmsServices | None = None
    try:
        accounts = [f"mem-{i}" for i in range(config.accounts)]
        settings = isolated_settings(
            base, bootstrap, accounts, partitions=config.partitions, label="benchmem"
        )
        worker_settings = settings.worker.model_copy(
            update={"terminal_retention_s": config.retention_s}
        )
        settings = settings.model_copy(update={"worker": worker_settings})
        services, worker = await start_paper_stack(settings, base / "logs", on_status)
        port = settings.worker.web_port
        assert worker.proc is not None
        pid = worker.proc.pid
        topic = settings.topic(Topic.ORDER_REQUESTS)
        signer = RequestSigner(SigningKeys(settings.resolved_secrets_file))
        collector = EventCollector(bootstrap, settings.topic(Topic.ORDER_EVENTS))
        await collector.start()
        run = uuid.uuid4().hex[:6]
        deadline = time.monotonic() + config.timeout_s
        try:
            on_status("warm-up (100 orders)")
            warm = _requests(100, accounts, f"warm-{run}", conditional=False)
            collector.expect({r.key for r in warm})
            await _publish(bootstrap, topic, warm, signer)
            if not await collector.wait(120):
                raise RuntimeError("warm-up orders not acknowledged:\n" + services.diagnostics())
            await asyncio.sleep(2.0)
            baseline = _memory(pid)

            on_status(f"{config.orders} conditional orders")
            held = _requests(config.orders, accounts, f"cond-{run}", conditional=True)
            await _publish(bootstrap, topic, held, signer)
            while (waiting := await _waiting(port)) < config.orders:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {waiting} of {config.orders} orders waiting")
                await asyncio.sleep(0.5)
            await asyncio.sleep(2.0)
            after_held = _memory(pid)

            on_status(f"{config.orders} open orders")
            resting = _requests(config.orders, accounts, f"open-{run}", conditional=False)
            collector.expect({r.key for r in resting})
            await _publish(bootstrap, topic, resting, signer)
            if not await collector.wait(max(1.0, deadline - time.monotonic())):
                acked = sum(1 for r in resting if r.key in collector.first_ack)
                raise TimeoutError(f"only {acked} of {config.orders} orders acknowledged")
            await asyncio.sleep(2.0)
            after_open = _memory(pid)
            table_open = await _table(port)

            ended_rounds: list[dict[str, float]] = []
            filled = 0
            for round_ in (1, 2):
                on_status(f"{config.orders} orders that fill and leave the table ({round_}/2)")
                purged_before = (await _table(port))["purged"]
                ended = _requests(
                    config.orders,
                    accounts,
                    f"ended{round_}-{run}",
                    conditional=False,
                    marketable=True,
                )
                collector.expect({r.key for r in ended})
                await _publish(bootstrap, topic, ended, signer)
                if not await collector.wait(max(1.0, deadline - time.monotonic())):
                    acked = sum(1 for r in ended if r.key in collector.first_ack)
                    raise TimeoutError(f"only {acked} of {config.orders} orders acknowledged")
                filled += sum(1 for r in ended if collector.first_ack_type.get(r.key) == "filled")
                while (table := await _table(port))["purged"] - purged_before < config.orders:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{table['purged'] - purged_before} orders purged")
                    await asyncio.sleep(0.5)
                await asyncio.sleep(2.0)
                ended_rounds.append(_memory(pid))
            table_ended = await _table(port)
        finally:
            await collector.stop()
        scale = 10_000 / config.orders
        opened = sum(1 for r in resting if collector.first_ack_type.get(r.key) == "open")
        return {
            "orders": config.orders,
            "accounts": config.accounts,
            "worker_baseline": baseline,
            "worker_with_conditional": after_held,
            "worker_with_open": after_open,
            "opened": opened,
            "per_10k_conditional_mb": round((after_held["rss_mb"] - baseline["rss_mb"]) * scale, 1),
            "per_10k_open_mb": round((after_open["rss_mb"] - after_held["rss_mb"]) * scale, 1),
            # Twice `orders` orders that filled and left the table: the first round's growth
            # includes the allocator's high-water mark (the orders in the table at once, whose
            # memory Python keeps for reuse), the second shows whether a running worker keeps
            # growing with orders that ended (the markers, a few hundred bytes each).
            "worker_after_ended_and_purged": ended_rounds,
            "filled": filled,
            "per_10k_ended_purged_first_round_mb": round(
                (ended_rounds[0]["rss_mb"] - after_open["rss_mb"]) * scale, 1
            ),
            "per_10k_ended_purged_mb": round(
                (ended_rounds[1]["rss_mb"] - ended_rounds[0]["rss_mb"]) * scale, 1
            ),
            "retention_s": config.retention_s,
            "table_after_open": table_open,
            "table_after_ended": table_ended,
            "peak_rss_mb": ended_rounds[-1]["peak_rss_mb"],
        }
    finally:
        if services is not None:
            services.stop_all()
        if broker is not None:
            await broker.astop()


__all__ = ["MemoryBenchConfig", "run_memory_bench"]
