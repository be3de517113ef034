"""The executor's background commands: one chain per order, drained then cut on stop."""

from __future__ import annotations

import asyncio

from oms.component import ComponentState
from oms.settings import WorkerSettings
from oms.streams.execution import InflightCommands


async def test_commands_of_an_order_run_in_order_and_stop_drains_then_cancels() -> None:
    commands = InflightCommands(WorkerSettings(), drain_s=0.2)
    await commands.start()
    done: list[str] = []
    release_first = asyncio.Event()

    async def step(name: str, wait: asyncio.Event | None = None) -> None:
        if wait is not None:
            await wait.wait()
        done.append(name)

    await commands.run("o-1", step("submit", release_first))
    await commands.run("o-1", step("cancel"))  # waits for the submit of the same order
    await commands.run("o-2", step("other"))
    await asyncio.sleep(0.01)
    assert done == ["other"] and commands.is_running("o-1") and commands.count == 1
    release_first.set()
    await asyncio.gather(*commands.pending())
    assert done == ["other", "submit", "cancel"]
    assert not commands.is_running("o-1") and commands.is_inflight("o-1")  # just finished

    never = asyncio.Event()
    await commands.run("o-3", step("quick"))
    await commands.run("o-4", step("stuck", never))
    await commands.stop()
    assert commands.state is ComponentState.STOPPED
    assert "quick" in done and "stuck" not in done and commands.count == 0
    await commands.run("o-5", step("after stop"))  # dropped: the worker is stopping
    await asyncio.sleep(0.01)
    assert "after stop" not in done and commands.count == 0
