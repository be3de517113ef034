"""Where a command is recorded: deduplicate, validate, record, hand to the executor.

Runs inside the ``intake`` agent on ``order-commands``, one message at a time per partition
owner, so the order table is read and written without races. Commands arrive authenticated
(the edge, :mod:`oms.streams.edge`) or from the OMS itself; here only the nonce of a signed
request is checked, since nonces are remembered per order. Nothing here waits for the
exchange.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import ValidationError

from oms.algos import sor, twap
from oms.algos.registry import StrategyRegistry
from oms.algos.tuning_math import TOUCH_KEYS, touch_metadata
from oms.auth.nonces import NonceStore
from oms.lifecycle import review
from oms.orders import decisions
from oms.orders.experiments import Experiments
from oms.orders.links import plan_children
from oms.orders.params import (
    ALGO_KEY,
    ALGO_VERSION_KEY,
    TWAP,
    SorParams,
    parse_params,
    works_through_children,
)
from oms.orders.scheduling import AutoSlicing, Schedule, Strategy, plan_schedule
from oms.orders.state_machine import make_event, reannouncement, transition
from oms.orders.validation import summarize_validation_error, validate_submit
from oms.schemas import (
    CommandType,
    ExecutionReport,
    MarketTick,
    OrderEvent,
    OrderEventType,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    OrderType,
    PendingAmend,
    ReasonCode,
    now_ms,
)
from oms.schemas.commands import OrderCommand
from oms.schemas.conditions import OrderTrigger, TriggerKind
from oms.schemas.decode import Undecodable, decode
from oms.schemas.rejection import Rejection
from oms.settings import QueueSettings
from oms.streams.context import AgentContext
from oms.streams.edge import unauthenticated
from oms.streams.execution import OrderExecutor
from oms.streams.held_changes import amend_in_table, cancel_in_table
from oms.streams.held_orders import HeldOrders, Withdrawal
from oms.streams.venue_rules import VenueRules, routed_venues_refusal, spec_at, venue_refusal

if TYPE_CHECKING:
    from oms.conditions.engine import Fired
    from oms.orders.retention import Finished
    from oms.risk.runtime import IntakeGuard
    from oms.streams.purge import Retention

log = structlog.get_logger(__name__)

# How many cancel/amend request ids an order remembers for idempotency.
SEEN_REQUESTS_KEPT = 32

_HELD = frozenset({OrderStatus.WAITING, OrderStatus.QUEUED})

# Metadata keys only the OMS writes on an order, refused in a client's request.
_OMS_KEYS = {
    # A child's news is folded into the order it names: a client naming one would add its
    # own fills to someone else's order.
    twap.PARENT_KEY: "is written by the OMS on the children an algorithm sends, not by requests",
    # The decisions recorded on an order tell its strategy which children are out: a request
    # carrying some would make its order wait for, or skip, attempts never made.
    decisions.DECISIONS_KEY: (
        "is written by the OMS when a strategy's decision is recorded, not by requests"
    ),
}


@dataclass(kw_only=True)
class IntakeContext(AgentContext):
    """Intake also validates against instruments and accounts and hands orders on: to the
    executor (immediate), the priority queues (queued) or the trigger engine (waiting)."""

    executor: OrderExecutor
    instrument: Callable[[str | None], Any]
    account_known: Callable[[str], bool]
    held: HeldOrders
    queue_settings: QueueSettings
    on_fired: Callable[[list[Fired]], Awaitable[None]]
    publish_trigger: Callable[[OrderTrigger], Awaitable[None]]
    # Pre-trade risk; None: no checks.
    guard: IntakeGuard | None = None
    # Nonces of signed requests per order id (replay protection); None: not remembered.
    nonces: NonceStore | None = None
    # Waits until the table writes made so far are on Kafka (the worker: its producer's
    # flush); None: writes are durable at once (tests with a plain dict).
    make_durable: Callable[[], Awaitable[None]] | None = None
    # Markers of orders that left the table (duplicates after the purge); None: no purge.
    retention: Retention | None = None
    # A/B experiments on execution strategies (enrols new orders); None: none.
    experiments: Experiments | None = None
    # An instrument's current mark price (the worker's market cache): recorded as the arrival
    # mark of orders in an experiment.
    mark: Callable[[str], float | None] | None = None
    # The execution strategies loaded (plugins); None: TWAP and chase, versions not recorded.
    strategies: StrategyRegistry | None = None
    # The configured venues (which exist, who trades where, each one's instruments); None:
    # the one default venue, whose instruments are ``instrument``.
    venues: VenueRules | None = None
    # An instrument's newest tick (the worker's market cache): its touch is recorded in a new
    # limit order's metadata, for the fill statistics of `oms tune`; None: not recorded.
    touch: Callable[[str], MarketTick | None] | None = None
    # Where a refused child of an algorithm's parent is reported to its parent (the worker:
    # ``order-reports``); None: not reported.
    publish_report: Callable[[ExecutionReport], Awaitable[None]] | None = None


async def handle_command(
    ctx: IntakeContext,
    raw: bytes | None,
    *,
    key: bytes | None,
    partition: int | None,
    offset: int | None,
    replayed: bool,
) -> None:
    """Process one message of ``order-commands``.

    ``replayed`` is true for messages a previous owner of the partition may already have
    processed (they were on the topic before this worker took the partition over): those
    are executed only after a label lookup, and never reported as user duplicates.
    """
    command = decode(OrderCommand, raw)
    if isinstance(command, Undecodable):  # only the OMS writes this topic: kept as evidence
        await ctx.reject_raw(
            raw, command.reason_code, command.error, key=key, partition=partition, offset=offset
        )
        return
    await apply_command(ctx, command, replayed=replayed)


async def apply_command(ctx: IntakeContext, command: OrderCommand, *, replayed: bool) -> None:
    """Record one parsed command: its nonce, then the submit or the change it asks for."""
    request, origin = command.request, command.origin
    ctx.count(f"commands_{request.command.value}")
    if origin.nonce is not None and ctx.nonces is not None:
        seen = ctx.nonces.check(request.key, origin.nonce, origin.source)
        if seen.replay:
            ctx.count("unauthenticated")
            rejection = Rejection(
                ReasonCode.NONCE_REUSED, f"nonce already used for order {request.key}: a replay"
            )
            await ctx.emit(unauthenticated(request, rejection, source=origin.source))
            return
        if seen.redelivery:
            replayed = True  # forwarded again by the edge after a crash: not a new request
        else:
            ctx.nonces.remember(request.key, origin.nonce, origin.source)
    # The OMS's own commands use deterministic request ids: a second copy (a timer that ran
    # again after a restart) is expected and acknowledged silently.
    quiet = replayed or origin.internal
    if request.command is CommandType.SUBMIT:
        # The OMS's own submits (algorithm slices, lifecycle) belong to an order that was
        # enrolled already, if at all.
        await _submit(ctx, request, replayed, quiet=quiet, enrol=not origin.internal)
    else:
        await _modify(ctx, request, replayed, quiet=quiet)


async def submit_linked(
    ctx: IntakeContext, request: OrderRequest, links: dict[str, Any], replayed: bool
) -> None:
    """Create a linked child order (asked by its parent's owner through ``order-triggers``)."""
    await _submit(ctx, request, replayed, links)


async def _submit(
    ctx: IntakeContext,
    request: OrderRequest,
    replayed: bool,
    links: dict[str, Any] | None = None,
    *,
    quiet: bool = False,
    enrol: bool = False,
) -> None:
    order_id = request.key
    existing: OrderRecord | None = ctx.orders.get(order_id)
    if existing is not None:
        if replayed or quiet:
            # Our own earlier processing, maybe cut short before its event went out.
            await ctx.emit(reannouncement(existing))
        else:
            ctx.count("duplicates")
            await ctx.emit(_duplicate_event(existing, request))
        return
    now = now_ms()
    retention = ctx.retention
    if retention is not None:
        ended = retention.finished.get(order_id)
        if ended is not None:
            # It ended and left the table; its marker still refuses the duplicate.
            if not (replayed or quiet):
                ctx.count("duplicates")
                ctx.count("duplicates_after_purge")
                await ctx.emit(_purged_duplicate_event(order_id, ended, request))
            return
    enrolled = _enrol(ctx, request, now) if enrol and links is None else request
    forged = next((key for key in _OMS_KEYS if key in request.metadata), None) if enrol else None
    if forged is not None:
        # The refused record does not carry the key either.
        metadata = {k: v for k, v in request.metadata.items() if k not in _OMS_KEYS}
        request = request.model_copy(update={"metadata": metadata})
        enrolled = Rejection(ReasonCode.SCHEMA_INVALID, f"metadata.{forged} {_OMS_KEYS[forged]}")
    if not isinstance(enrolled, Rejection):
        enrolled = _with_touch(ctx, enrolled)
    order = _record_from_request(request if isinstance(enrolled, Rejection) else enrolled)
    order.links = links
    if isinstance(enrolled, Rejection):
        await _reject(ctx, order, enrolled)
        return
    request = enrolled
    if retention is not None and retention.policy.too_old(request.created_at, now):
        # Its original, if there was one, may have ended and been forgotten already.
        ctx.count("too_old")
        await _reject(
            ctx,
            order,
            Rejection(
                ReasonCode.STALE_REQUEST,
                f"request created at {request.created_at}, longer ago than duplicates are "
                f"remembered ({retention.policy.dedupe_ms // 1000} s): not executed",
            ),
        )
        return
    planned: list[tuple[OrderRequest, dict[str, Any]]] = []
    if request.contingency is not None:
        try:
            order.links, planned = plan_children(request)
        except ValidationError as exc:
            message = f"contingency: {summarize_validation_error(exc)}"
            await _reject(ctx, order, Rejection(ReasonCode.SCHEMA_INVALID, message))
            return
    decision = _decide(ctx, request, order, now, linked=links is not None)
    if isinstance(decision, Rejection):
        await _reject(ctx, order, decision)
        return
    schedule = decision
    order = _pin_strategy(ctx, order, request, schedule)
    if links is not None and links.get("hold"):
        await _hold_for_parent(ctx, order, schedule)
    elif schedule.strategy is Strategy.SLICED:
        # An execution algorithm's parent: worked by the worker's timer, never sent itself.
        assert schedule.twap is not None
        spec = spec_at(ctx.venues, ctx.instrument, request.venue, request.instrument_name)
        working, event = twap.start_parent(order, schedule.twap, spec.min_trade_amount)
        event.details.update(_decided(schedule))
        ctx.orders[order_id] = working
        await ctx.emit(event)
    elif schedule.strategy is Strategy.ROUTED:
        # A routed parent: its children, each naming a venue, are sent by the worker's timer.
        working, event = sor.start_parent(order)
        event.details.update(_decided(schedule))
        ctx.orders[order_id] = working
        await ctx.emit(event)
    elif schedule.strategy is not Strategy.IMMEDIATE:
        await _hold(ctx, order, schedule, now, replayed)
    else:
        # One event for "accepted and sent": its previous_status (pending) says it was accepted.
        submitted, submitted_event = transition(order, OrderStatus.SUBMITTED)
        submitted_event.details.update(_decided(schedule))
        submitted_event.details["execution_strategy"] = schedule.strategy.value
        ctx.orders[order_id] = submitted
        if ctx.guard is not None:
            ctx.guard.note_accepted(submitted)
        await ctx.emit(submitted_event)
        await ctx.executor.submit(submitted, check_label_first=replayed)
    # Children go through the same topic as the facts about this order will, so they exist
    # before any fact reaches them.
    for child, child_links in planned:
        await ctx.publish_trigger(
            OrderTrigger(
                order_id=child.key,
                kind=TriggerKind.CREATE,
                reason=f"linked to {order_id} ({child_links['type']})",
                details={"request": child.model_dump(mode="json"), "links": child_links},
            )
        )


def _enrol(ctx: IntakeContext, request: OrderRequest, now: int) -> OrderRequest | Rejection:
    """The request with its experiment variant applied (:mod:`oms.orders.experiments`)."""
    if ctx.experiments is None:
        return request
    mark = None
    if ctx.mark is not None and request.instrument_name is not None:
        mark = ctx.mark(request.instrument_name)
    enrolled = ctx.experiments.enrol(request, mark=mark, now=now)
    if isinstance(enrolled, OrderRequest) and enrolled is not request:
        ctx.count("experiment_enrolled")
    return enrolled


def _with_touch(ctx: IntakeContext, request: OrderRequest) -> OrderRequest:
    """A limit order the execution statistics read (post-only, or an algorithm's child) with
    the touch at placement in its metadata; on a limit order the keys are the OMS's word
    only (keys a client sent are dropped). Other limit orders carry none: every write of an
    order serialises its metadata again, and nothing would read them."""
    if request.order_type is not OrderType.LIMIT or request.instrument_name is None:
        return request
    metadata = {k: v for k, v in request.metadata.items() if k not in TOUCH_KEYS}
    read = request.post_only or twap.PARENT_KEY in request.metadata
    tick = ctx.touch(request.instrument_name) if ctx.touch is not None and read else None
    if tick is not None:
        spec = ctx.instrument(request.instrument_name)
        metadata.update(
            touch_metadata(
                tick.best_bid_price,
                tick.best_ask_price,
                tick.best_bid_amount,
                tick.best_ask_amount,
                tick.timestamp,
                getattr(spec, "tick_size", None),
            )
        )
    if metadata == request.metadata:
        return request
    return request.model_copy(update={"metadata": metadata})


def _decide(
    ctx: IntakeContext, request: OrderRequest, order: OrderRecord, now: int, *, linked: bool
) -> Schedule | Rejection:
    """Every check of a new order, then how it executes: the instrument and account, its
    typed parameters (parsed from ``metadata`` here, once), its algorithm against the
    instrument, pre-trade risk, then its timing and strategy."""
    rejection = venue_refusal(ctx.venues, request)
    if rejection is not None:
        return rejection
    spec = spec_at(ctx.venues, ctx.instrument, request.venue, request.instrument_name)
    rejection = validate_submit(request, spec, ctx.account_known(request.account_id))
    if rejection is not None:
        return rejection
    strategies = ctx.strategies
    params = parse_params(
        request.metadata, strategies.params_model if strategies is not None else None
    )
    if isinstance(params, Rejection):
        return params
    if isinstance(params.algo, SorParams):
        rejection = routed_venues_refusal(ctx.venues, ctx.instrument, request, params.algo.venues)
        if rejection is not None:
            return rejection
    strategy = None
    if strategies is not None and params.algo is not None:
        loaded = strategies.current(str(request.metadata[ALGO_KEY]))
        strategy = loaded.strategy if loaded is not None else None
    rejection = review.check_submit(request, spec, params, strategy)
    if rejection is None and ctx.guard is not None:
        rejection = ctx.guard.check_submit(order, at_release=False)
    if rejection is not None:
        return rejection
    # Above the configured size an immediate order is sliced (TWAP) rather than sent; a linked
    # order keeps the size its group was planned with.
    slicing = None
    if ctx.guard is not None and not linked:
        slicing = AutoSlicing.from_settings(ctx.guard.settings.risk)
    return plan_schedule(
        request,
        now_ms=now,
        settings=ctx.queue_settings,
        instrument=ctx.instrument,
        algo=params.algo,
        slicing=slicing,
    )


def _pin_strategy(
    ctx: IntakeContext, order: OrderRecord, request: OrderRequest, schedule: Schedule
) -> OrderRecord:
    """An order running a strategy records the version it starts with: it keeps running it
    while in flight, whatever is loaded later (never the client's word for it)."""
    name = request.metadata.get(ALGO_KEY)
    if name is None and schedule.strategy is Strategy.SLICED:
        name = TWAP  # sliced by the OMS above the threshold
    if ctx.strategies is None or not isinstance(name, str):
        return order
    loaded = ctx.strategies.current(name)
    if loaded is None:
        return order
    return order.model_copy(
        update={"metadata": {**order.metadata, ALGO_VERSION_KEY: loaded.version}}
    )


def _decided(schedule: Schedule) -> dict[str, Any]:
    """The strategy and its reason, for the order's first event."""
    return {"strategy": schedule.strategy.value, "execution_reason": schedule.reason}


async def _hold_for_parent(ctx: IntakeContext, order: OrderRecord, schedule: Schedule) -> None:
    """An oto/bracket child: waits (outside the trigger engine) until its parent fills."""
    order = order.model_copy(
        update={
            "conditions": schedule.normalized_conditions(),
            "release_at": schedule.release_at,
            "expire_at": schedule.expire_at,
        }
    )
    waiting, event = transition(order, OrderStatus.WAITING)
    assert order.links is not None
    event.details.update({"strategy": "linked", "parent": order.links.get("parent")})
    ctx.count("waiting_for_parent")
    ctx.orders[order.order_id] = waiting
    await ctx.emit(event)


async def _reject(ctx: IntakeContext, order: OrderRecord, rejection: Rejection) -> None:
    ctx.count("rejected")
    rejected = order.model_copy(
        update={
            "status": OrderStatus.REJECTED,
            "reason_code": rejection.reason_code,
            "reason_message": rejection.message,
        }
    )
    ctx.orders[order.order_id] = rejected
    await ctx.emit(
        make_event(
            rejected,
            OrderEventType.REJECTED,
            reason_code=rejection.reason_code,
            message=rejection.message,
        )
    )
    # A child refused here never reaches the exchange, so no report would ever tell its
    # parent: without this one a routed parent would wait for it forever, and a TWAP parent
    # would never see all of its slices end.
    child_news = twap.child_update(order, rejected, force=True)
    if child_news is not None and ctx.publish_report is not None:
        await ctx.publish_report(child_news)


async def _hold(
    ctx: IntakeContext, order: OrderRecord, schedule: Schedule, now: int, replayed: bool
) -> None:
    """Queue the order, or hold it for its time or conditions. A replayed request (a previous
    owner may have queued and even sent it before its table write was lost) is queued as
    uncertain: looked up by label before it is sent."""
    order = order.model_copy(
        update={
            "conditions": schedule.normalized_conditions(),
            "release_at": schedule.release_at,
            "expire_at": schedule.expire_at,
        }
    )
    details = _decided(schedule)
    if not schedule.held:
        if ctx.held.queues.depth() >= ctx.queue_settings.max_queue_size:
            ctx.held.queues.rejected_total += 1
            await _reject(
                ctx,
                order,
                Rejection(
                    ReasonCode.QUEUE_FULL,
                    f"the priority queues hold {ctx.queue_settings.max_queue_size} orders "
                    "(max_queue_size); try again later",
                ),
            )
            return
        queued, event = transition(order, OrderStatus.QUEUED)
        queued.queued_at = now
        details["priority"] = ctx.held.queues.effective_priority(queued).value
        event.details.update(details)
        ctx.count("queued")
        ctx.orders[order.order_id] = queued
        if ctx.guard is not None:
            ctx.guard.note_accepted(queued)
        await ctx.emit(event)
        ctx.held.enqueue(queued, uncertain=replayed)
        return
    waiting, event = transition(order, OrderStatus.WAITING)
    details.update(
        {
            "release_at": schedule.release_at,
            "expire_at": schedule.expire_at,
            "condition_match": order.condition_match,
        }
    )
    event.details.update(details)
    ctx.count("waiting")
    ctx.orders[order.order_id] = waiting
    if ctx.guard is not None:
        ctx.guard.note_accepted(waiting)
    await ctx.emit(event)
    fired = ctx.held.hold(waiting, now)
    if fired is not None:
        await ctx.on_fired([fired])


def _record_from_request(request: OrderRequest) -> OrderRecord:
    assert request.instrument_name and request.direction and request.amount is not None
    return OrderRecord(
        condition_match=request.condition_match,
        order_id=request.key,
        request_id=request.request_id,
        account_id=request.account_id,
        venue=request.venue,
        instrument_name=request.instrument_name,
        direction=request.direction,
        order_type=request.order_type,
        amount=request.amount,
        price=request.price,
        trigger_price=request.trigger_price,
        time_in_force=request.time_in_force,
        post_only=request.post_only,
        reduce_only=request.reduce_only,
        execute_immediately=request.execute_immediately,
        priority=request.priority,
        conditions=request.conditions,
        metadata=request.metadata,
        status=OrderStatus.PENDING,
        created_at=request.created_at,
        version=1,
    )


def _purged_duplicate_event(order_id: str, ended: Finished, request: OrderRequest) -> OrderEvent:
    """A duplicate of a request whose order ended and left the table (its marker knows)."""
    return OrderEvent(
        # Each duplicate delivery is its own event, as for an order still in the table.
        event_id=f"{order_id}:duplicate:{request.request_id}:{request.created_at}",
        event_type=OrderEventType.DUPLICATE,
        order_id=order_id,
        account_id=request.account_id,
        request_id=request.request_id,
        instrument_name=request.instrument_name,
        status=ended.status,
        reason_code=ReasonCode.DUPLICATE_REQUEST,
        message=f"request {request.request_id} was already received (its order ended "
        f"{ended.status.value}); not executed again",
        details={"ended_at": ended.ended_at, "purged": True},
    )


def _duplicate_event(order: OrderRecord, request: OrderRequest) -> OrderEvent:
    event = make_event(
        order,
        OrderEventType.DUPLICATE,
        reason_code=ReasonCode.DUPLICATE_REQUEST,
        message=f"request {request.request_id} was already received; not executed again",
        request_id=request.request_id,
        with_snapshot=False,
    )
    # Each duplicate delivery is its own event (acknowledged once per delivery).
    event.event_id = f"{order.order_id}:duplicate:{request.request_id}:{request.created_at}"
    return event


async def _modify(
    ctx: IntakeContext, request: OrderRequest, replayed: bool, *, quiet: bool = False
) -> None:
    order_id = request.key
    order: OrderRecord | None = ctx.orders.get(order_id)
    rejection: Rejection | None = None
    if order is None:
        rejection = _not_in_table(ctx, order_id, request)
    elif order.account_id != request.account_id:
        rejection = Rejection(ReasonCode.NOT_OWNER, f"order {order_id} belongs to another account")
    elif request.request_id in order.seen_request_ids:
        if not quiet:
            ctx.count("duplicates")
            await ctx.emit(_duplicate_event(order, request))
        return
    elif order.status.is_terminal:
        rejection = Rejection(
            ReasonCode.ORDER_NOT_OPEN, f"order {order_id} is {order.status.value}"
        )
    elif request.command is CommandType.AMEND:
        rejection = review.check_amend_status(order) or _check_amend(ctx, order, request)
    elif request.command is CommandType.RETRY:
        rejection = review.check_retry(order)
    if rejection is None and order is not None and ctx.guard is not None:
        rejection = ctx.guard.check_command(order, request)
    if rejection is not None:
        ctx.count("commands_rejected")
        await ctx.emit(_command_rejected(order_id, request, rejection, order))
        return
    assert order is not None
    seen = [*order.seen_request_ids, request.request_id][-SEEN_REQUESTS_KEPT:]
    order = order.model_copy(update={"seen_request_ids": seen})
    if order.status in _HELD:
        await _modify_held(ctx, order, request)
        return
    if request.command is CommandType.CANCEL and works_through_children(order.metadata):
        # The parent stops here; the worker's timer cancels its live children.
        order, event = review.parent_cancelled(order, request)
        ctx.orders[order_id] = order
        await ctx.emit(event)
    elif request.command is CommandType.CANCEL:
        reasoned = review.with_cancel_reason(order, request)
        ctx.orders[order_id] = _cancel_pending(reasoned, request)
        if reasoned is not order and ctx.make_durable is not None:
            # The OMS's own reason (auto-cancel, partial fill...) must outlive a crash between
            # the cancel and its report: a successor would record the exchange's cancel
            # before replaying this request, without the reason (seen in the chaos suite).
            await ctx.make_durable()
        await ctx.executor.cancel(reasoned, request.request_id)
    elif request.command is CommandType.RETRY:
        order, event = review.resubmission(order)
        ctx.orders[order_id] = order
        await ctx.emit(event)
        await ctx.executor.submit(order, check_label_first=True)
    else:
        ctx.orders[order_id] = _amend_pending(order, request)
        await ctx.executor.amend(order, request)


def _cancel_pending(order: OrderRecord, request: OrderRequest) -> OrderRecord:
    """The order with its cancel recorded as on its way to the exchange: should this worker
    die before the exchange answers, the next owner's sweep sends it again
    (:mod:`oms.streams.sweep`); a replay of the request would only be a duplicate."""
    return order.model_copy(update={"cancel_request_id": request.request_id})


def _amend_pending(order: OrderRecord, request: OrderRequest) -> OrderRecord:
    """The order with its edit recorded as on its way, for the same reason as a cancel."""
    pending = PendingAmend(
        request_id=request.request_id, amount=request.amount, price=request.price
    )
    return order.model_copy(update={"amend_pending": pending})


def _not_in_table(ctx: IntakeContext, order_id: str, request: OrderRequest) -> Rejection:
    """Why a cancel or amend of an order not in the table is refused: it ended and left
    the table (its marker says how), or it is not known."""
    ended = ctx.retention.finished.get(order_id) if ctx.retention is not None else None
    if ended is None:
        return Rejection(ReasonCode.UNKNOWN_ORDER, f"order {order_id} is not known")
    if ended.account_id != request.account_id:
        return Rejection(ReasonCode.NOT_OWNER, f"order {order_id} belongs to another account")
    ctx.count("commands_after_purge")
    return Rejection(ReasonCode.ORDER_NOT_OPEN, f"order {order_id} is {ended.status.value} (ended)")


async def _modify_held(ctx: IntakeContext, order: OrderRecord, request: OrderRequest) -> None:
    """Cancel or amend an order the OMS still holds: in the table, unless it may have left."""
    if request.command is CommandType.AMEND:
        if order.status is OrderStatus.QUEUED and order.order_id not in ctx.held.queues:
            # Dispatched already: the edit goes to the exchange after the submit.
            ctx.orders[order.order_id] = _amend_pending(order, request)
            await ctx.executor.amend(order, request)
            return
        await amend_in_table(
            ctx, order, amount=request.amount, price=request.price, request_id=request.request_id
        )
        return
    withdrawal = ctx.held.withdraw(order)
    if withdrawal is Withdrawal.SAFE:
        await cancel_in_table(
            ctx,
            order,
            ctx.publish_trigger,
            message="cancelled before it was sent",
            request_id=request.request_id,
        )
        return
    ctx.orders[order.order_id] = _cancel_pending(order, request)
    if withdrawal is Withdrawal.UNCERTAIN:
        await ctx.executor.cancel_held(order, request.request_id)
    else:
        await ctx.executor.cancel(order, request.request_id)


def _check_amend(ctx: IntakeContext, order: OrderRecord, request: OrderRequest) -> Rejection | None:
    if request.amount is None and request.price is None:
        return Rejection(ReasonCode.SCHEMA_INVALID, "amend needs a new amount and/or price")
    spec = spec_at(ctx.venues, ctx.instrument, order.venue, order.instrument_name)
    probe = OrderRequest(
        request_id=request.request_id,
        account_id=order.account_id,
        instrument_name=order.instrument_name,
        amount=request.amount if request.amount is not None else order.amount,
        direction=order.direction,
        order_type=order.order_type,
        price=request.price if request.price is not None else order.price,
    )
    rejection = validate_submit(probe, spec, account_known=True)
    if rejection is not None:
        return rejection
    if probe.amount is not None and probe.amount < order.filled_amount:
        return Rejection(
            ReasonCode.INVALID_AMOUNT,
            f"amount {probe.amount} is below the filled amount {order.filled_amount}",
        )
    return None


def _command_rejected(
    order_id: str, request: OrderRequest, rejection: Rejection, order: OrderRecord | None
) -> OrderEvent:
    return OrderEvent(
        event_id=f"{order_id}:command_rejected:{request.request_id}",
        event_type=OrderEventType.COMMAND_REJECTED,
        order_id=order_id,
        account_id=request.account_id,
        request_id=request.request_id,
        instrument_name=order.instrument_name if order else None,
        status=order.status if order else None,
        reason_code=rejection.reason_code,
        message=rejection.message,
        details={"command": request.command.value},
    )
