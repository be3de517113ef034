"""``oms bench positions``: fills through Kafka and the position keeper, records into
ClickHouse through the sink, against direct bulk inserts of the same rows (same run).

1. The keeper (its own process) runs; N fills (one per execution report, over 20 accounts x
   2 instruments) are published to ``execution-reports``. ``fills_per_s`` is N over the time
   from the first publish to the last execution record on ``oms.positions``.
2. The sink (its own process, embedded ClickHouse) is then started on the filled topics.
   ``sink_rows_per_s`` counts the rows it inserts for this run (``position_changes`` plus
   the ``executions`` rows of the same reports) from its first insert to its last.
3. The same rows are bulk-inserted with clickhouse-connect into a fresh embedded database, in
   batches of the sink's batch size: ``direct_insert_rows_per_s``. ``sink_ratio`` = 2 / 3.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from oms.kafka.admin import ensure_topics
from oms.kafka.reading import topic_partitions
from oms.kafka.security import as_connection
from oms.schemas import (
    Direction,
    ExecutionReport,
    Fill,
    PositionRecord,
    ReportSource,
    Topic,
    now_ms,
)
from oms.settings import Settings
from oms_dev.devstack.kafka import KafkaBroker
from oms_dev.harness import OmsServices, isolated_settings, wait_http_ok

INSTRUMENTS = ("BTC-PERPETUAL", "ETH-PERPETUAL")


@dataclass
class PositionBenchConfig:
    fills: int = 200_000
    accounts: int = 20
    partitions: int = 8
    timeout_s: float = 900.0


def make_reports(n: int, accounts: int, tag: str) -> list[bytes]:
    """N execution reports of one fill each: adds, reductions and flips on 40 positions."""
    out = []
    # Recent fills: the keeper refuses fills older than its seen-trades retention.
    start = now_ms()
    for i in range(n):
        account = f"bench-{i % accounts}"
        instrument = INSTRUMENTS[(i // accounts) % 2]
        buy = (i // (accounts * 2 * 3)) % 2 == 0
        price = (50_000.0 if instrument.startswith("BTC") else 3_000.0) + (i % 50) * 0.5
        report = ExecutionReport(
            report_id=f"{tag}-r{i}",
            order_id=f"o-{tag}-{i // 2}",
            account_id=account,
            source=ReportSource.RPC,
            instrument_name=instrument,
            exchange_order_id=f"{tag}-{i // 2}",
            direction=Direction.BUY if buy else Direction.SELL,
            amount=20.0,
            filled_amount=10.0,
            fills=[Fill(trade_id=f"{tag}-{i}", amount=10.0, price=price, fee=0.0001,
                        timestamp=start + i)],
        )  # fmt: skip
        out.append(report.to_bytes())
    return out


async def _tail_records(
    bootstrap: str, topic: str, n: int, done: asyncio.Event, sink: list[bytes], timeout_s: float
) -> float:
    """Collect execution records from ``topic``; returns the monotonic time of the N-th."""
    consumer = AIOKafkaConsumer(**as_connection(bootstrap).aiokafka(), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        done.set()
        deadline = time.monotonic() + timeout_s
        count = 0
        while count < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {count} of {n} position records arrived")
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batch.values():
                for record in records:
                    if b'"record_type":"execution"' in record.value:
                        count += 1
                        sink.append(record.value)
        return time.monotonic()
    finally:
        await consumer.stop()


async def _sink_rows(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as resp:
        body = await resp.json()
    rows = body.get("rows", {})
    return int(rows.get("position_changes", 0)) + int(rows.get("executions", 0))


def _direct_insert(
    path: Path, settings: Settings, records: list[bytes], reports: list[bytes]
) -> tuple[float, float]:
    """Rows/s of bulk inserts of the same rows into a fresh embedded database, and the CPU
    seconds this process used meanwhile (chDB's threads included)."""
    import clickhouse_connect

    from oms.sinks.clickhouse.migrations import apply_migrations
    from oms.sinks.clickhouse.rows import COLUMNS, execution_rows, position_row

    client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    try:
        apply_migrations(client, settings.sink)
        tables = {
            "position_changes": [position_row(PositionRecord.from_bytes(r)) for r in records],
            "executions": [
                row for raw in reports for row in execution_rows(ExecutionReport.from_bytes(raw))
            ],
        }
        size = settings.sink.batch_size
        total = sum(len(rows) for rows in tables.values())
        start = time.perf_counter()
        cpu = time.process_time()
        for table, rows in tables.items():
            for i in range(0, len(rows), size):
                client.insert(table, rows[i : i + size], column_names=COLUMNS[table])
        return total / (time.perf_counter() - start), time.process_time() - cpu
    finally:
        client.close()


async def run_positions_bench(
    config: PositionBenchConfig, on_status: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the benchmark and return its figures."""
    base = Path(tempfile.mkdtemp(prefix="oms-bench-positions-"))
    shared = os.environ.get("OMS_KAFKA__BOOTSTRAP")
    broker: KafkaBroker | None = None
    if shared:
        bootstrap = shared
    else:
        broker = KafkaBroker.isolated(base / "kafka", partitions=config.partitions)
        on_status("starting Kafka")
        await broker.astart(die_with_parent=True)
        bootstrap = broker.bootstrap
    accounts = [f"bench-{i}" for i in range(config.accounts)]
    settings = isolated_settings(
        base, bootstrap, accounts, partitions=config.partitions, label="benchpos"
    )
    settings = settings.model_copy(
        update={"positions": settings.positions.model_copy(update={"reconcile": False})}
    )
    services = OmsServices(settings, base / "logs", extra_env={"OMS_POSITIONS__RECONCILE": "false"})
    try:
        await ensure_topics(settings)
        keeper = services.add_position_keeper()
        on_status("starting the position keeper")
        keeper.start()
        await wait_http_ok(
            f"http://127.0.0.1:{settings.positions.web_port}/health",
            120,
            ready=lambda body: bool(body.get("ready")),
        )
        tag = uuid.uuid4().hex[:6]
        on_status(f"building {config.fills} reports")
        reports = make_reports(config.fills, config.accounts, tag)
        records: list[bytes] = []
        tailing = asyncio.Event()
        tail = asyncio.create_task(
            _tail_records(
                bootstrap, settings.topic(Topic.POSITIONS), config.fills, tailing, records,
                config.timeout_s,
            )
        )  # fmt: skip
        await tailing.wait()
        producer = AIOKafkaProducer(
            **as_connection(bootstrap).aiokafka(),
            linger_ms=5,
            max_batch_size=256 * 1024,
            acks="all",
        )
        await producer.start()
        topic = settings.topic(Topic.EXECUTION_REPORTS)
        on_status(f"publishing {config.fills} fills")
        t0 = time.monotonic()
        try:
            for i, value in enumerate(reports):
                await producer.send(topic, value=value, key=f"o-{tag}-{i // 2}".encode())
            await producer.flush()
        finally:
            await producer.stop()
        on_status("waiting for every position record")
        t_keeper = await tail
        fills_per_s = config.fills / (t_keeper - t0)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{settings.positions.web_port}/stats") as resp,
        ):
            keeper_stats = (await resp.json())["ledger"]
        keeper_cpu = _cpu_seconds(keeper.proc.pid if keeper.proc else None)
        keeper.stop()

        on_status("starting the sink on the filled topics")
        sink = services.add_sink()
        sink.start()
        health = f"http://127.0.0.1:{settings.sink.query_port}/health"
        await wait_http_ok(health, 120)
        want = 2 * config.fills
        first_at: float | None = None
        first_rows = 0
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + config.timeout_s
            while True:
                rows = await _sink_rows(session, health)
                now = time.monotonic()
                if rows and first_at is None:
                    first_at, first_rows = now, rows
                if rows >= want:
                    break
                if now > deadline:
                    raise TimeoutError(f"sink inserted {rows} of {want} rows")
                await asyncio.sleep(0.05)
        assert first_at is not None
        sink_seconds = now - first_at
        sink_rows_per_s = (want - first_rows) / sink_seconds if sink_seconds > 0 else float(want)
        sink_cpu = _cpu_seconds(sink.proc.pid if sink.proc else None)
        sink.stop()
        on_status("direct inserts of the same rows")
        direct, direct_cpu = await asyncio.to_thread(
            _direct_insert, base / "direct-clickhouse", settings, records, reports
        )
        return {
            "fills": config.fills,
            "accounts": config.accounts,
            "positions": config.accounts * len(INSTRUMENTS),
            "partitions": config.partitions,
            "keeper_seconds": round(t_keeper - t0, 3),
            "fills_per_s": round(fills_per_s, 1),
            "keeper_applied": keeper_stats["applied"],
            # CPU the keeper process used (start-up included): the figure that does not
            # depend on what else the machine runs.
            "keeper_cpu_s": round(keeper_cpu, 2) if keeper_cpu is not None else None,
            "keeper_reordered": keeper_stats["reordered"],
            "sink_rows": want,
            "sink_rows_per_s": round(sink_rows_per_s, 1),
            "direct_insert_rows_per_s": round(direct, 1),
            "sink_ratio": round(sink_rows_per_s / direct, 3) if direct else None,
            # CPU of the sink process (start-up included) and of the direct inserts: the
            # cost per row, which the machine's other load does not move as it moves rates.
            "sink_cpu_s": round(sink_cpu, 2) if sink_cpu is not None else None,
            "direct_cpu_s": round(direct_cpu, 2),
            "recording_mode": settings.positions.recording_mode,
        }
    except BaseException:
        print(services.diagnostics())
        raise
    finally:
        services.stop_all()
        if broker is not None:
            await broker.astop()


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a live process (Linux /proc), None elsewhere."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


__all__ = ["PositionBenchConfig", "run_positions_bench"]
