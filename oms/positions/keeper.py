"""The position keeper: its own Faust app (``<worker.app_id>-positions``) on the same broker.

Data flows one way::

    execution-reports ──route──> positions-fills (internal, key: account|instrument)
                                        │
                                        └──apply──> positions table (+ seen trades table)
                                                 ├──> oms.positions (PositionRecord)
                                                 └──> oms.order-events (problems, mismatches)

``route`` (:mod:`oms.positions.router`, a plain aiokafka consumer) reads reports in batches,
drops those without fills and forwards the rest grouped per position, so ``apply`` (a Faust
agent) is the single writer of each position key (one partition of the internal topic).
Reconciliation and ``oms positions ack`` send their commands through the same internal
topic, so they too are applied by that single writer, in order; so are the ``prune``
commands that bound the seen-trades table (see :mod:`oms.positions.retention`).
"""

from __future__ import annotations

import gc
import time
from collections import defaultdict
from collections.abc import Iterator, MutableMapping
from functools import partial
from typing import Any

import faust
import orjson
import pydantic
import structlog
from faust.types import TP

from oms.exchange.venues import create_accounts, create_instrument_catalog, venue_accounts
from oms.kafka.faust_patches import StallHealer, stream_buffer_holds
from oms.kafka.faust_worker import FlushFirstProducer, new_faust_app, run_faust_worker
from oms.kafka.partitioning import partition_of
from oms.positions.ledger import Applied, FillProblem, Ledger
from oms.positions.math import Book, PositionKind, kind_of
from oms.positions.reconcile import Reconciler
from oms.positions.recorder import RecordPublisher
from oms.positions.retention import PRUNE, SeenTradesPruner, prune_command
from oms.positions.router import ReportRouter
from oms.positions.state import (
    PositionRecordValue,
    PositionState,
    PositionStateValue,
    ReportBundle,
)
from oms.schemas import (
    DEFAULT_VENUE,
    ExecutionReport,
    OrderEvent,
    OrderEventType,
    PositionRecord,
    PositionRecordType,
    ReasonCode,
    Topic,
    now_ms,
    position_key,
)
from oms.schemas.decode import EMPTY, TOMBSTONE, Undecodable, failure_of
from oms.secrets import SecretStore
from oms.settings import Settings

log = structlog.get_logger(__name__)

FILLS_TOPIC = "positions-fills"
# A no-op command the keeper sends to an internal partition it has processed nothing of since
# it started: once it is applied, everything before it on that partition was applied too.
BARRIER = "barrier"
# A barrier not seen applied after this long is sent again (s).
_BARRIER_RESEND_S = 30.0


class SeenTrades(MutableMapping[str, PositionRecord | None]):
    """The seen-trades table as the ledger uses it: lookups go straight to the in-memory store
    (a miss is the common case, and Faust's ``__getitem__`` raises and catches a KeyError for
    each one); writes go through the table, so they reach its changelog."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, key: str, default: Any = None) -> Any:
        store = getattr(self.table.data, "data", None)
        if isinstance(store, dict):  # memory:// store
            return store.get(key, default)
        return self.table.get(key, default)

    def __getitem__(self, key: str) -> PositionRecord | None:
        value: PositionRecord | None = self.table[key]
        return value

    def __setitem__(self, key: str, value: PositionRecord | None) -> None:
        self.table[key] = value

    def __delitem__(self, key: str) -> None:
        del self.table[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)

    def scan(self) -> Iterator[tuple[str, PositionRecord | None]]:
        """Every (trade_id, record) in memory, without copying the table (do not modify it
        while iterating)."""
        store = getattr(self.table.data, "data", None)
        if isinstance(store, dict):  # memory:// store
            return iter(store.items())
        return iter(self.table.items())


def keeper_app_id(settings: Settings) -> str:
    return settings.positions.app_id or f"{settings.worker.app_id}-positions"


class PositionKeeper:
    """Everything one keeper process runs."""

    def __init__(self, settings: Settings, *, reconcile: bool | None = None) -> None:
        self.settings = settings
        ps = settings.positions
        batch = ps.recording_mode == "batch"
        self.positions_topic = settings.topic(Topic.POSITIONS)
        self.publisher = RecordPublisher(
            partial(self._send, self.positions_topic), batch=batch, batch_size=ps.batch_size
        )
        self.app: faust.App = new_faust_app(
            settings,
            keeper_app_id(settings),
            ps.web_port,
            # Buffered records go out in every producer flush, before offsets are committed.
            before_producer_flush=self.publisher.flush,
            # In batch mode offsets are committed (and records flushed, see RecordPublisher)
            # once per flush interval rather than every half second.
            broker_commit_interval=max(0.5, ps.batch_flush_interval_s) if batch else 0.5,
            # aiokafka sends one batch per partition at a time and send() waits while it is
            # full: with the default 16 KiB, every few fills waited for a broker round trip.
            producer_max_batch_size=1_048_576,
        )
        n = settings.kafka.partitions
        self.fills = self.app.topic(settings.topic(FILLS_TOPIC), partitions=n, internal=True)
        self.events_topic = settings.topic(Topic.ORDER_EVENTS)
        self.dead_letters_topic = settings.topic(Topic.DEAD_LETTERS)
        self.fills_topic = self.fills.get_topic_name()
        self.positions = self.app.Table(
            "positions",
            default=None,
            key_type=str,
            value_type=PositionStateValue,
            partitions=n,
            help="Current position per account|instrument (single writer: the apply agent).",
        )
        self.seen = self.app.Table(
            "position-trades",
            default=None,
            key_type=str,
            value_type=PositionRecordValue,
            partitions=n,
            help="Record produced by each trade id, for dedupe and re-announcement.",
        )
        self.catalog = create_instrument_catalog(settings)
        seen = SeenTrades(self.seen)
        retention_ms = int(ps.seen_trades_retention_s * 1000)
        self.ledger = Ledger(self.positions, seen, self.kind_of, retention_ms=retention_ms)
        self.pruner = SeenTradesPruner(seen, seen.scan, n, retention_ms)
        self.router = ReportRouter(
            settings,
            f"{keeper_app_id(settings)}-route",
            lambda key, value: self._send(self.fills_topic, key, value),
            self._flush_sent,
        )
        self.counters: dict[str, int] = defaultdict(int)
        self._replay_below: dict[int, int] = {}
        # Last offset processed per (topic, partition) of both inputs (reconcile readiness).
        self._processed: dict[tuple[str, int], int] = {}
        # Internal partition -> when a barrier was sent to it (monotonic s).
        self._barriers: dict[int, float] = {}
        secrets = SecretStore(settings.resolved_secrets_file)
        enabled = ps.reconcile if reconcile is None else reconcile
        # Every venue's positions, each against its own venue's accounts.
        accounts = venue_accounts(settings, secrets.trading_accounts(settings.accounts))
        self.reconciler = (
            Reconciler(
                settings,
                {venue: create_accounts(settings, secrets, venue) for venue in accounts},
                accounts,
                self.owned_positions,
                self.send_command,
                self.ready_to_reconcile,
                self.owns_key,
            )
            if enabled
            else None
        )
        self._register()

    # -- helpers -------------------------------------------------------------------------

    def kind_of(self, instrument_name: str) -> PositionKind:
        spec = self.catalog.get(instrument_name)
        if spec is None:
            return kind_of(instrument_name)
        return kind_of(instrument_name, spec.kind, spec.instrument_type, spec.settlement_currency)

    async def _send(self, topic: str, key: str | None, value: bytes) -> None:
        await self.app.producer.send(
            topic, key.encode() if key else None, value, partition=None, timestamp=None,
            headers=None,
        )  # fmt: skip

    async def _flush_sent(self) -> None:
        """Flush what is already sent to the producer, leaving the record buffer alone (the
        router's commits need their bundles on the broker, not the buffered records)."""
        producer = self.app.producer
        assert isinstance(producer, FlushFirstProducer)
        await producer.flush_sent()

    async def request_prune(self) -> None:
        """Ask each partition of the internal topic this keeper owns to drop its expired
        seen trades (a table may only be changed inside an event of its partition)."""
        if not self.tables_ready():
            return
        actives: set[TP] = self.app.assignor.assigned_actives()
        command = ReportBundle(command=prune_command(self.pruner.cutoff())).to_bytes()
        for tp in sorted(actives):
            if tp.topic == self.fills_topic:
                await self.app.producer.send(
                    self.fills_topic, None, command, partition=tp.partition, timestamp=None,
                    headers=None,
                )  # fmt: skip

    async def send_command(self, key: str, command: dict[str, Any]) -> None:
        """Queue a command (correction, ack) for the single writer of ``key``."""
        await self._send(self.fills_topic, key, ReportBundle(command=command).to_bytes())

    def owned_positions(self) -> list[PositionState]:
        """Positions of the partitions this keeper owns (what it may reconcile)."""
        actives: set[TP] = self.app.assignor.assigned_actives()
        owned = {tp.partition for tp in actives if tp.topic == self.fills_topic}
        if not owned:
            return []
        n = self.settings.kafka.partitions
        return [
            state
            for key, state in list(self.positions.items())
            if state is not None and partition_of(key, n) in owned
        ]

    def owns_key(self, key: str) -> bool:
        actives: set[TP] = self.app.assignor.assigned_actives()
        partition = partition_of(key, self.settings.kafka.partitions)
        return TP(self.fills_topic, partition) in actives

    def tables_ready(self) -> bool:
        """Partitions of the internal topic assigned and the tables recovered."""
        actives: set[TP] = self.app.assignor.assigned_actives()
        recovery: Any = getattr(self.app.tables, "recovery", None)
        return (
            any(tp.topic == self.fills_topic for tp in actives)
            and recovery is not None
            and recovery.completed.is_set()
            and not self.app.in_recovery
        )

    async def ready_to_reconcile(self) -> bool:
        """Owns positions, tables recovered, and everything on both inputs processed (else
        a check would take fills still in flight for differences).

        A partition this keeper has processed nothing of since it started (a restart, with
        everything committed before) gets a barrier command: once applied, the partition is
        known processed up to it. Without it, the check waited for new traffic on every
        partition, in practice the first seen-trades prune (``seen_trades_prune_interval_s``,
        10 min): reconciliation "on start" ran 7-10 minutes late."""
        if not self.tables_ready() or not await self.router.caught_up():
            return False
        actives: set[TP] = self.app.assignor.assigned_actives()
        tps = [tp for tp in actives if tp.topic == self.fills_topic]
        await self._send_barriers(tps)
        # Bundles (and commands) sent must be on the broker before end offsets are read.
        await self.app.producer.flush()
        highwaters = await self.app.consumer.highwaters(*tps)
        for tp, end in highwaters.items():
            done = self._processed.get((tp.topic, tp.partition))
            if end > 0 and (done is None or done + 1 < end):
                return False
        # The last offset processed says nothing of the ones before it: Faust can drop
        # fetched fills around a rebalance and deliver what follows (a barrier), and the
        # healer reads them again only seconds later. A check meanwhile would adopt the
        # exchange's figures, and the re-read fills would then count twice.
        for tp in tps:
            if self.healer.hole(tp):
                return False
        return True

    async def _send_barriers(self, tps: list[TP]) -> None:
        now = time.monotonic()
        command = ReportBundle(command={"type": BARRIER}).to_bytes()
        for tp in tps:
            if (tp.topic, tp.partition) in self._processed:
                self._barriers.pop(tp.partition, None)
                continue
            sent = self._barriers.get(tp.partition)
            if sent is not None and now - sent < _BARRIER_RESEND_S:
                continue
            self._barriers[tp.partition] = now
            self.counters["barriers_sent"] += 1
            await self.app.producer.send(
                self.fills_topic, None, command, partition=tp.partition, timestamp=None,
                headers=None,
            )  # fmt: skip

    # -- agents ----------------------------------------------------------------------------

    def _register(self) -> None:
        app = self.app
        ps = self.settings.positions

        async def apply(stream: Any) -> None:
            # Faust restarts an agent that raised: counted, so /stats shows it (bad input is
            # dead-lettered by _apply_message and must never do that).
            self.counters["apply_starts"] += 1
            async for event in stream.events():
                await self._apply(event)

        app.agent(self.fills, name="positions_apply")(apply)

        async def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
            tps = [tp for tp in assigned if tp.topic == self.fills_topic]
            if not tps:
                return
            highwaters = await app.consumer.highwaters(*tps)
            for tp, offset in highwaters.items():
                self._replay_below[tp.partition] = offset
            if self.reconciler is not None:
                self.reconciler.request("assigned")

        app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]

        @app.task
        async def start_services() -> None:
            await self.catalog.start()
            await self.router.start()
            if self.reconciler is not None:
                await self.reconciler.start()

        @app.timer(interval=ps.batch_flush_interval_s)
        async def flush_records() -> None:
            await self.publisher.flush()

        @app.timer(interval=ps.seen_trades_prune_interval_s)
        async def prune_seen_trades() -> None:
            await self.request_prune()

        # Faust can drop a fetched fill around a rebalance (see oms.kafka.faust_patches):
        # its partition is read again from the committed offset, replays counted once.
        self.healer = healer = StallHealer(
            lambda: app.consumer, {self.fills_topic}, queued=stream_buffer_holds(app)
        )

        @app.timer(interval=1.0)
        async def heal_stalled_partitions() -> None:
            for tp, committed in healer.stalled(time.monotonic()):
                highwater = (await app.consumer.highwaters(tp)).get(tp, committed)
                self._replay_below[tp.partition] = highwater
                self.counters["partitions_healed"] += 1
                log.warning(
                    "positions.partition_stalled", partition=tp.partition, reread_from=committed
                )
                await healer.heal(tp, committed)

        async def on_stop(app: Any, **kwargs: Any) -> None:
            await self.router.stop()
            if self.reconciler is not None:
                await self.reconciler.stop()
            await self.publisher.flush()

        app.on_before_shutdown.connect(on_stop)  # type: ignore[arg-type]

        @app.page("/health")
        async def health(web: Any, request: Any) -> Any:
            return web.json(
                {
                    "status": "ok",
                    "instruments": len(self.catalog),
                    "ready": self.tables_ready(),
                }
            )

        @app.page("/stats")
        async def stats(web: Any, request: Any) -> Any:
            return web.json(
                {
                    "ledger": self.ledger.counters.as_dict(),
                    "keeper": dict(self.counters),
                    "seen_trades": len(self.seen),
                    "route": dict(self.router.counters),
                    "recorder": self.publisher.stats(),
                    "reconcile": self.reconciler.stats() if self.reconciler else None,
                }
            )

        @app.page("/positions")
        async def positions(web: Any, request: Any) -> Any:
            return web.json([s.model_dump(mode="json") for s in list(self.positions.values()) if s])

    def _mark_processed(self, message: Any) -> None:
        key = (message.topic, message.partition)
        if message.offset > self._processed.get(key, -1):
            self._processed[key] = message.offset

    async def _apply(self, event: Any) -> None:
        message = event.message
        try:
            await self._apply_message(event, message)
        finally:
            self._mark_processed(message)

    async def _apply_message(self, event: Any, message: Any) -> None:
        raw: bytes | None = event.value
        # The internal topic is not compacted and carries bundles and commands only: a
        # tombstone on it deletes nothing, it is refused like an empty value.
        if not raw:
            await self._refuse(message, TOMBSTONE if raw is None else EMPTY)
            return
        try:
            bundle = ReportBundle.from_bytes(raw)
        except pydantic.ValidationError as exc:
            bundle = await self._salvage(raw, message, exc)
        if bundle.command is not None:
            kind = bundle.command.get("type")
            if kind == PRUNE:
                self._prune(message.partition, bundle.command)
            elif kind == BARRIER:
                self.counters["barriers"] += 1  # nothing to do: being processed is the point
            else:
                await self._command(bundle.command)
            return
        replayed = message.offset < self._replay_below.get(message.partition, 0)
        applied = self.ledger.apply_reports(bundle.reports, replayed=replayed)
        await self._publish(applied)

    async def _salvage(
        self, raw: bytes, message: Any, exc: pydantic.ValidationError
    ) -> ReportBundle:
        """A bundle that did not validate: keep its valid reports, dead-letter the others
        (the route agent forwards reports after a cheap look only). Not JSON, or no reports
        in it: the whole message is dead-lettered."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        items = body.get("reports") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            await self._refuse(message, failure_of(exc))
            return ReportBundle()
        good: list[ExecutionReport] = []
        for item in items:
            try:
                good.append(ExecutionReport.model_validate(item))
            except pydantic.ValidationError as err:
                await self._refuse(message, failure_of(err), orjson.dumps(item))
        return ReportBundle(reports=good)

    async def _refuse(
        self, message: Any, failure: Undecodable, payload: bytes | None = None
    ) -> None:
        """Dead-letter what could not be applied (``payload``: one report of a bundle, else
        the whole message)."""
        self.counters["malformed_reports_applied"] += 1
        self.counters[f"undecodable_{failure.reason_code.value}"] += 1
        letter = failure.letter(
            message.value if payload is None else payload, consumer="positions",
            source_topic=message.topic, key=message.key, partition=message.partition,
            offset=message.offset,
        )  # fmt: skip
        await self._send(self.dead_letters_topic, letter.key, letter.to_bytes())

    async def _publish(self, applied: Applied) -> None:
        for record in applied.records:
            await self.publisher.publish(record)
        for problem in applied.problems:
            await self._emit(_problem_event(problem))

    async def _emit(self, event: OrderEvent) -> None:
        await self._send(self.events_topic, event.order_id, event.to_bytes())

    # -- commands (seen-trades retention, reconciliation, review) -----------------------------

    def _prune(self, partition: int, command: dict[str, Any]) -> None:
        """Delete this partition's expired seen trades (inside its event, so the tombstones
        go to the partition's changelog). Not a fill: the ledger never sees it."""
        cutoff = command.get("cutoff")
        if not isinstance(cutoff, int):
            self.counters["bad_commands"] += 1
            return
        removed = self.pruner.prune(partition, cutoff)
        self.counters["prunes"] += 1
        self.counters["seen_trades_pruned"] += removed
        if removed:
            log.info("positions.seen_trades_pruned", partition=partition, removed=removed)

    async def _command(self, command: dict[str, Any]) -> None:
        kind = command.get("type")
        account, instrument = command.get("account_id"), command.get("instrument_name")
        if not isinstance(account, str) or not isinstance(instrument, str):
            self.counters["bad_commands"] += 1
            return
        venue = command.get("venue") or DEFAULT_VENUE
        if not isinstance(venue, str):
            self.counters["bad_commands"] += 1
            return
        key = position_key(account, instrument, venue)
        state = self.ledger.state(account, instrument, venue)
        if kind == "correction":
            await self._correct(key, state, command)
        elif kind == "ack":
            await self._ack(key, state, command)
        else:
            self.counters["bad_commands"] += 1

    async def _correct(self, key: str, state: PositionState, command: dict[str, Any]) -> None:
        size = float(command["size"])
        average = float(command.get("average_price") or 0.0)
        # The check that sent this saw an older state: fills applied since may explain the
        # difference, and adopting the exchange's figures now would count them twice. The
        # next check looks again.
        if state.version != int(command.get("recorded_version", state.version)):
            self.counters["corrections_dropped"] += 1
            return
        version = state.version + 1
        message = f"recorded size {state.size} @ {state.average_price}, exchange {size} @ {average}"
        record = _change_record(
            key,
            state,
            PositionRecordType.CORRECTION,
            version,
            actor="reconciliation",
            size=size,
            average_price=average,
            mark_price=command.get("mark_price"),
            unrealized_pnl=command.get("floating_profit_loss"),
            reason_code=ReasonCode.POSITION_MISMATCH,
            message=message,
            needs_review=True,
            exchange_size=size,
            exchange_average_price=average,
        )
        self.positions[key] = state.model_copy(
            update={
                # The exchange's figures are the new starting point of the reorder window.
                "checkpoint": Book(size, average, state.realized_pnl, state.fees),
                "recent": [],
                "size": size,
                "average_price": average,
                "version": version,
                "updated_at": record.timestamp,
                "needs_review": True,
                "review_reason": message,
            }
        )
        self.counters["corrections"] += 1
        log.warning("positions.mismatch", key=key, detail=message)
        await self.publisher.publish(record)
        await self._emit(
            OrderEvent(
                event_id=f"position:{key}:{version}:position_mismatch",
                event_type=OrderEventType.POSITION_MISMATCH,
                order_id=f"position:{key}",
                account_id=state.account_id,
                instrument_name=state.instrument_name,
                reason_code=ReasonCode.POSITION_MISMATCH,
                message=message,
                amount=size,
                version=version,
                details={
                    "severity": "emergency",
                    "recorded_size": state.size,
                    "recorded_average_price": state.average_price,
                    "exchange_size": size,
                    "exchange_average_price": average,
                    "trigger": command.get("trigger"),
                    "needs_review": True,
                },
            )
        )

    async def _ack(self, key: str, state: PositionState, command: dict[str, Any]) -> None:
        if not state.needs_review:
            self.counters["acks_ignored"] += 1
            return
        version = state.version + 1
        actor = str(command.get("actor") or "operator")
        record = _change_record(
            key,
            state,
            PositionRecordType.ADJUSTMENT,
            version,
            actor=actor,
            size=state.size,
            average_price=state.average_price,
            message=f"review acknowledged: {state.review_reason or ''}"[:500],
            needs_review=False,
        )
        self.positions[key] = state.model_copy(
            update={
                "version": version,
                "needs_review": False,
                "review_reason": None,
                "updated_at": now_ms(),
            }
        )
        await self.publisher.publish(record)

    # -- running -----------------------------------------------------------------------------

    def run(self, loglevel: str = "info") -> None:
        """Run the keeper in the foreground until stopped."""
        # Every fill allocates a few short-lived objects: with the default threshold the
        # cyclic collector ran every ~700 allocations and walked the long-lived tables.
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        run_faust_worker(
            self.app,
            self.settings,
            loglevel=loglevel,
            extra_topics={self.fills_topic: self.settings.kafka.partitions},
        )


def _change_record(
    key: str,
    state: PositionState,
    record_type: PositionRecordType,
    version: int,
    *,
    actor: str,
    **fields: Any,
) -> PositionRecord:
    """The record of a change to ``state`` that is not a fill (a correction, an adjustment):
    the position's running totals and its size and price before, plus ``fields``."""
    return PositionRecord(
        record_id=f"{key}:{record_type.value}:{version}",
        account_id=state.account_id,
        instrument_name=state.instrument_name,
        venue=state.venue,
        record_type=record_type,
        size_before=state.size,
        average_price_before=state.average_price,
        realized_pnl=state.realized_pnl,
        fees_total=state.fees,
        fills_total=state.fills,
        turnover_total=state.turnover,
        actor=actor,
        kind=state.kind.value,
        version=version,
        **fields,
    )


def _problem_event(problem: FillProblem) -> OrderEvent:
    report, fill = problem.report, problem.fill
    key = position_key(report.account_id, report.instrument_name, report.venue)
    subject = report.order_id or f"position:{key}"
    return OrderEvent(
        event_id=f"{subject}:fill:{fill.trade_id}:{problem.reason_code.value}:{report.report_id}"[
            :250
        ],
        event_type=OrderEventType.NEEDS_REVIEW,
        order_id=subject,
        account_id=report.account_id,
        instrument_name=report.instrument_name,
        reason_code=problem.reason_code,
        message=problem.message,
        amount=fill.amount,
        price=fill.price,
        details={"trade_id": fill.trade_id, "report_id": report.report_id, "needs_review": True},
    )


__all__ = ["FILLS_TOPIC", "PositionKeeper", "keeper_app_id"]
