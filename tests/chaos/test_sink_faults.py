"""The chaos scenarios ``sink-kill`` and ``disk-error`` (ClickHouse sink faults), short forms
through real components: the paper exchange, gateway, worker and sink as processes on the test
broker, chDB on disk.
"""

from __future__ import annotations

import os
import shutil

import pytest

from oms_dev.chaos.scenarios.disk_error import DiskErrorConfig, run_disk_error
from oms_dev.chaos.scenarios.sink_kill import SinkKillConfig, run_sink_kill
from oms_dev.chaos.verdict import KEYS, verdict_line

pytestmark = pytest.mark.kafka


def assert_clickhouse_matches_kafka(result: dict) -> None:
    comparison = result["details"]["clickhouse_vs_kafka"]
    assert comparison["caught_up"], comparison
    assert comparison["unreadable_tables"] == {}, comparison
    tables = comparison["tables"]
    # The flow fills and cancels orders: events, snapshots and fills were all compared.
    assert {"order_events", "orders", "executions"} <= set(tables), tables
    for name, table in tables.items():
        assert table["expected_rows"] > 0 or name not in ("order_events", "orders"), table
        assert table["missing"] == 0, (name, table)
        assert table["extra"] == 0, (name, table)
        assert table["duplicates_final"] == 0, (name, table)
    assert tables["orders"]["stale_version"] == 0
    assert tables["orders"]["expected_rows"] == result["requests"]


async def test_sink_killed_while_inserting_loses_and_doubles_nothing(
    kafka_bootstrap: str,
) -> None:
    result = await run_sink_kill(
        SinkKillConfig(quick=True, orders=40, kills=2, bootstrap=kafka_bootstrap),
        on_status=lambda _: None,
    )
    assert tuple(result) == KEYS
    assert "error" not in result["details"], result["details"]
    assert result["faults"]["sigkill_sink"] == 2
    assert result["faults"]["sigkill_during_insert"] >= 1
    assert result["details"]["sink_starts"] == 3
    assert (result["requests"], result["terminal"], result["lost"]) == (40, 40, 0)
    assert result["duplicates_at_exchange"] == 0 and result["wrong_state"] == 0
    assert_clickhouse_matches_kafka(result)
    assert result["ok"] and result["verdict"] == "PASS", result["details"]["checks"]
    assert verdict_line(result).startswith("PASS  sink-kill  40 requests, 40 terminal, 0 lost")


needs_a_way_to_deny_writes = pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("setpriv") is None,
    reason="as root, file modes bind the sink only through setpriv (util-linux)",
)


@needs_a_way_to_deny_writes
async def test_disk_errors_are_reported_and_the_sink_catches_up(kafka_bootstrap: str) -> None:
    result = await run_disk_error(
        DiskErrorConfig(quick=True, orders=60, rate=6.0, fault_s=3.0, bootstrap=kafka_bootstrap),
        on_status=lambda _: None,
    )
    assert tuple(result) == KEYS
    assert "error" not in result["details"], result["details"]
    phases = result["details"]["phases"]
    # permission always; disk_full when we may mount a tmpfs (root).
    assert "permission" in phases
    assert ("disk_full" in phases) == (os.geteuid() == 0)
    expected = {"disk_full": "disk_full", "permission": "permission_denied"}
    for name, phase in phases.items():
        assert phase["insert_failures"] > 0, phase
        assert phase["health_said_failing"] and phase["health_reason"] == expected[name], phase
        assert phase["orders_terminal_during_fault"] > 0, phase  # the worker kept going
        assert phase["recovered_after_s"] is not None, phase
        assert phase["unreadable_tables_after"] == {}, phase
    log = result["details"]["sink_log"]
    assert log["levels"] == {"error": log["insert_failed_lines"]}
    assert {expected[name] for name in phases} <= set(log["reasons"])
    assert log["secrets_in_log"] == 0
    assert result["details"]["sink_starts"] == 1  # never crashed, never restarted
    assert (result["requests"], result["terminal"], result["lost"]) == (60, 60, 0)
    assert result["duplicates_at_exchange"] == 0 and result["wrong_state"] == 0
    assert_clickhouse_matches_kafka(result)
    assert result["ok"] and result["verdict"] == "PASS", result["details"]["checks"]
    assert verdict_line(result).startswith("PASS  disk-error  60 requests, 60 terminal, 0 lost")
