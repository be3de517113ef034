"""Chaos scenario ``disk-error``: the ClickHouse (chDB) data path fails under the sink while
orders flow.

Two real faults, one after the other, each held ``fault_s`` and then removed while the sink
keeps running (see :mod:`oms_dev.chaos.scenarios.disk_faults`): the disk is full (a tmpfs of
its own, filled to the last byte; needs root) and the data directories are not writable
(``0o500``, the sink without CAP_DAC_OVERRIDE). Expected, and checked:

* the sink neither crashes nor drops the batch: it logs ``sink.insert_failed`` at error
  level with a ``reason`` naming the fault (``disk_full``, ``permission_denied``) and no
  secret, ``/health`` says ``status: failing`` with ``insert_failures`` growing and the same
  reason, and its retries back off (no spinning);
* the worker keeps processing orders meanwhile (the sink is not on the order path): orders
  reach terminal states during each fault, and every order ends with one terminal state,
  each label once at the exchange;
* once the fault is removed the sink recovers by itself (``sink.insert_recovered``) and
  catches up: ClickHouse holds exactly the rows of the Kafka topics, none missing, none
  doubled after ``FINAL``.

The order flow and its audit are the suite's (:mod:`oms_dev.chaos.flow`,
:mod:`oms_dev.chaos.verdict`). Run it with ``oms chaos run --scenario disk-error [--quick]``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from oms.settings import SinkSettings
from oms.sinks.clickhouse.client import chdb_path
from oms_dev.chaos.config import ChaosConfig
from oms_dev.chaos.flow import PacedFlow
from oms_dev.chaos.scenarios.disk_faults import DataPathFaults, sink_command_prefix
from oms_dev.chaos.scenarios.sink_common import (
    SinkScenarioConfig,
    SinkStack,
    compare_clickhouse_with_kafka,
    open_stack,
    read_json_log,
    readable_tables,
    sink_result,
)

NAME = "disk-error"
QUICK: dict[str, Any] = {"orders": 120, "fault_s": 4.0}
# The reason the sink must report for each fault.
EXPECTED_REASON = {"disk_full": "disk_full", "permission": "permission_denied"}
# The sink's retries never come closer together than this (the scenario keeps the default).
RETRY_MIN_S = SinkSettings().retry_min_s


@dataclass
class DiskErrorConfig(SinkScenarioConfig):
    QUICK: ClassVar[dict[str, Any]] = QUICK

    fault_s: float = 10.0  # each fault is held this long
    settle_s: float = 3.0  # flow before the first fault
    recover_within_s: float = 60.0  # for the sink to insert again once a fault is removed
    readable_within_s: float = 30.0  # for every table to read again (the sink's rechecks)
    tmpfs_mb: int = 64


async def _hold_fault(
    name: str,
    inject: Callable[[], object],
    remove: Callable[[], object],
    stack: SinkStack,
    flow: PacedFlow,
    config: DiskErrorConfig,
    on_status: Callable[[str], None],
) -> dict[str, Any]:
    """Inject, watch ``/health`` and the orders for ``fault_s``, remove, wait for recovery."""
    before = await stack.health() or {}
    terminal_before = flow.ended()
    injected = await asyncio.to_thread(inject)
    on_status(f"fault {name}: injected ({injected}), holding {config.fault_s}s")
    t0 = time.monotonic()
    failing_seen = False
    last_error: dict[str, Any] | None = None
    health: dict[str, Any] = before
    while time.monotonic() - t0 < config.fault_s:
        await asyncio.sleep(0.5)
        health = await stack.health() or health
        if health.get("status") == "failing":
            failing_seen = True
            last_error = health.get("last_insert_error") or last_error
    failures = health.get("insert_failures", 0) - before.get("insert_failures", 0)
    terminal_during = flow.ended() - terminal_before
    await asyncio.to_thread(remove)
    removed_at = time.monotonic()
    flushes_at_removal = health.get("flushes", 0)
    recovered_after: float | None = None
    while time.monotonic() - removed_at < config.recover_within_s:
        now = await stack.health() or {}
        if now.get("status") == "ok" and now.get("flushes", 0) > flushes_at_removal:
            recovered_after = round(time.monotonic() - removed_at, 1)
            break
        await asyncio.sleep(0.2)
    # The sink checks its tables at recovery and again later (a broken merge can turn up
    # late): readable within that window is what counts; what was seen meanwhile is kept.
    unreadable_seen: dict[str, str] = {}
    unreadable = await readable_tables(stack.settings)
    deadline = time.monotonic() + config.readable_within_s
    while unreadable and time.monotonic() < deadline:
        unreadable_seen |= unreadable
        await asyncio.sleep(1.0)
        unreadable = await readable_tables(stack.settings)
    on_status(
        f"fault {name}: removed; {failures} failed inserts, {terminal_during} orders ended "
        f"meanwhile, sink recovered after {recovered_after}s"
    )
    return {
        "held_s": config.fault_s,
        "injected": injected,
        "insert_failures": failures,
        "health_said_failing": failing_seen,
        "health_reason": (last_error or {}).get("reason"),
        "health_error": (last_error or {}).get("error"),
        "orders_terminal_during_fault": terminal_during,
        "recovered_after_s": recovered_after,
        "unreadable_tables_after": unreadable,
        "unreadable_tables_meanwhile": unreadable_seen,
        "window": (t0, removed_at),
    }


def _log_findings(stack: SinkStack, secrets: list[str]) -> dict[str, Any]:
    """What the sink logged: failures per reason and level, recoveries, secrets leaked."""
    lines = read_json_log(stack.sink.log_path)
    failed = [line for line in lines if line.get("event") == "sink.insert_failed"]
    raw = stack.sink.log_path.read_bytes() if stack.sink.log_path.exists() else b""
    return {
        "insert_failed_lines": len(failed),
        "reasons": dict(Counter(str(line.get("reason")) for line in failed)),
        "levels": dict(Counter(str(line.get("level")) for line in failed)),
        "recovered_lines": sum(line.get("event") == "sink.insert_recovered" for line in lines),
        "secrets_in_log": sum(secret.encode() in raw for secret in secrets if secret),
        "example": failed[0] if failed else None,
    }


def _secrets(stack: SinkStack) -> list[str]:
    data = orjson.loads(stack.settings.resolved_secrets_file.read_bytes())
    out: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if "secret" in str(key).lower() and isinstance(inner, str):
                    out.append(inner)
                walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk(data)
    return out


async def run(config: ChaosConfig, on_status: Callable[[str], None]) -> dict[str, Any]:
    """The suite's entry: ``disk-error`` at its full or ``--quick`` size."""
    return await run_disk_error(DiskErrorConfig.for_suite(config), on_status)


async def run_disk_error(
    config: DiskErrorConfig, on_status: Callable[[str], None]
) -> dict[str, Any]:
    """Run the ``disk-error`` scenario; its result (``ok`` when every check held)."""
    t0 = time.monotonic()
    flow_config = config.flow_config()
    stack = await open_stack(
        flow_config,
        batch_size=config.batch_size,
        flush_interval_s=config.flush_interval_s,
        on_status=on_status,
        sink_command_prefix=sink_command_prefix(),
    )
    faults = DataPathFaults(chdb_path(stack.settings), config.tmpfs_mb)
    try:
        faults.prepare()
        if not faults.available:
            raise RuntimeError(f"no disk fault can be injected here: {faults.unavailable}")
        on_status("starting the sink" + (" on a tmpfs of its own" if faults.mounted else ""))
        await stack.start_sink()
        await stack.wait_flushing()
        flow = PacedFlow(stack.stack, flow_config, f"diskerr-{uuid.uuid4().hex[:6]}")
        await flow.start()
        phases: dict[str, dict[str, Any]] = {}
        try:
            on_status(f"publishing {config.orders} orders at {config.rate}/s")
            publishing = asyncio.create_task(flow.publish())
            try:
                await asyncio.sleep(config.settle_s)
                actions = {
                    "disk_full": (faults.fill, faults.unfill),
                    "permission": (faults.deny_writes, faults.allow_writes),
                }
                for name in faults.available:
                    inject, remove = actions[name]
                    phases[name] = await _hold_fault(
                        name, inject, remove, stack, flow, config, on_status
                    )
            finally:
                await publishing
            on_status("waiting for every order to end")
            all_terminal = await flow.wait_all_ended(time.monotonic() + config.timeout_s)
            await asyncio.sleep(2.0)
        finally:
            await flow.stop()
        orders = await flow.audit()
        on_status("comparing ClickHouse with the Kafka topics")
        group = f"{stack.settings.worker.app_id}-sink"
        comparison = await compare_clickhouse_with_kafka(stack.settings, group, config.catch_up_s)
        health = await stack.health() or {}
        logs = _log_findings(stack, _secrets(stack))
        checks: dict[str, bool] = {
            "every_order_terminal": all_terminal,
            "sink_never_crashed": stack.sink.alive and stack.sink.starts == 1,
            "sink_caught_up": bool(comparison["caught_up"]),
            "no_secret_in_sink_log": logs["secrets_in_log"] == 0,
            "failures_logged_at_error_level": set(logs["levels"]) == {"error"},
            "recovery_logged": logs["recovered_lines"] >= len(phases),
        }
        for name, phase in phases.items():
            reason = EXPECTED_REASON[name]
            max_attempts = 2 + int(phase["held_s"] / RETRY_MIN_S)
            checks |= {
                f"{name}:insert_failures_grew": phase["insert_failures"] > 0,
                f"{name}:health_said_failing_with_reason": phase["health_said_failing"]
                and phase["health_reason"] == reason,
                f"{name}:logged_with_reason": logs["reasons"].get(reason, 0) > 0,
                f"{name}:retries_back_off": phase["insert_failures"] <= max_attempts,
                f"{name}:orders_kept_flowing": phase["orders_terminal_during_fault"] > 0,
                f"{name}:sink_recovered": phase["recovered_after_s"] is not None,
                f"{name}:tables_readable_after": not phase["unreadable_tables_after"],
            }
            phase.pop("window")
        return sink_result(
            NAME,
            orders=orders,
            requests=config.orders,
            comparison=comparison,
            faults={
                **{
                    name: {"held_s": p["held_s"], "failed_inserts": p["insert_failures"]}
                    for name, p in phases.items()
                },
                **{name: f"skipped: {why}" for name, why in faults.unavailable.items()},
                "summary": ", ".join(
                    f"{name} {p['held_s']:g} s ({p['insert_failures']} failed inserts)"
                    for name, p in phases.items()
                ),
            },
            seconds=time.monotonic() - t0,
            checks=checks,
            details={
                "phases": phases,
                "sink_log": logs,
                "sink_starts": stack.sink.starts,
                "sink_command_prefix": stack.sink.command_prefix,
                "sink_health_at_end": {
                    k: health.get(k)
                    for k in (
                        "status",
                        "flushes",
                        "insert_failures",
                        "last_insert_error",
                        "storage_checks",
                        "storage_repairs",
                        "broken_parts_detached",
                    )
                },
                "logs": str(stack.base / "logs"),
            },
        )
    finally:
        await stack.stop()
        if faults.mounted and os.environ.get("OMS_CHAOS_KEEP_DATA"):
            # The tmpfs goes with the unmount: keep a copy to look into.
            shutil.copytree(faults.path, stack.base / "clickhouse-kept", dirs_exist_ok=True)
        faults.cleanup()
