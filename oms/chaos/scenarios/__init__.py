"""The chaos scenarios, by name. Each is ``async def run(config, on_status) -> result``
(``config``: :class:`oms.chaos.config.ChaosConfig`; result: the shape of
:func:`oms.chaos.verdict.make_result`). Add one: a module here and a line in ``SCENARIOS``."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from oms.chaos.config import ChaosConfig
from oms.chaos.scenarios import broker_restart, exchange_faults, hostile, worker_kill

Scenario = Callable[[ChaosConfig, Callable[[str], None]], Coroutine[Any, Any, dict[str, Any]]]

# In the order the suite runs them (issue 8 numbering: 1, 2, 3, 6; 4 sink_kill and
# 5 disk_error are written on another branch and register here).
SCENARIOS: dict[str, Scenario] = {
    "worker-kill": worker_kill.run,
    "broker-restart": broker_restart.run,
    "exchange-faults": exchange_faults.run,
    "hostile": hostile.run,
}

__all__ = ["SCENARIOS", "Scenario"]
