"""Where an order worker publishes: one method per topic, all through Faust's producer.

Faust's producer directly, not ``Topic.send``: the channel machinery of the latter cost ~10% of
the worker's CPU. It is the same producer, so Faust still flushes it before committing offsets.
The worker hands these methods to its components as plain callables.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from oms.schemas import DeadLetter, ExecutionReport, MetricsSample, OrderEvent, OrderRequest, Topic
from oms.schemas.commands import InternalComponent, OrderCommand, internal_command
from oms.schemas.conditions import OrderTrigger
from oms.settings import Settings
from oms.streams.app import OmsApp


class Outbox:
    """The worker's topics, one ``async`` method each. ``observe_event`` sees every order
    event published (metrics)."""

    def __init__(
        self, oms: OmsApp, settings: Settings, *, observe_event: Callable[[OrderEvent], None]
    ) -> None:
        self._app = oms.app
        self._observe_event = observe_event
        self._events = oms.events.get_topic_name()
        self._dead_letters = oms.dead_letters.get_topic_name()
        self._reports = oms.reports.get_topic_name()
        self._triggers = oms.triggers.get_topic_name()
        self._commands = oms.commands.get_topic_name()
        self._metrics = settings.topic(Topic.METRICS)

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Any record, to any topic."""
        await self._deliver(topic, key, value)

    async def _deliver(self, topic: str, key: bytes | None, value: bytes) -> Awaitable[Any]:
        """Hand a record to the producer; returns its delivery (the record's metadata, with
        its offset, once the broker has it)."""
        delivery: Awaitable[Any] = await self._app.producer.send(
            topic, key, value, partition=None, timestamp=None, headers=None
        )
        return delivery

    async def event(self, event: OrderEvent) -> None:
        """An order event (``order-events``, keyed by order id)."""
        await self.send(self._events, event.order_id.encode(), event.to_bytes())
        self._observe_event(event)

    async def dead_letter(self, letter: DeadLetter) -> None:
        """A dead letter, under the key of the message it replaces."""
        key = letter.key.encode() if letter.key else None
        await self.send(self._dead_letters, key, letter.to_bytes())

    async def report(self, report: ExecutionReport) -> None:
        """An execution report, for the order-state agent."""
        await self.send(self._reports, report.order_id.encode(), report.to_bytes())

    async def report_durably(self, report: ExecutionReport) -> None:
        """An execution report, returning once the broker has it (all in-sync replicas)."""
        await self._app.producer.send_and_wait(
            self._reports, report.order_id.encode(), report.to_bytes(), None, None, None
        )

    async def trigger(self, trigger: OrderTrigger) -> None:
        """A release, expiry or refusal of a held order, for the release agent."""
        await self.send(self._triggers, trigger.order_id.encode(), trigger.to_bytes())

    async def command(self, command: OrderCommand) -> None:
        """A command on the internal path (authenticated by the edge, or the OMS's own)."""
        await self.send(self._commands, command.key.encode(), command.to_bytes())

    async def command_delivery(self, command: OrderCommand) -> Awaitable[Any]:
        """:meth:`command`, returning the delivery of the record (its metadata: offset)."""
        return await self._deliver(self._commands, command.key.encode(), command.to_bytes())

    def commands_of(
        self, component: InternalComponent
    ) -> Callable[[OrderRequest], Awaitable[None]]:
        """How ``component`` publishes the OMS's own requests: straight to the internal
        command path, never through the traders' authentication."""

        async def publish(request: OrderRequest) -> None:
            await self.command(internal_command(request, component))

        return publish

    async def metrics_sample(self, sample: MetricsSample) -> None:
        """One sample of a worker's metrics (``metrics``, keyed by worker)."""
        await self.send(self._metrics, sample.worker.encode(), sample.to_bytes())
