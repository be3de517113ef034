"""The figures `oms bench e2e` computes from its own timings."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from oms.settings import Settings
from oms_dev.benchmarks.e2e import cpu_budget, idle_cpu, max_ack_gap_s
from oms_dev.harness import OmsServices


def test_the_ack_gap_is_the_longest_quiet_time_with_orders_outstanding() -> None:
    published = [0.0, 0.1, 0.2, 5.0]
    acknowledged = [0.3, 0.4, 3.4, 5.2]
    # 0.4 -> 3.4: one order outstanding, nothing acknowledged for 3 s.
    assert max_ack_gap_s(published, acknowledged, end=6.0) == pytest.approx(3.0)


def test_idle_time_with_nothing_outstanding_is_no_gap() -> None:
    published = [0.0, 10.0]
    acknowledged = [0.05, 10.05]
    assert max_ack_gap_s(published, acknowledged, end=20.0) == pytest.approx(0.05)


def test_orders_never_acknowledged_are_outstanding_until_the_end() -> None:
    # The second order, sent at 1.0, is still outstanding at 9.0.
    assert max_ack_gap_s([0.0, 1.0], [0.5], end=9.0) == pytest.approx(8.0)


def test_the_cpu_budget_is_each_process_s_cpu_per_order_and_the_rate_that_fills_the_cores() -> None:
    cpu_s = {
        "worker-0": 2.0,
        "worker-1": 1.0,
        "paper-exchange": 1.0,
        "kafka": 1.5,
        "load-generator": 0.5,
    }
    budget = cpu_budget(cpu_s, orders=1_000, cores=2)
    assert budget["ms_per_order"]["worker-0"] == pytest.approx(2.0)
    assert budget["total_ms_per_order"] == pytest.approx(6.0)
    # 2 cores = 2,000 ms of CPU a second: 2,000 / 6 ms per order.
    assert budget["ceiling_per_s"] == pytest.approx(333.3)
    # Without both workers' 3 ms: 2,000 / 3.
    assert budget["ceiling_without_workers_per_s"] == pytest.approx(666.7)


def test_a_budget_of_workers_only_has_no_ceiling_without_them() -> None:
    budget = cpu_budget({"worker-0": 1.0}, orders=100, cores=2)
    assert budget["ceiling_per_s"] == pytest.approx(200.0)
    assert budget["ceiling_without_workers_per_s"] is None


@pytest.fixture
def spinning_and_asleep(tmp_path: Path) -> Iterator[OmsServices]:
    """Two real processes as services: one spinning, one asleep."""
    services = OmsServices(Settings(data_dir=tmp_path), tmp_path / "logs")
    commands = {"spin": [sys.executable, "-c", "while True: pass"], "asleep": ["sleep", "30"]}
    for name, command in commands.items():
        # Its own process group, as the harness starts services (kill() ends the group).
        services.add(name, []).proc = subprocess.Popen(command, start_new_session=True)
    yield services
    services.stop_all()


async def test_idle_cpu_is_each_service_s_cpu_per_second(
    spinning_and_asleep: OmsServices,
) -> None:
    figures = await idle_cpu(spinning_and_asleep, 1.0, lambda status: None, settle_s=0.2)
    assert set(figures) == {"spin", "asleep"}
    assert figures["spin"] > 300  # ms of CPU per second (a shared machine gives it less)
    assert figures["asleep"] < 50
