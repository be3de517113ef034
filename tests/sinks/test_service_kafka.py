"""The sink service against the real test broker: store, crash, replay, exclusivity."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from oms.schemas import DeadLetter, ReasonCode, ReportSource
from oms.settings import Settings, SinkSettings
from oms.sinks import service as service_module
from oms.sinks.access import AccessDenied
from oms.sinks.errors import QueryError
from oms.sinks.query import run_query
from oms.sinks.service import SinkService
from oms_dev.harness import ServiceProcess, settings_env, wait_http_ok

from .conftest import free_port
from .factories import T0, fill_report, lifecycle, tick

pytestmark = pytest.mark.kafka

MakeSettings = Callable[..., Awaitable[Settings]]


async def sink_settings(make_settings: MakeSettings, **sink: Any) -> Settings:
    values: dict[str, Any] = {"batch_size": 50, "flush_interval_s": 0.2, **sink}
    return await make_settings(sink=SinkSettings(query_port=free_port(), **values))


def order_traffic(prefix: str, n: int) -> dict[str, list[tuple[str, Any]]]:
    """n orders: 5 events each, and each fill reported twice (subscription, then RPC)."""
    events: list[tuple[str, Any]] = []
    reports: list[tuple[str, Any]] = []
    for i in range(n):
        oid = f"{prefix}-{i}"
        events += [(oid, e) for e in lifecycle(oid)]
        reports.append((oid, fill_report(oid, [f"{oid}-t1"])))
        reports.append((oid, fill_report(oid, [f"{oid}-t1", f"{oid}-t2"], source=ReportSource.RPC)))
    return {"order-events": events, "execution-reports": reports}


async def produce(
    kafka_io: Any, settings: Settings, traffic: dict[str, list[tuple[str, Any]]]
) -> None:
    for name, messages in traffic.items():
        await kafka_io.produce(settings.topic(name), messages)


async def scalar(settings: Settings, sql: str) -> Any:
    return (await run_query(settings, sql)).rows[0][0]


async def wait_for(
    settings: Settings,
    sql: str,
    expected: Any,
    within: float = 90.0,
    service: SinkService | None = None,
) -> None:
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await scalar(settings, sql)
        except QueryError as exc:  # endpoint not up yet
            last = exc
        if last == expected:
            return
        await asyncio.sleep(0.2)
    state = f"; sink: {service.health()}" if service else ""
    raise AssertionError(f"{sql!r}: {last!r} != {expected!r}{state}")


async def committed_lag(settings: Settings, group: str) -> int:
    """Messages on the sink's topics not yet committed by ``group``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(settings.topic(t), p)
            for t in ("order-events", "execution-reports")
            for p in range(settings.kafka.partitions)
        ]
        ends = await consumer.end_offsets(tps)
        lag = 0
        for tp in tps:
            lag += ends[tp] - ((await consumer.committed(tp)) or 0)
        return lag
    finally:
        await consumer.stop()


async def wait_for_totals(settings: Settings, n: int, **wait: Any) -> None:
    """Wait until every event and execution of ``n`` orders is stored, then check totals."""
    await wait_for(settings, "SELECT count() FROM order_events FINAL", 5 * n, **wait)
    await wait_for(settings, "SELECT count() FROM executions FINAL", 2 * n, **wait)
    await check_totals(settings, n)


async def check_totals(settings: Settings, n: int) -> None:
    """Exactly what was produced, counted the documented (FINAL) way."""
    assert await scalar(settings, "SELECT count() FROM order_events FINAL") == 5 * n
    assert await scalar(settings, "SELECT count() FROM orders FINAL") == n
    assert await scalar(settings, "SELECT countIf(status = 'filled') FROM orders FINAL") == n
    assert await scalar(settings, "SELECT count() FROM executions FINAL") == 2 * n
    assert await scalar(settings, "SELECT sum(amount) FROM executions FINAL") == 20.0 * n


async def test_sink_stores_what_the_pipeline_produced(
    make_settings: MakeSettings, kafka_io: Any
) -> None:
    settings = await sink_settings(make_settings)
    n = 30
    await produce(kafka_io, settings, order_traffic("a", n))
    await kafka_io.produce(settings.topic("order-events"), [("bad", b"{not json")])
    await kafka_io.produce(
        settings.topic("market-ticks"),
        [("BTC-PERPETUAL", tick("BTC-PERPETUAL", T0 + i * 100)) for i in range(25)],
    )
    letter = DeadLetter.for_payload(
        b"garbage",
        source_topic=settings.topic("order-requests"),
        reason_code=ReasonCode.MALFORMED_JSON,
        error="bad json",
    )
    await kafka_io.send(settings.topic("dead-letters"), letter, key="k")

    service = SinkService(settings)
    task = asyncio.create_task(service.run())
    try:
        await wait_for_totals(settings, n, service=service)
        # 25 ticks 100 ms apart span 3 one-second periods.
        assert await scalar(settings, "SELECT count() FROM market_ticks FINAL") == 3
        assert await scalar(settings, "SELECT any(error) FROM dead_letters") == "bad json"
        row = (
            await run_query(
                settings,
                "SELECT account_id, instrument_name, filled_amount, version, metadata "
                "FROM orders FINAL WHERE order_id = 'a-7'",
            )
        ).rows
        assert row == [["acct-1", "BTC-PERPETUAL", 20.0, 5, '{"strategy":"t"}']]
        assert service.stats.malformed == 1
        # The malformed event went to the dead letters with its reason, and back in as one.
        assert service.stats.dead_lettered == 1
        sql = (
            "SELECT count() FROM dead_letters FINAL WHERE reason_code = 'malformed_json' "
            f"AND source_topic = '{settings.topic('order-events')}' AND payload = '{{not json'"
        )
        await wait_for(settings, sql, 1, service=service)
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 30)
    assert await committed_lag(settings, service.group_id) == 0


async def test_crash_after_insert_before_commit_replays_without_double_counting(
    make_settings: MakeSettings, kafka_io: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst moment to die: rows inserted, offsets not committed. Cancel (no flush),
    restart, and the replay must neither lose nor double count anything."""
    settings = await sink_settings(make_settings, batch_size=40)
    n = 20
    await produce(kafka_io, settings, order_traffic("c", n))

    stuck = asyncio.Event()

    async def never_commit(self: SinkService, batch: object) -> None:
        stuck.set()
        await asyncio.Event().wait()

    with monkeypatch.context() as m:
        m.setattr(SinkService, "_commit", never_commit)
        first = SinkService(settings)
        task = asyncio.create_task(first.run())
        await asyncio.wait_for(stuck.wait(), 60)
        task.cancel()  # a crash: no flush, no commit
        with pytest.raises(asyncio.CancelledError):
            await task
    assert first.stats.rows, first.health()  # something was inserted before the "crash"
    assert await committed_lag(settings, first.group_id) == 5 * n + 2 * n, first.health()

    second = SinkService(settings)
    task = asyncio.create_task(second.run())
    try:
        await second.ready.wait()
        await wait_for_totals(settings, n, service=second)
    finally:
        second.request_stop()
        await asyncio.wait_for(task, 30)
    assert await committed_lag(settings, second.group_id) == 0


async def test_insert_failures_are_retried_with_input_paused(
    make_settings: MakeSettings, kafka_io: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 70 messages in batches of 20: while the first batch keeps failing, the next one fills
    # and the consumer then waits with its partitions paused (two batches held at most).
    batch_size = 20
    settings = await sink_settings(make_settings, batch_size=batch_size)
    n = 10
    await produce(kafka_io, settings, order_traffic("r", n))
    real_write = service_module.write_batch
    failures = 3
    # (partitions paused, messages consumed) at each failed attempt
    during_failure: list[tuple[int, int]] = []

    async def flaky_write(ch: Any, batch: Any) -> dict[str, int]:
        nonlocal failures
        if failures:
            failures -= 1
            assert service._consumer is not None
            during_failure.append((len(service._consumer.paused()), service.stats.consumed))
            raise ConnectionError("ClickHouse is down")
        return await real_write(ch, batch)

    monkeypatch.setattr(service_module, "write_batch", flaky_write)
    # Attempts 0.6 s apart: the consumer pauses once it has waited 1 s for the writer.
    service = SinkService(settings, retry_min_s=0.6, retry_max_s=0.6)
    task = asyncio.create_task(service.run())
    try:
        await wait_for_totals(settings, n, service=service)
        assert service.stats.insert_failures == 3
        assert during_failure[0][0] == 0 and during_failure[-1][0] > 0
        assert max(consumed for _, consumed in during_failure) <= 2 * batch_size
        assert service._consumer is not None and not service._consumer.paused()
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 30)
    assert await committed_lag(settings, service.group_id) == 0


async def test_graceful_stop_flushes_the_buffer(make_settings: MakeSettings, kafka_io: Any) -> None:
    # Neither size nor time would flush during the test: only the shutdown does.
    settings = await sink_settings(make_settings, batch_size=100_000, flush_interval_s=600)
    n = 10
    await produce(kafka_io, settings, order_traffic("g", n))
    service = SinkService(settings)
    task = asyncio.create_task(service.run())
    deadline = time.monotonic() + 60
    while service.stats.consumed < 7 * n:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert await scalar(settings, "SELECT count() FROM order_events") == 0
    service.request_stop()
    await asyncio.wait_for(task, 30)
    assert await committed_lag(settings, service.group_id) == 0
    await check_totals(settings, n)  # the sink is gone: read-only straight from chDB


def sink_process(settings: Settings, log_dir: Path, name: str) -> ServiceProcess:
    return ServiceProcess(name, ["sink"], settings_env(settings), log_dir / f"{name}.log")


async def test_sigkill_mid_stream_then_restart(
    make_settings: MakeSettings, kafka_io: Any, tmp_path: Path
) -> None:
    settings = await sink_settings(make_settings, batch_size=20, flush_interval_s=0.1)
    n = 60
    traffic = order_traffic("k", n)
    half = {name: msgs[: len(msgs) // 2] for name, msgs in traffic.items()}
    rest = {name: msgs[len(msgs) // 2 :] for name, msgs in traffic.items()}
    sink = sink_process(settings, tmp_path, "sink")
    health = f"http://{settings.sink.query_host}:{settings.sink.query_port}/health"
    sink.start()
    try:
        await wait_http_ok(health, within=90)
        await produce(kafka_io, settings, half)
        # Kill while it is working through the first half.
        deadline = time.monotonic() + 60
        while await scalar(settings, "SELECT count() FROM order_events") == 0:
            assert time.monotonic() < deadline, sink.tail()
            await asyncio.sleep(0.05)
        sink.kill()
        await produce(kafka_io, settings, rest)
        sink.start()
        await wait_http_ok(health, within=90)
        await wait_for_totals(settings, n, within=90)
        ids = await run_query(settings, "SELECT DISTINCT order_id FROM orders FINAL")
        assert {r[0] for r in ids.rows} == {f"k-{i}" for i in range(n)}
    finally:
        sink.stop()
    assert sink.proc is not None and sink.proc.returncode == 0, sink.tail()


async def test_second_sink_on_same_path_exits_with_clear_message(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = await sink_settings(make_settings)
    first = sink_process(settings, tmp_path, "sink-1")
    first.start()
    try:
        await wait_http_ok(
            f"http://{settings.sink.query_host}:{settings.sink.query_port}/health", within=90
        )
        # Another port, same data dir: only the chDB path is shared.
        env = {**os.environ, **settings_env(settings), "OMS_SINK__QUERY_PORT": str(free_port())}
        second = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "oms.cli.main", "sink"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert "already open by sink pid" in lines[0]
        assert "exactly one sink process" in lines[0] and "OMS_CLICKHOUSE_URL" in lines[0]
        assert str(first.proc.pid if first.proc else "") in lines[0]
        assert first.alive
        # oms sql still works, through the running sink.
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "oms.cli.main", "sql", "SHOW TABLES", "--format", "csv"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert "order_events" in out.stdout.splitlines()
    finally:
        first.stop()


async def test_with_desks_the_sinks_endpoint_scopes_each_desk(
    make_settings: MakeSettings, kafka_io: Any, tmp_path: Path
) -> None:
    """The sink wires desks and their tokens into its endpoint: a desk reads its own
    accounts' orders, the operator all of them, and a request without a token nothing."""
    secrets = tmp_path / "desk-secrets.json"
    secrets.write_text(
        json.dumps({"query_tokens": {"alpha": "tok-a"}, "query_operator_token": "tok-op"})
    )
    base = await sink_settings(make_settings)
    settings = base.model_copy(
        update={"desks": {"alpha": ["acct-1"], "beta": ["acct-2"]}, "secrets_file": secrets}
    )
    events = [
        (f"d-{acct}", e)
        for acct in ("acct-1", "acct-2")
        for e in lifecycle(f"d-{acct}", account_id=acct)
    ]
    await kafka_io.produce(settings.topic("order-events"), events)
    service = SinkService(settings)
    task = asyncio.create_task(service.run())
    try:
        await wait_for(settings, "SELECT count() FROM orders FINAL", 2, service=service)
        alpha = settings.model_copy(
            update={"sink": settings.sink.model_copy(update={"query_desk": "alpha"})}
        )
        rows = (await run_query(alpha, "SELECT account_id FROM orders FINAL")).rows
        assert rows == [["acct-1"]]
        with pytest.raises(AccessDenied):
            # No operator token in this process's secrets: the endpoint wants one.
            await run_query(
                settings.model_copy(update={"secrets_file": tmp_path / "none"}), "SELECT 1"
            )
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 30)
