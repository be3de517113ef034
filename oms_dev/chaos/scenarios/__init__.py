"""The chaos scenarios, by name. Each is ``async def run(config, on_status) -> result``
(``config``: :class:`oms_dev.chaos.config.ChaosConfig`; result: the shape of
:func:`oms_dev.chaos.verdict.make_result`). Add one: a module here and a line in ``SCENARIOS``."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from oms_dev.chaos.config import ChaosConfig
from oms_dev.chaos.scenarios import (
    broker_restart,
    disk_error,
    exchange_faults,
    hostile,
    restarts,
    sink_kill,
    worker_kill,
)

Scenario = Callable[[ChaosConfig, Callable[[str], None]], Coroutine[Any, Any, dict[str, Any]]]

# In the order the suite runs them.
SCENARIOS: dict[str, Scenario] = {
    "worker-kill": worker_kill.run,
    "broker-restart": broker_restart.run,
    "exchange-faults": exchange_faults.run,
    "sink-kill": sink_kill.run,
    "disk-error": disk_error.run,
    "hostile": hostile.run,
    "paper-exchange-restart": restarts.run_paper_exchange_restart,
    "stack-restart": restarts.run_stack_restart,
}

__all__ = ["SCENARIOS", "Scenario"]
