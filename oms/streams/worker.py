"""Wires the order-processing worker: app, agents, executor, recovery.

Crash safety rests on three rules:

1. State is only in the changelog-backed ``orders`` table; offsets are committed after the
   agent has processed a message (at-least-once).
2. Requests that were already on a partition when this worker took it over may have been
   processed by the previous owner: they are executed only after a label lookup.
3. A periodic sweep looks up, by label, every order of an owned partition that was sent but
   never acknowledged, so an order whose reply was lost (or whose worker died mid-flight)
   is reported or, if the exchange never saw it, sent again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import structlog
from faust.types import TP

from oms.algos.ticks import TickCache
from oms.auth.nonces import NonceStore
from oms.auth.verify import Authenticator
from oms.conditions.engine import TriggerEngine
from oms.exchange.deribit.rate_limit import RateLimiter
from oms.exchange.instruments import InstrumentCatalog
from oms.kafka.faust_patches import StallHealer
from oms.kafka.faust_worker import run_faust_worker
from oms.kafka.partitioning import partition_of
from oms.lifecycle.wiring import LifecycleWiring
from oms.orders.priority_queue import PriorityQueues
from oms.risk.runtime import create_intake_guard, register_guard
from oms.schemas import (
    DeadLetter,
    ExecutionReport,
    MarketTick,
    OrderEvent,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    now_ms,
)
from oms.schemas.commands import InternalComponent, OrderCommand, internal_command
from oms.schemas.conditions import OrderTrigger
from oms.secrets import SecretStore, SigningKeys
from oms.settings import Settings
from oms.streams.app import OmsApp, create_app
from oms.streams.dispatcher import Dispatcher
from oms.streams.edge import EdgeContext, handle_external
from oms.streams.execution import ExchangeSessions, OrderExecutor
from oms.streams.held_orders import HeldOrders
from oms.streams.intake import IntakeContext, handle_command, submit_linked
from oms.streams.order_state import OrderStateContext, handle_report
from oms.streams.release import ReleaseContext, handle_trigger
from oms.streams.tick_feed import TickFeed
from oms.streams.triggering import TriggerLoop

log = structlog.get_logger(__name__)

_UNACKNOWLEDGED = frozenset({OrderStatus.PENDING, OrderStatus.SUBMITTED})
# Kafka's timestamp type of a record stamped by the broker (topic message.timestamp.type).
_LOG_APPEND_TIME = 1


class OrderWorker:
    """Everything one worker process runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.oms: OmsApp = create_app(settings)
        self.app: faust.App = self.oms.app
        secrets = SecretStore(settings.resolved_secrets_file, settings.risk.exchange_accounts())
        self._trading_accounts = frozenset(secrets.trading_accounts(settings.accounts))
        self.catalog = InstrumentCatalog(settings.exchange)
        self.sessions = ExchangeSessions(settings, secrets)
        self.executor = OrderExecutor(
            self.sessions, self._publish_report, settings, self.catalog.currency_of
        )
        # Held orders: the trigger engine (waiting) and the priority queues (queued).
        self.engine = TriggerEngine()
        self.queues = PriorityQueues(
            settings.queue.priority_levels, reduce_only_as_high=settings.queue.reduce_only_as_high
        )
        self.held = HeldOrders(self.engine, self.queues)
        self.trigger_loop = TriggerLoop(self.engine, self._publish_trigger)
        self.tick_cache = TickCache()
        # Every worker reads every tick; only the owner of a partition dead-letters its bad ones.
        self.tick_feed = TickFeed(
            settings,
            self._on_ticks,
            dead_letter=self._dead_letter,
            owns_partition=lambda partition: self.guard.owns_partition(partition),
        )
        self.dispatcher = Dispatcher(
            self.queues,
            order_of=self._order_of,
            executor=self.executor,
            limiter_of=self._limiter_of,
            publish_trigger=self._publish_trigger,
            settings=settings.queue,
            retry_delay=settings.lifecycle.retry_delay,
        )
        self.held.on_change = self._held_changed
        self._held_partitions: frozenset[int] | None = None
        # Per partition of the input topics: offsets below this were on the topic when this
        # worker took the partition, so a previous owner may have processed them.
        self._replay_below: dict[tuple[str, int], int] = {}
        self._requests_topic = self.oms.requests.get_topic_name()
        self._commands_topic = self.oms.commands.get_topic_name()
        self._events_topic = self.oms.events.get_topic_name()
        self._reports_topic = self.oms.reports.get_topic_name()
        self._triggers_topic = self.oms.triggers.get_topic_name()
        self._dead_letters_topic = self.oms.dead_letters.get_topic_name()
        # Pre-trade risk.
        self.guard = create_intake_guard(
            settings, self.oms, self.catalog.get, self._send, self._dead_letter, self.executor
        )
        # The stateless edge: authenticates traders' requests and routes them by order id.
        self.edge = EdgeContext(
            emit=self._emit,
            dead_letter=self._dead_letter,
            source_topic=self._requests_topic,
            authenticator=(
                None
                if settings.risk.auth_mode == "trusted"
                else Authenticator(settings.risk, SigningKeys(settings.resolved_secrets_file))
            ),
            forward=self._publish_command,
        )
        # Queued, delayed and conditional orders are checked again when they leave the queue:
        # the market (and the account) may have moved while they waited.
        self.dispatcher.release_check = lambda order: self.guard.check_submit(
            order, at_release=True
        )
        self.intake = IntakeContext(
            orders=self.oms.orders,
            executor=self.executor,
            instrument=self.catalog.get,
            account_known=self._trading_accounts.__contains__,
            emit=self._emit,
            dead_letter=self._dead_letter,
            source_topic=self._commands_topic,
            held=self.held,
            queue_settings=settings.queue,
            on_fired=self.trigger_loop.publish,
            publish_trigger=self._publish_trigger,
            guard=self.guard,
            nonces=NonceStore(self.oms.nonces, settings.risk.nonces_kept_per_order),
            make_durable=lambda: self.app.producer.flush(),
        )
        self.release = ReleaseContext(
            orders=self.oms.orders,
            emit=self._emit,
            dead_letter=self._dead_letter,
            source_topic=self._triggers_topic,
            held=self.held,
            executor=self.executor,
            instrument=self.catalog.get,
            create=lambda request, links, replayed: submit_linked(
                self.intake, request, links, replayed
            ),
            on_fired=self.trigger_loop.publish,
            publish_trigger=self._publish_trigger,
        )
        self.state = OrderStateContext(
            orders=self.oms.orders,
            emit=self._emit,
            dead_letter=self._dead_letter,
            source_topic=self._reports_topic,
            publish_trigger=self._publish_trigger,
            publish_report=self._publish_report,
        )
        # Lifecycle (issue 6): monitoring, auto-cancel, partial fills, metrics, probes.
        self.lifecycle = LifecycleWiring(self)
        self._register()
        self.lifecycle.register()

    # -- plumbing ------------------------------------------------------------------------

    async def _send(self, topic: str, key: bytes | None, value: bytes) -> None:
        # Faust's producer directly: the Topic.send channel machinery cost ~10% of the
        # worker's CPU. Same producer, so Faust still flushes it before committing offsets.
        await self.app.producer.send(
            topic, key, value, partition=None, timestamp=None, headers=None
        )

    async def _emit(self, event: OrderEvent) -> None:
        await self._send(self._events_topic, event.order_id.encode(), event.to_bytes())
        self.lifecycle.on_event(event)

    async def _dead_letter(self, letter: DeadLetter) -> None:
        key = letter.key.encode() if letter.key else None
        await self._send(self._dead_letters_topic, key, letter.to_bytes())

    async def _publish_report(self, report: ExecutionReport) -> None:
        await self._send(self._reports_topic, report.order_id.encode(), report.to_bytes())

    async def _publish_trigger(self, trigger: OrderTrigger) -> None:
        await self._send(self._triggers_topic, trigger.order_id.encode(), trigger.to_bytes())

    async def _publish_command(self, command: OrderCommand) -> None:
        await self._send(self._commands_topic, command.key.encode(), command.to_bytes())

    def commands_of(
        self, component: InternalComponent
    ) -> Callable[[OrderRequest], Awaitable[None]]:
        """How ``component`` publishes the OMS's own requests: straight to the internal
        command path, never through the traders' authentication."""

        async def publish(request: OrderRequest) -> None:
            await self._publish_command(internal_command(request, component))

        return publish

    def owned_partitions(self) -> set[int]:
        """Partitions of the orders (commands, reports, triggers) this worker owns now."""
        return self.oms.active_partitions(self._commands_topic)

    def owns_order(self, order_id: str) -> bool:
        """Does this worker own the partition of ``order_id`` right now?"""
        return partition_of(order_id, self.settings.kafka.partitions) in self.owned_partitions()

    def _order_of(self, order_id: str) -> OrderRecord | None:
        order: OrderRecord | None = self.oms.orders.get(order_id)
        return order

    async def _limiter_of(self, account_id: str) -> RateLimiter:
        return (await self.sessions.client(account_id)).rate_limiter

    async def _on_ticks(self, ticks: list[MarketTick], warm: bool) -> None:
        self.tick_cache.update(ticks)
        await self.trigger_loop.on_ticks(ticks, warm)

    def _held_changed(self) -> None:
        self.dispatcher.wake()
        self.trigger_loop.wake()

    # -- agents, timers, hooks -------------------------------------------------------------

    def _register(self) -> None:
        app, oms = self.app, self.oms
        commands_name = self._commands_topic

        async def edge(stream: Any) -> None:
            async for event in stream.events():
                message = event.message
                await handle_external(
                    self.edge,
                    event.value,
                    headers=message.headers,
                    key=message.key,
                    partition=message.partition,
                    offset=message.offset,
                    received_ms=self._received_ms(message),
                )

        async def intake(stream: Any) -> None:
            await self.catalog.wait_loaded()
            await self.guard.ready()
            async for event in stream.events():
                message = event.message
                await handle_command(
                    self.intake,
                    event.value,
                    key=message.key,
                    partition=message.partition,
                    offset=message.offset,
                    replayed=self._is_replay(message),
                )

        def agent(handle: Any, ctx: Any) -> Any:
            async def run(stream: Any) -> None:
                # Faust restarts an agent that raised: counted, so /stats shows it. The handlers
                # read bad input through ctx.decode and must never raise on it.
                ctx.count("agent_starts")
                async for event in stream.events():
                    message = event.message
                    await handle(
                        ctx,
                        event.value,
                        key=message.key,
                        partition=message.partition,
                        offset=message.offset,
                        replayed=self._is_replay(message),
                    )

            return run

        order_state = agent(handle_report, self.state)
        release = agent(handle_trigger, self.release)

        app.agent(oms.requests, name="edge")(edge)
        app.agent(oms.commands, name="intake")(intake)
        app.agent(oms.reports, name="order_state")(order_state)
        app.agent(oms.triggers, name="release")(release)

        inputs = {self._requests_topic, commands_name, self._reports_topic, self._triggers_topic}

        async def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
            tps = [tp for tp in assigned if tp.topic in inputs]
            if not tps:
                return
            highwaters = await app.consumer.highwaters(*tps)
            for tp, offset in highwaters.items():
                self._replay_below[(tp.topic, tp.partition)] = offset
            log.info(
                "worker.partitions_assigned",
                partitions=sorted(tp.partition for tp in tps if tp.topic == commands_name),
            )

        app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]

        async def on_rebalance_complete(sender: Any, **kwargs: Any) -> None:
            await self.rebuild_held()

        app.on_rebalance_complete.connect(on_rebalance_complete)  # type: ignore[arg-type]

        interval = self.settings.worker.recovery_check_interval_s
        register_guard(app, self.guard, interval)

        healer = StallHealer(lambda: app.consumer, inputs)
        self.healer = healer

        @app.timer(interval=interval)
        async def sweep_unacknowledged() -> None:
            await self.sweep()
            for tp, committed in healer.stalled(time.monotonic()):
                # Everything from the committed offset is read again: count it as replayed.
                highwater = (await app.consumer.highwaters(tp)).get(tp, committed)
                self._replay_below[(tp.topic, tp.partition)] = highwater
                log.warning(
                    "worker.partition_stalled",
                    topic=tp.topic,
                    partition=tp.partition,
                    reread_from=committed,
                )
                await healer.heal(tp, committed)
            # Insurance: a rebalance whose completion signal we missed still rebuilds.
            owned = frozenset(self.owned_partitions())
            if owned != self._held_partitions and not getattr(app, "in_recovery", False):
                await self.rebuild_held()

        @app.task
        async def start_catalog() -> None:
            await self.catalog.start()

        @app.task
        async def run_tick_feed() -> None:
            while True:  # a lost broker connection must not end the feed for good
                try:
                    await self.tick_feed.run()
                except Exception:
                    log.exception("tick_feed.failed")
                    await asyncio.sleep(1.0)

        @app.task
        async def run_trigger_clock() -> None:
            await self.trigger_loop.run_clock()

        @app.task
        async def run_dispatcher() -> None:
            await self.catalog.wait_loaded()
            await self.dispatcher.run()

        @app.page("/queue")
        async def queue(web: Any, request: Any) -> Any:
            return web.json(self.queue_statistics())

        @app.page("/health")
        async def health(web: Any, request: Any) -> Any:
            return web.json({"status": "ok", "instruments": len(self.catalog)})

        @app.page("/stats")
        async def stats(web: Any, request: Any) -> Any:
            return web.json(
                {
                    "edge": self.edge.counters,
                    "intake": self.intake.counters,
                    "order_state": self.state.counters,
                    "executor": self.executor.stats,
                    "reconcile": self.lifecycle.reconciler.snapshot(),
                    "release": self.release.counters,
                    "dispatcher": self.dispatcher.stats,
                    "tick_feed": self.tick_feed.stats(),
                    "risk_feeds": self.guard.feeds.stats(),
                    "queue": self.queue_statistics(),
                }
            )

    def _is_replay(self, message: Any) -> bool:
        return bool(message.offset < self._replay_below.get((message.topic, message.partition), 0))

    def _received_ms(self, message: Any) -> int:
        """When a request reached the broker. ``order-requests`` is created with log-append
        time, so this is the broker's clock, immune to a backlog at the edge. On a topic
        that keeps the producer's time (created elsewhere) the producer's claim is not
        trusted: the edge's own clock is used, except for records that were already there
        when this worker took the partition over (judged by their time, or a takeover
        would turn them all stale)."""
        if message.timestamp_type == _LOG_APPEND_TIME or self._is_replay(message):
            return int(message.timestamp * 1000)
        return now_ms()

    async def sweep(self) -> int:
        """Reconcile orders of owned partitions that were sent but never acknowledged.

        What bounds it: each order is handed to ``executor.reconcile`` (label lookup, then a
        send only if the exchange never had it), and every outcome of that pass is a report
        that moves the order out of pending/submitted: found (open, filled, ...), sent (the
        exchange's answer), refused (rejected) or failed ``submit_attempts`` times (rejected
        as retries_exhausted, or needs_review under the manual strategy). An order is swept
        again only when a pass got no answer at all (the label lookup itself kept failing:
        exchange unreachable or refusing us), so it then costs one lookup per
        ``recovery_check_interval_s`` and never a second send. Acknowledged orders the
        exchange lost are not the sweep's: ``oms.lifecycle.reconcile`` resolves them
        (lost_at_venue) after ``lifecycle.open_check_missing_retries`` misses."""
        owned = self.owned_partitions()
        if not owned:
            return 0
        cutoff = now_ms() - int(self.settings.worker.submit_timeout_s * 1000)
        partitions = self.settings.kafka.partitions
        swept = 0
        for order_id, order in list(self.oms.orders.items()):
            if order is None or order.status not in _UNACKNOWLEDGED:
                continue
            if order.updated_at > cutoff or self.executor.is_inflight(order_id):
                continue
            if partition_of(order_id, partitions) not in owned:
                continue
            swept += 1
            log.info("worker.reconcile", order_id=order_id, status=order.status.value)
            await self.executor.reconcile(order)
        return swept

    def queue_statistics(self) -> dict[str, Any]:
        """Seed 3.2 ``get_queue_statistics`` for the partitions this worker owns."""
        stats = self.held.statistics(now_ms())
        stats["partitions"] = sorted(self._held_partitions or ())
        return stats

    async def rebuild_held(self) -> None:
        """Reload waiting and queued orders of owned partitions from the table (after a
        rebalance or restart); drop those of partitions that moved away."""
        owned = frozenset(self.owned_partitions())
        partitions = self.settings.kafka.partitions
        result, fired = self.held.rebuild(
            list(self.oms.orders.items()),
            owns=lambda order_id: partition_of(order_id, partitions) in owned,
            now_ms=now_ms(),
            busy=self.executor.is_inflight,
        )
        self._held_partitions = owned
        log.info(
            "worker.held_rebuilt",
            partitions=len(owned),
            waiting=result.waiting,
            queued=result.queued,
            dropped=result.dropped,
        )
        if fired:
            await self.trigger_loop.publish(fired)

    def run(self, loglevel: str = "info") -> None:
        """Run the worker in the foreground until stopped."""
        run_faust_worker(self.app, self.settings, loglevel=loglevel)
