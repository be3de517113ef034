"""What every long-running part of a process has in common: an explicit start and stop.

After NautilusTrader's components: a component is built with everything it depends on (its
constructor takes it, nothing is assigned afterwards), does nothing until :meth:`Component.start`
and releases what it holds on :meth:`Component.stop`. Its :attr:`~Component.state` says where
it is. The process that builds components (its composition root) starts them in dependency
order and stops them in the reverse order.

A component's background work is spawned with :meth:`Component.spawn`: the tasks are kept
(so none is garbage-collected while running) and cancelled by :meth:`Component.stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterable
from enum import StrEnum
from typing import Any, Protocol

import structlog

log = structlog.get_logger(__name__)


class ComponentState(StrEnum):
    """Where a component is in its life."""

    READY = "ready"  # built, not started
    RUNNING = "running"
    STOPPED = "stopped"


class Startable(Protocol):
    """What a composition root starts and stops: a :class:`Component`, or anything that
    behaves like one (e.g. an :class:`~oms.exchange.interface.Exchange`)."""

    name: str

    @property
    def state(self) -> ComponentState: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Component:
    """A part of a process with an explicit start and stop.

    Subclasses put their start-up in :meth:`on_start` and their clean-up in :meth:`on_stop`;
    callers only ever use :meth:`start` and :meth:`stop`, which keep the state right and are
    safe to call twice.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._state = ComponentState.READY
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def state(self) -> ComponentState:
        """Ready (built), running, or stopped."""
        return self._state

    async def start(self) -> None:
        """Start (a running component is left as it is). A start that fails half-way
        releases what it took (as :meth:`stop` would) before the error goes on."""
        if self._state is ComponentState.RUNNING:
            return
        try:
            await self.on_start()
        except BaseException:
            self._state = ComponentState.STOPPED
            await self._cancel_and_release()
            raise
        self._state = ComponentState.RUNNING
        log.debug("component.started", component=self.name)

    async def stop(self) -> None:
        """Stop: cancel the background tasks, then release what :meth:`on_start` took."""
        if self._state is not ComponentState.RUNNING:
            return
        self._state = ComponentState.STOPPED
        await self._cancel_and_release()
        log.debug("component.stopped", component=self.name)

    async def _cancel_and_release(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.on_stop()

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``work`` in the background until it ends or the component stops."""
        task = asyncio.create_task(work, name=f"{self.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def on_start(self) -> None:
        """What starting means for this component (default: nothing)."""

    async def on_stop(self) -> None:
        """What stopping releases besides the spawned tasks (default: nothing); also called
        after a failed :meth:`on_start`, so it must cope with a start that got half-way."""


async def start_all(components: Iterable[Startable]) -> None:
    """Start ``components`` in the order given (their dependency order)."""
    for component in components:
        await component.start()


async def stop_all(components: Iterable[Startable]) -> None:
    """Stop ``components`` in the reverse of the order given; one failing to stop does not
    keep the others running."""
    for component in reversed(list(components)):
        try:
            await component.stop()
        except Exception:
            log.exception("component.stop_failed", component=component.name)
