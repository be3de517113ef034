"""The order-processing worker: its composition root, and its Faust agents, timers and pages.

:class:`OrderWorker` builds every component of the process in dependency order, each given
what it depends on through its constructor (never assigned afterwards): the venue
(:func:`~oms.exchange.venues.create_exchange`, chosen by the settings), the one market cache
and its tick feed, the executor and the reconciliation it reports misses to, pre-trade risk,
the trigger engine and the priority queues with their loops, the lifecycle. The long-running
ones are :class:`~oms.component.Component` s: started in that order when Faust has started,
stopped in the reverse order when it stops.

Crash safety rests on three rules:

1. State is only in the changelog-backed ``orders`` table; offsets are committed after the
   agent has processed a message (at-least-once).
2. Requests that were already on a partition when this worker took it over may have been
   processed by the previous owner: they are executed only after a label lookup.
3. A periodic sweep looks up, by label, every order of an owned partition that was sent but
   never acknowledged, so an order whose reply was lost (or whose worker died mid-flight)
   is reported or, if the exchange never saw it, sent again. Likewise every cancel or edit
   intake accepted (recorded on the order) that the exchange never answered is sent again.

The timers never scan the table. The agents write orders through one
:class:`~oms.streams.order_table.ObservedOrders`, which tells every index that follows them
(lifecycle rules, algorithms, the sweep, the orders at the exchange, the purge of ended
orders); the indexes are rebuilt from the table after every rebalance, with the held orders.
Ended orders leave the table after ``terminal_retention_s`` (:mod:`oms.streams.purge`).
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import faust
import structlog
from faust.types import TP

from oms.algos.registry import StrategyRegistry
from oms.algos.scheduler import AlgoScheduler
from oms.auth.nonces import NonceStore
from oms.auth.verify import Authenticator
from oms.component import Startable, start_all, stop_all
from oms.conditions.engine import TriggerEngine
from oms.exchange.router import VenueRouter
from oms.exchange.venues import create_exchange
from oms.kafka.faust_patches import StallHealer, stream_buffer_holds
from oms.kafka.faust_worker import run_faust_worker
from oms.kafka.partitioning import PartitionOwnership, partition_of
from oms.kafka.security import KafkaConnection
from oms.kafka.tables import KeyPartitionedTable
from oms.lifecycle.lookup import LabelLookup
from oms.lifecycle.monitor import LifecycleMonitor
from oms.lifecycle.reconcile import CHECKED, OrderReconciler
from oms.lifecycle.service import LifecycleService
from oms.market.cache import MarketCache
from oms.market.feed import TickFeed
from oms.metrics import OrderMetricsCollector
from oms.metrics.collector import CONTENT_TYPE
from oms.orders.experiments import Experiments
from oms.orders.indexes import OrdersInStatus
from oms.orders.priority_queue import PriorityQueues
from oms.orders.retention import FinishedOrders, PurgeSchedule, RetentionPolicy
from oms.risk.runtime import IntakeGuard
from oms.schemas import ExecutionReport, OrderRecord, now_ms
from oms.schemas.commands import InternalComponent
from oms.schemas.conditions import OrderTrigger
from oms.secrets import SecretStore, SigningKeys
from oms.settings import Settings
from oms.streams.app import OmsApp, create_app
from oms.streams.dispatcher import Dispatcher
from oms.streams.edge import CommandRoute, EdgeContext, handle_external
from oms.streams.execution import InflightCommands, OrderExecutor
from oms.streams.held_orders import HeldOrders
from oms.streams.in_place import InPlaceRoute
from oms.streams.intake import IntakeContext, apply_command, handle_command, submit_linked
from oms.streams.order_state import OrderStateContext, apply_news, handle_report
from oms.streams.order_table import ObservedOrders
from oms.streams.outbox import Outbox
from oms.streams.purge import PurgeTimer, Retention
from oms.streams.release import ReleaseContext, apply_fired, handle_trigger
from oms.streams.sweep import (
    OrderSweep,
    amend_again,
    cancel_again,
    has_unanswered_amend,
    has_unanswered_cancel,
    is_unacknowledged,
)
from oms.streams.triggering import TriggerLoop
from oms.streams.venue_quotes import VenueQuotes

log = structlog.get_logger(__name__)

# Kafka's timestamp type of a record stamped by the broker (topic message.timestamp.type).
_LOG_APPEND_TIME = 1
# Allocations between two collections of the youngest generation (CPython's default: 700).
GC_YOUNG_THRESHOLD = 10_000


class OrderWorker:
    """Everything one worker process runs: the composition root."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        partitions = settings.kafka.partitions
        # -- Kafka: the app, its topics and tables; where components publish ---------------
        self.oms: OmsApp = create_app(settings)
        self.app: faust.App = self.oms.app
        oms = self.oms
        self._requests_topic = oms.requests.get_topic_name()
        self._commands_topic = oms.commands.get_topic_name()
        self._reports_topic = oms.reports.get_topic_name()
        self._triggers_topic = oms.triggers.get_topic_name()
        orders = oms.orders

        self.metrics = OrderMetricsCollector()
        self.outbox = outbox = Outbox(oms, settings, observe_event=self.metrics.observe_event)
        # Which order ids are ours, as of the last refresh (the lifecycle's passes refresh it).
        self.ownership = PartitionOwnership(partitions, self.owned_partitions)

        # -- the table's indexes: what the timers follow instead of scanning the table -------
        # Orders the exchange may hold (reconciliation passes, the cancels of a halt).
        self.at_exchange = at_exchange = OrdersInStatus(CHECKED)

        def open_orders() -> Iterator[tuple[str, OrderRecord | None]]:
            for order_id in at_exchange:
                yield order_id, orders.get(order_id)

        # Ended orders leave the table after a while; markers remember them for longer.
        policy = RetentionPolicy.from_settings(settings.worker)
        self.purges = purges = PurgeSchedule(policy)
        self.finished = finished = FinishedOrders(oms.finished, on_change=purges.note_marker)
        nonces = NonceStore(oms.nonces, settings.risk.nonces_kept_per_order)
        retention = Retention(
            policy, finished, lambda order_id: partition_of(order_id, partitions), nonces
        )

        # -- the venue and the market ----------------------------------------------------------
        secrets = SecretStore(settings.resolved_secrets_file, settings.risk.exchange_accounts())
        trading_accounts = frozenset(secrets.trading_accounts(settings.accounts))
        self.exchange = exchange = create_exchange(settings, secrets)
        self.catalog = catalog = exchange.instruments
        # Several venues: each order is checked against its own venue's rules and catalog.
        venues = exchange if isinstance(exchange, VenueRouter) else None
        self.market = market = MarketCache(underlying=catalog.base_currency)

        # -- execution: commands, label lookups, the reconciliation they report misses to -----
        self.commands = commands = InflightCommands(settings.worker)
        lookup = LabelLookup(exchange, settings.lifecycle)
        self.reconciler = reconciler = OrderReconciler(
            settings.lifecycle,
            exchange=exchange,
            lookup=lookup,
            publish=outbox.report,
            is_running=commands.is_running,
            orders=open_orders,
            order_of=self._order_of,
            owns=self.ownership.owns,
            currency_of=catalog.currency_of,
        )
        # The answers of this worker's commands are applied where they arrive when it owns
        # the order's partition: no trip back through execution-reports. Each is still
        # published first, and applied once the broker has it. The position keeper and the
        # history read the fills there, and should the worker die before the order's new
        # state and its event are out, the next owner reads the report again (it was never
        # committed) and announces the order's state: an event is never lost to a crash.
        self._in_place_partitions: frozenset[int] = frozenset()
        self.report_route: InPlaceRoute[ExecutionReport] = InPlaceRoute(
            apply=lambda report: apply_news(self.state, report, replayed=False),
            publish=outbox.report,
            publish_durably=outbox.report_durably,
            partitions=partitions,
            owned_partitions=lambda: self._in_place_partitions,
            ready=self._settled,
        )
        self.executor = executor = OrderExecutor(
            exchange,
            lookup,
            commands,
            self.report_route,
            settings.lifecycle,
            on_missing=reconciler.missed,
            on_command=self.metrics.observe_command,
        )

        # -- pre-trade risk --------------------------------------------------------------------
        self.guard = guard = IntakeGuard(
            settings,
            orders_changelog=orders.changelog_topic.get_topic_name(),
            instrument=catalog.get,
            mark=market.mark,
            index_price=market.index_price,
            send=outbox.send,
            dead_letter=outbox.dead_letter,
            owned_partitions=self.owned_partitions,
            cancel=executor.cancel,
            orders=open_orders,
        )

        # -- held orders: the trigger engine (waiting) and the priority queues (queued) --------
        self.engine = engine = TriggerEngine(market.value)
        queues = PriorityQueues(
            settings.queue.priority_levels, reduce_only_as_high=settings.queue.reduce_only_as_high
        )
        # What the engine fires is applied in place too (no trip through order-triggers).
        self.trigger_route: InPlaceRoute[OrderTrigger] = InPlaceRoute(
            apply=lambda trigger: apply_fired(self.release, trigger, replayed=False),
            publish=outbox.trigger,
            partitions=partitions,
            owned_partitions=lambda: self._in_place_partitions,
            ready=self._settled,
        )
        self.trigger_loop = trigger_loop = TriggerLoop(engine, self.trigger_route)
        self.dispatcher = dispatcher = Dispatcher(
            queues,
            order_of=self._order_of,
            dispatch=lambda order, uncertain: executor.dispatch(
                order, uncertain=uncertain, prepaid=True
            ),
            order_entry_delay=exchange.order_entry_delay,
            reserve_order_entry=exchange.reserve_order_entry,
            publish_trigger=outbox.trigger,
            # Queued, delayed and conditional orders are checked again when they leave the
            # queue: the market (and the account) may have moved while they waited.
            release_check=lambda order: guard.check_submit(order, at_release=True),
            settings=settings.queue,
            retry_delay=settings.lifecycle.retry_delay,
            ready=catalog.wait_loaded,
        )

        def held_changed() -> None:
            dispatcher.wake()
            trigger_loop.wake()

        self.held = held = HeldOrders(engine, queues, on_change=held_changed)
        self._held_partitions: frozenset[int] | None = None
        # Every worker reads every tick into its market cache; only the owner of a partition
        # dead-letters its bad ones.
        self.tick_feed = TickFeed(
            settings,
            market,
            trigger_loop.on_ticks,
            kafka=KafkaConnection.from_settings(settings),
            dead_letter=outbox.dead_letter,
            owns_partition=guard.owns_partition,
        )

        # -- the timers that follow orders: lifecycle rules, algorithms, the sweep -------------
        self.monitor = monitor = LifecycleMonitor(
            settings=settings.lifecycle,
            order_of=self._order_of,
            owns=self.ownership.owns,
            recheck=executor.recheck,
            is_busy=commands.is_inflight,
            publish_request=outbox.commands_of(InternalComponent.LIFECYCLE),
        )
        # Execution strategies (plugins), loaded now and checked for changes on a timer.
        self.strategies = strategies = StrategyRegistry.from_settings(settings.strategies)
        strategies.refresh()
        self.algos = algos = AlgoScheduler(
            order_of=self._order_of,
            owns=self.ownership.owns,
            publish_request=outbox.commands_of(InternalComponent.ALGO),
            latest_tick=market.latest,
            strategies=strategies,
            # Routed orders decide on the venues' books (each venue's own exchange).
            quote=VenueQuotes(
                exchange, settings.exchange.venues, primary=settings.exchange.primary_venue
            ).quote,
            publish_event=outbox.event,
            # A routed attempt goes to the parent's writer first (release), recorded there.
            publish_trigger=outbox.trigger,
        )

        # Commands that may have died with a previous owner: unacknowledged submits, and
        # cancels and edits intake accepted that the exchange never answered.
        def sweep(
            name: str,
            follows: Callable[[OrderRecord], bool],
            act: Callable[[OrderRecord], Awaitable[object]],
        ) -> OrderSweep:
            return OrderSweep(
                name,
                follows=follows,
                act=act,
                timeout_s=settings.worker.submit_timeout_s,
                interval_s=settings.worker.recovery_check_interval_s,
                order_of=self._order_of,
                owns=self.ownership.owns,
                is_inflight=commands.is_inflight,
            )

        self.unacknowledged = sweep("reconcile", is_unacknowledged, executor.reconcile)
        self.unanswered_cancels = sweep(
            "cancel_again",
            has_unanswered_cancel,
            cancel_again(executor.cancel, executor.cancel_held),
        )
        self.unanswered_amends = sweep(
            "amend_again", has_unanswered_amend, amend_again(executor.amend)
        )
        self.sweeps = (self.unacknowledged, self.unanswered_cancels, self.unanswered_amends)
        self.purge_timer = PurgeTimer(
            purges,
            retention,
            owned_partitions=self.owned_partitions,
            publish_trigger=outbox.trigger,
        )
        # The agents write orders through this: every write reaches the indexes above.
        self.orders = observed = ObservedOrders(
            orders,
            [at_exchange, monitor, algos, *self.sweeps, purges],
        )

        # -- the agents' contexts ----------------------------------------------------------------
        # Per partition of the input topics: offsets below this were on the topic when this
        # worker took the partition, so a previous owner may have processed them.
        self._replay_below: dict[tuple[str, int], int] = {}
        # Intake applies one command at a time, whether it came through order-commands or
        # straight from the edge (CommandRoute).
        self._intake_lock = asyncio.Lock()
        # Partitions read on both order-requests and order-commands: a request read there
        # that maps to its own partition goes straight to intake. Empty while rebalancing.
        self._direct_partitions: frozenset[int] = frozenset()
        self.command_route = CommandRoute(
            publish=outbox.command_delivery,
            apply=lambda command, replayed: apply_command(self.intake, command, replayed=replayed),
            partition_of=lambda key: partition_of(key, partitions),
            direct_partitions=lambda: self._direct_partitions,
            ready=lambda: (
                self.catalog.loaded and self.guard.is_ready() and self.tick_feed.ready.is_set()
            ),
            lock=self._intake_lock,
        )
        # The stateless edge: authenticates traders' requests and routes them by order id.
        self.edge = EdgeContext(
            emit=outbox.event,
            dead_letter=outbox.dead_letter,
            source_topic=self._requests_topic,
            authenticator=(
                None
                if settings.risk.auth_mode == "trusted"
                else Authenticator(settings.risk, SigningKeys(settings.resolved_secrets_file))
            ),
            forward=self.command_route,
        )
        # Checked here, before anything runs: a variant a worker cannot apply stops it.
        experiments = Experiments.from_settings(settings.experiments)
        if experiments.experiments:
            log.info("worker.experiments", names=[e.name for e in experiments.experiments])
        self.intake = intake = IntakeContext(
            orders=observed,
            executor=executor,
            instrument=catalog.get,
            account_known=trading_accounts.__contains__,
            emit=outbox.event,
            dead_letter=outbox.dead_letter,
            source_topic=self._commands_topic,
            held=held,
            queue_settings=settings.queue,
            on_fired=trigger_loop.publish,
            publish_trigger=outbox.trigger,
            guard=guard,
            nonces=nonces,
            make_durable=lambda: self.app.producer.flush(),
            retention=retention,
            experiments=experiments,
            mark=market.mark,
            strategies=strategies,
            venues=venues,
            touch=market.latest,
            publish_report=outbox.report,
        )
        self.release = ReleaseContext(
            orders=observed,
            emit=outbox.event,
            dead_letter=outbox.dead_letter,
            source_topic=self._triggers_topic,
            held=held,
            executor=executor,
            instrument=catalog.get,
            create=lambda request, links, replayed: submit_linked(intake, request, links, replayed),
            on_fired=trigger_loop.publish,
            publish_trigger=outbox.trigger,
            retention=retention,
            venues=venues,
            # The children of a strategy's decision, once recorded on its order.
            publish_request=outbox.commands_of(InternalComponent.ALGO),
        )
        self.state = OrderStateContext(
            orders=observed,
            emit=outbox.event,
            dead_letter=outbox.dead_letter,
            source_topic=self._reports_topic,
            publish_trigger=outbox.trigger,
            publish_report=outbox.report,
            finished=finished,
        )

        # -- the lifecycle: monitoring, auto-cancel, partial fills, algorithms, metrics ---------
        self.lifecycle = LifecycleService(
            partitions=partitions,
            ownership=self.ownership,
            reconciler=reconciler,
            monitor=monitor,
            algos=algos,
            metrics=self.metrics,
            next_reconnect=exchange.next_reconnect,
            reconciled=exchange.reconciled,
            can_reconcile=self._can_reconcile,
            queue_statistics=self.queue_statistics,
            executor_stats=lambda: executor.stats,
            inflight=lambda: commands.count,
            publish_sample=outbox.metrics_sample,
            worker_id=f"{settings.worker.app_id}@{socket.gethostname()}:{os.getpid()}",
            algo_interval_s=settings.lifecycle.check_interval,
        )

        # Started in this order once Faust runs, stopped in the reverse order.
        self.components: list[Startable] = [
            exchange,
            commands,  # stopped before the venue: the commands in flight drain first
            guard,
            self.tick_feed,
            trigger_loop,
            dispatcher,
            self.lifecycle,
        ]
        self._register()

    # -- what components read of the app ------------------------------------------------------

    def owned_partitions(self) -> set[int]:
        """Partitions of the orders (commands, reports, triggers) this worker owns now."""
        return self.oms.active_partitions(self._commands_topic)

    def owns_order(self, order_id: str) -> bool:
        """Does this worker own the partition of ``order_id`` right now?"""
        return partition_of(order_id, self.settings.kafka.partitions) in self.owned_partitions()

    def _order_of(self, order_id: str) -> OrderRecord | None:
        order: OrderRecord | None = self.oms.orders.get(order_id)
        return order

    def _settled(self) -> bool:
        """No rebalance and no table recovery under way."""
        app = self.app
        recovery: Any = getattr(app.tables, "recovery", None)
        return not (
            getattr(app, "rebalancing", False)
            or getattr(app, "in_recovery", False)
            or (recovery is not None and not recovery.completed.is_set())
        )

    def _can_reconcile(self) -> bool:
        """Instruments loaded (the currency of each lookup comes from them), no rebalance
        and no table recovery under way."""
        return bool(len(self.catalog)) and self._settled()

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Readiness: instruments loaded and not in the middle of a rebalance. (A worker
        without partitions, e.g. more replicas than partitions, is still ready: it is a
        standby, and readiness gates rollouts.)"""
        instruments = len(self.catalog)
        try:
            assigned = len(self.app.consumer.assignment())
        except Exception:  # consumer not started yet
            assigned = 0
        rebalancing = bool(getattr(self.app, "rebalancing", False))
        ok = instruments > 0 and not rebalancing
        return ok, {
            "ready": ok,
            "instruments": instruments,
            "rebalancing": rebalancing,
            "assigned_partitions": assigned,
        }

    # -- agents, timers, pages -------------------------------------------------------------

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
                    replayed=self._is_replay(message),
                )

        async def intake(stream: Any) -> None:
            # Never check an order against a half-loaded book: instruments, the risk topics
            # and the market cache's replay first (marks for notional limits and price bands).
            await self.catalog.wait_loaded()
            await self.guard.ready()
            await self.tick_feed.ready.wait()
            async for event in stream.events():
                message = event.message
                async with self._intake_lock:
                    await handle_command(
                        self.intake,
                        event.value,
                        key=message.key,
                        partition=message.partition,
                        offset=message.offset,
                        replayed=self._is_replay(message),
                    )
                    self.command_route.applied(message.partition, message.offset)

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
            # What is on order-commands now is applied before any command skips it.
            self.command_route.assigned(
                {tp.partition: end for tp, end in highwaters.items() if tp.topic == commands_name}
            )
            commands = self.oms.active_partitions(commands_name)
            self._direct_partitions = frozenset(
                commands & self.oms.active_partitions(self._requests_topic)
            )
            self._in_place_partitions = frozenset(
                commands
                & self.oms.active_partitions(self._reports_topic)
                & self.oms.active_partitions(self._triggers_topic)
            )
            log.info(
                "worker.partitions_assigned",
                partitions=sorted(tp.partition for tp in tps if tp.topic == commands_name),
            )

        app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]

        async def on_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
            self._direct_partitions = frozenset()
            self._in_place_partitions = frozenset()
            self.lifecycle.partitions_revoked(
                {tp.partition for tp in revoked if tp.topic == commands_name}
            )

        app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]

        async def on_rebalance_complete(sender: Any, **kwargs: Any) -> None:
            await self.rebuild_from_table()

        app.on_rebalance_complete.connect(on_rebalance_complete)  # type: ignore[arg-type]

        @app.task
        async def start_components() -> None:
            await start_all(self.components)
            # What exists once the worker has started (modules, Faust, clients, caches) lives
            # as long as the process: out of the collector's reach, a full collection no
            # longer walks it (they paused the event loop 60-100 ms every ~10 s at 20
            # orders/s). Young collections less often: most per-message objects die young.
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

        async def stop_components(sender: Any, **kwargs: Any) -> None:
            await stop_all(self.components)

        app.on_before_shutdown.connect(stop_components)  # type: ignore[arg-type]

        interval = self.settings.worker.recovery_check_interval_s
        healer = StallHealer(lambda: app.consumer, inputs, queued=stream_buffer_holds(app))
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
                await self.rebuild_from_table()

        @app.timer(interval=self.settings.worker.purge_interval_s)
        async def purge_ended_orders() -> None:
            try:
                await self.purge_timer.run_once()
            except Exception:  # a bad round must not stop the timer
                log.exception("worker.purge_failed")

        @app.timer(interval=interval)
        async def cancel_halted_orders() -> None:
            await self.guard.cancel_halted()

        @app.timer(interval=self.settings.lifecycle.check_interval)
        async def lifecycle_check() -> None:
            try:
                await self.lifecycle.check()
            except Exception:  # a bad pass must not stop the timer
                log.exception("lifecycle.check_failed")

        @app.timer(interval=self.settings.strategies.reload_interval_s)
        async def reload_strategies() -> None:
            # Plugins whose code or settings changed are reloaded; a broken one is refused
            # (logged) and the version in use stays.
            try:
                await self.strategies.refresh_async()
            except Exception:
                log.exception("strategies.reload_failed")

        sample_every = self.settings.lifecycle.metrics_sample_interval
        if sample_every > 0:

            @app.timer(interval=sample_every)
            async def metrics_sample() -> None:
                try:
                    await self.lifecycle.sample_metrics()
                except Exception:
                    log.exception("lifecycle.metrics_sample_failed")

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
                    "edge": {
                        **self.edge.counters,
                        "commands_direct": self.command_route.direct,
                        "commands_published": self.command_route.published,
                        "commands_behind": self.command_route.behind,
                    },
                    "intake": self.intake.counters,
                    "order_state": {
                        **self.state.counters,
                        "reports_applied_directly": self.report_route.applied,
                        "reports_through_topic": self.report_route.through_topic,
                        "reports_in_place_failed": self.report_route.failed,
                    },
                    "executor": self.executor.stats,
                    "reconcile": self.reconciler.snapshot(),
                    "release": {
                        **self.release.counters,
                        "triggers_applied_directly": self.trigger_route.applied,
                        "triggers_through_topic": self.trigger_route.through_topic,
                        "triggers_in_place_failed": self.trigger_route.failed,
                    },
                    "dispatcher": self.dispatcher.stats,
                    "tick_feed": self.tick_feed.stats(),
                    "market": self.market.stats(),
                    "risk_feeds": self.guard.feeds.stats(),
                    "queue": self.queue_statistics(),
                    "table": self.table_statistics(),
                    "components": {c.name: c.state.value for c in self.components},
                }
            )

        @app.page("/metrics")
        async def metrics(web: Any, request: Any) -> Any:
            # aiohttp refuses a charset inside content_type: pass the header as is.
            body = self.lifecycle.prometheus()
            return web.bytes(body, headers={"Content-Type": CONTENT_TYPE})

        @app.page("/metrics/summary")
        async def summary(web: Any, request: Any) -> Any:
            return web.json(self.lifecycle.summary())

        @app.page("/live")
        async def live(web: Any, request: Any) -> Any:
            return web.json({"live": True})

        @app.page("/ready")
        async def ready(web: Any, request: Any) -> Any:
            ok, body = self.ready()
            return web.json(body, status=200 if ok else 503)

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
        """Take up the commands of owned orders that may have died with a worker: submits
        never acknowledged, cancels and edits never answered (:mod:`oms.streams.sweep`);
        returns how many orders were acted on."""
        if not self.ownership.refresh():
            return 0
        now = now_ms()
        return sum([await sweep.run_once(now) for sweep in self.sweeps])

    def table_statistics(self) -> dict[str, Any]:
        """What the worker holds: orders and markers in its tables (every partition it
        holds), and the orders each index follows (owned partitions)."""
        return {
            "orders": len(self.oms.orders),
            "finished_markers": len(self.oms.finished),
            "ended_awaiting_purge": self.purges.ended,
            "markers_queued": self.purges.remembered,
            "at_exchange": len(self.at_exchange),
            "unacknowledged": len(self.unacknowledged),
            "unanswered_cancels": len(self.unanswered_cancels),
            "unanswered_amends": len(self.unanswered_amends),
            "sweeps": {
                "reconciled": self.unacknowledged.acted,
                "cancels_sent_again": self.unanswered_cancels.acted,
                "amends_sent_again": self.unanswered_amends.acted,
            },
            "monitored": self.monitor.followed,
            "algos": self.algos.followed,
            "strategies": self.strategies.describe(),
            "purge": dict(self.purge_timer.counters),
            "changelog": {
                table.name: {"written": table.changelog_writes, "queued": table.changelog_queued}
                for table in self.oms.app.tables.values()
                if isinstance(table, KeyPartitionedTable)
            },
        }

    def queue_statistics(self) -> dict[str, Any]:
        """The queues' statistics (``get_queue_statistics``) for the partitions this worker
        owns."""
        stats = self.held.statistics(now_ms())
        stats["partitions"] = sorted(self._held_partitions or ())
        return stats

    async def rebuild_from_table(self) -> None:
        """Reload what follows the orders of owned partitions from the tables (after a
        rebalance or restart: the tables were restored from their changelogs): the waiting
        and queued orders, every timer's index, the markers to forget; drop those of
        partitions that moved away."""
        owned = frozenset(self.owned_partitions())
        partitions = self.settings.kafka.partitions

        def owns(order_id: str) -> bool:
            return partition_of(order_id, partitions) in owned

        result, fired = self.held.rebuild(
            list(self.oms.orders.items()),
            owns=owns,
            now_ms=now_ms(),
            busy=self.commands.is_inflight,
        )
        followed = self.orders.rebuild(owns)  # empties the purge schedule too
        markers = 0
        for order_id, marker in self.finished.items():
            if marker is not None and owns(order_id):
                self.purges.note_marker(order_id, marker)
                markers += 1
        self._held_partitions = owned
        log.info(
            "worker.held_rebuilt",
            partitions=len(owned),
            waiting=result.waiting,
            queued=result.queued,
            dropped=result.dropped,
            orders=followed,
            markers=markers,
        )
        if fired:
            await self.trigger_loop.publish(fired)

    def run(self, loglevel: str = "info") -> None:
        """Run the worker in the foreground until stopped."""
        run_faust_worker(self.app, self.settings, loglevel=loglevel)
