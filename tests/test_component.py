"""Component: explicit start and stop, and a start that fails half-way releases what it took."""

from __future__ import annotations

import asyncio

import pytest

from oms.component import Component, ComponentState


class _Part(Component):
    def __init__(self, fail: bool) -> None:
        super().__init__("part")
        self.fail = fail
        self.released = 0
        self.task: asyncio.Task[object] | None = None

    async def on_start(self) -> None:
        self.task = self.spawn(asyncio.sleep(3600), "sleep")
        if self.fail:
            raise RuntimeError("half-way")

    async def on_stop(self) -> None:
        self.released += 1


async def test_start_then_stop_cancels_the_background_work_and_releases_once() -> None:
    part = _Part(fail=False)
    await part.start()
    assert part.state is ComponentState.RUNNING
    await part.stop()
    await part.stop()  # safe twice
    assert part.state is ComponentState.STOPPED
    assert part.task is not None and part.task.cancelled()
    assert part.released == 1


async def test_a_failed_start_releases_what_it_took() -> None:
    part = _Part(fail=True)
    with pytest.raises(RuntimeError, match="half-way"):
        await part.start()
    assert part.state is ComponentState.STOPPED
    assert part.task is not None and part.task.cancelled()
    assert part.released == 1
    await part.stop()  # nothing left to release
    assert part.released == 1
