"""The Python client SDK: publish order requests to Kafka and follow their events.

>>> async with OrderClient(account_id="demo") as oms:
...     order_id = await oms.submit_advanced_order(
...         instrument_name="BTC-PERPETUAL", amount=10, direction="buy", price=60000.0
...     )
...     event = await oms.wait_for_event(order_id)
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from oms.auth.signing import RequestSigner
from oms.conditions.expressions import parse_expression, parse_time_ms
from oms.kafka.reading import topic_partitions
from oms.kafka.security import KafkaConnection
from oms.schemas import (
    DEFAULT_VENUE,
    CommandType,
    OrderEvent,
    OrderEventType,
    OrderRequest,
    Priority,
    Topic,
)
from oms.schemas.contingency import Contingency
from oms.secrets import SigningKeys
from oms.settings import Settings, get_settings

# Events that settle "what happened to my request" for wait_for_event's default.
FIRST_OUTCOME_EVENTS = frozenset(
    {
        OrderEventType.OPEN,
        OrderEventType.PARTIALLY_FILLED,
        OrderEventType.FILLED,
        OrderEventType.CANCELLED,
        OrderEventType.REJECTED,
        OrderEventType.EXPIRED,
        OrderEventType.DUPLICATE,
        OrderEventType.COMMAND_REJECTED,
        OrderEventType.AMENDED,
        OrderEventType.WAITING,  # held for its time or conditions: settled for now
    }
)


_Waiter = tuple[Callable[[OrderEvent], bool], "asyncio.Future[OrderEvent]"]


def new_request_id() -> str:
    """A fresh idempotency key. Re-send a request with the *same* id to retry it safely."""
    return uuid.uuid4().hex


class OrderClient:
    """Async client of the OMS for one account."""

    def __init__(
        self,
        account_id: str = "demo",
        *,
        settings: Settings | None = None,
        follow_events: bool = True,
    ) -> None:
        self.account_id = account_id
        self.settings = settings or get_settings()
        self._follow = follow_events
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._events: dict[str, list[OrderEvent]] = defaultdict(list)
        self._waiters: dict[str, list[_Waiter]] = defaultdict(list)
        self._subscribers: list[asyncio.Queue[OrderEvent]] = []
        self._requests_topic = self.settings.topic(Topic.ORDER_REQUESTS)
        # A desk's principal may read only its accounts' own topics (the fan-out's copies):
        # as one, follow the account's events there. Anyone else follows the shared topic,
        # one hop earlier.
        self._events_topic = (
            self.settings.account_topic(account_id, "events")
            if self.settings.kafka.username in self.settings.desks
            else self.settings.topic(Topic.ORDER_EVENTS)
        )
        # Requests are signed transparently when the account has a signing key.
        self._signer = RequestSigner(SigningKeys(self.settings.resolved_secrets_file))
        self.signing_key = self._signer.key_of(account_id)

    async def __aenter__(self) -> OrderClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect to Kafka; when following events, start reading from the current end."""
        kafka = KafkaConnection.from_settings(self.settings)
        self._producer = AIOKafkaProducer(**kafka.aiokafka(linger_ms=1, acks="all"))
        await self._producer.start()
        if self._follow:
            self._consumer = AIOKafkaConsumer(
                **kafka.aiokafka(enable_auto_commit=False, group_id=None)
            )
            await self._consumer.start()
            partitions = await self._partitions(self._events_topic)
            self._consumer.assign(partitions)
            await self._consumer.seek_to_end(*partitions)
            # Resolve the end offsets now, so events of requests sent after start() are seen.
            for tp in partitions:
                await self._consumer.position(tp)
            self._reader = asyncio.create_task(self._read_events(), name="oms-client-events")

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        assert self._consumer is not None
        parts = await topic_partitions(self._consumer, topic, wait_s=5.0, poll_s=0.1)
        if parts:
            return parts
        raise RuntimeError(f"topic {topic} does not exist (is the stack running?)")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    # -- commands --------------------------------------------------------------------------

    async def submit_advanced_order(
        self,
        instrument_name: str,
        amount: float,
        direction: str,
        order_type: str = "limit",
        price: float | None = None,
        execute_immediately: bool = True,
        priority: str = Priority.NORMAL.value,
        conditions: Sequence[dict[str, Any] | str] | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        request_id: str | None = None,
        time_in_force: str = "good_til_cancelled",
        post_only: bool = False,
        reduce_only: bool = False,
        trigger_price: float | None = None,
        execute_at: int | str | None = None,
        delay: float | None = None,
        expiration: float | None = None,
        condition_match: str = "all",
        contingency: dict[str, Any] | Contingency | None = None,
        venue: str = DEFAULT_VENUE,
    ) -> str:
        """Publish a submit; returns the order id.

        The order id is derived from ``(account_id, request_id)``: re-sending with the same
        ``request_id`` is safe and never executes twice. ``execute_immediately=False`` queues
        the order by ``priority``; ``execute_at`` (ms or ISO 8601) or ``delay`` (seconds)
        holds it until then; ``conditions`` (objects or text such as
        ``"BTC-PERPETUAL.last_price >= 70000"``) until they hold; ``expiration`` (seconds)
        gives up on a waiting order. ``contingency`` links orders to this one (``oco``,
        ``oto``, ``bracket``: see :mod:`oms.schemas.contingency`). ``venue``: where it
        trades, one of the configured venues (``exchange.venues``).
        """
        if isinstance(execute_at, str):
            execute_at = parse_time_ms(execute_at)
        request = OrderRequest(
            command=CommandType.SUBMIT,
            request_id=request_id or new_request_id(),
            account_id=self.account_id,
            venue=venue,
            instrument_name=instrument_name,
            amount=amount,
            direction=direction,
            order_type=order_type,
            price=price,
            trigger_price=trigger_price,
            time_in_force=time_in_force,
            post_only=post_only,
            reduce_only=reduce_only,
            execute_immediately=execute_immediately,
            priority=priority,
            conditions=[parse_expression(c) if isinstance(c, str) else c for c in conditions or []],
            condition_match=condition_match,
            execute_at=execute_at,
            delay=delay,
            expiration=expiration,
            contingency=contingency,
            metadata=metadata or {},
        )
        await self.send(request)
        return request.key

    async def create_conditional_order(
        self,
        instrument_name: str,
        amount: float,
        direction: str,
        conditions: Sequence[dict[str, Any] | str],
        *,
        order_type: str = "limit",
        price: float | None = None,
        priority: str = Priority.NORMAL.value,
        expiration: float | None = None,
        condition_match: str = "all",
        **kwargs: Any,
    ) -> str:
        """A conditional order: held until ``conditions`` hold (all, or
        any with ``condition_match="any"``), then queued by ``priority``; returns the id."""
        return await self.submit_advanced_order(
            instrument_name,
            amount,
            direction,
            order_type=order_type,
            price=price,
            execute_immediately=False,
            priority=priority,
            conditions=conditions,
            expiration=expiration,
            condition_match=condition_match,
            **kwargs,
        )

    async def get_queue_statistics(
        self, worker_urls: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Depth and oldest age per priority and rates of the priority queues, summed over
        workers (their ``/queue`` pages; default: the worker web port of the settings on
        localhost)."""
        urls = list(worker_urls or [f"http://127.0.0.1:{self.settings.worker.web_port}"])
        return await fetch_queue_statistics(urls)

    async def cancel_order(self, order_id: str, *, request_id: str | None = None) -> str:
        """Publish a cancel for one of this account's orders; returns the request id."""
        return await self._command(CommandType.CANCEL, order_id, request_id)

    async def amend_order(
        self,
        order_id: str,
        *,
        amount: float | None = None,
        price: float | None = None,
        request_id: str | None = None,
    ) -> str:
        """Publish an amend (new amount and/or price); returns the request id."""
        return await self._command(
            CommandType.AMEND, order_id, request_id, amount=amount, price=price
        )

    async def _command(
        self, command: CommandType, order_id: str, request_id: str | None, **fields: Any
    ) -> str:
        """Publish ``command`` about one of this account's orders (``fields``: the rest of
        the request); returns the request id."""
        request = OrderRequest(
            command=command,
            request_id=request_id or new_request_id(),
            account_id=self.account_id,
            order_id=order_id,
            **fields,
        )
        await self.send(request)
        return request.request_id

    async def send(self, request: OrderRequest) -> None:
        """Publish any request, signed when the account has a signing key. Keyed by its
        order id, so an order's commands keep their order on one partition (the OMS routes
        by order id itself; the key only preserves ordering)."""
        value, headers = self.message(request)
        await self.send_raw(value, key=request.key.encode(), headers=headers)

    async def send_raw(
        self,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Publish arbitrary bytes to the request topic (for tests of bad input)."""
        assert self._producer is not None, "call start() first"
        await self._producer.send_and_wait(
            self._requests_topic, value=value, key=key, headers=headers
        )

    # -- events ----------------------------------------------------------------------------

    async def _read_events(self) -> None:
        assert self._consumer is not None
        async for message in self._consumer:
            try:
                event = OrderEvent.from_bytes(message.value)
            except Exception:
                continue
            self._events[event.order_id].append(event)
            for queue in self._subscribers:
                queue.put_nowait(event)
            for predicate, future in list(self._waiters.get(event.order_id, ())):
                if not future.done() and predicate(event):
                    future.set_result(event)

    def events_of(self, order_id: str) -> list[OrderEvent]:
        """Events seen so far for an order (since this client started)."""
        return list(self._events.get(order_id, ()))

    async def wait_for_event(
        self,
        order_id: str,
        predicate: Callable[[OrderEvent], bool] | None = None,
        timeout: float = 30.0,  # noqa: ASYNC109
    ) -> OrderEvent:
        """The first event of ``order_id`` matching ``predicate`` (default: the first outcome:
        open, filled, rejected, ...). Checks events already received first."""
        match = predicate or (lambda e: e.event_type in FIRST_OUTCOME_EVENTS)
        for event in self._events.get(order_id, ()):
            if match(event):
                return event
        future: asyncio.Future[OrderEvent] = asyncio.get_running_loop().create_future()
        entry = (match, future)
        self._waiters[order_id].append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiters[order_id].remove(entry)

    async def events(self) -> AsyncIterator[OrderEvent]:
        """Every order event from now on, as they arrive (for ``oms watch events``)."""
        queue: asyncio.Queue[OrderEvent] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    async def get_order_history(self, **filters: Any) -> list[dict[str, Any]]:
        """Orders from ClickHouse (latest state), filtered by account, instrument, status,
        since/until (ms) and limit. Defaults to this client's account."""
        from oms.sinks.queries import get_order_history

        filters.setdefault("account_id", self.account_id)
        rows: list[dict[str, Any]] = await get_order_history(self.settings, **filters)
        return rows

    # -- lifecycle: retries and the manual review flow ------------------------------------

    async def retry_order(self, order_id: str, *, request_id: str | None = None) -> str:
        """Resubmit an order parked in ``needs_review`` (looked up by label first, so it is
        never sent twice); returns the request id."""
        return await self._command(CommandType.RETRY, order_id, request_id)

    async def review_cancel(self, order_id: str, *, request_id: str | None = None) -> str:
        """Cancel an order as a reviewer (the cancelled event carries ``manual_review``)."""
        return await self._command(
            CommandType.CANCEL, order_id, request_id, metadata={"reason_code": "manual_review"}
        )

    def message(self, request: OrderRequest) -> tuple[bytes, list[tuple[str, bytes]]]:
        """The wire form of a request: its JSON value, and the headers signing those exact
        bytes with this account's signing key (fresh timestamp and nonce); no headers when
        the account has no key (trusted mode)."""
        return self._signer.message(request)

    # -- notifications -----------------------------------------------------------------------

    async def manage_notification_settings(
        self,
        account_id: str | None = None,
        notification_types: list[str] | None = None,
        channels: list[Any] | None = None,
        rules: list[dict[str, Any]] | None = None,
        **options: Any,
    ) -> Any:
        """Validate and store an account's notification settings; the notifier
        applies them at once. ``channels`` are channel configs (dicts) in fallback order, or
        the name ``"console"``; ``options`` are the other fields of
        :class:`~oms.schemas.notify_settings.NotificationSettings` (language, timezone,
        quiet_hours, silences, repeat_interval_s, large_loss_threshold, margin_call_ratio...).
        Raises :class:`~oms.notify.settings_io.NotificationSettingsError` (with a reason code)
        on bad input; nothing is stored then."""
        from oms.notify.settings_io import build_settings, publish_settings

        settings = build_settings(
            account_id or self.account_id, notification_types, channels, rules, **options
        )
        await publish_settings(self.settings, settings)
        return settings

    async def get_notification_settings(self, account_id: str | None = None) -> Any:
        """The stored settings of an account (None if it never set any)."""
        from oms.notify.settings_io import read_settings

        return await read_settings(self.settings, account_id or self.account_id)

    async def configure_notification_rules(
        self, rules: list[dict[str, Any]], account_id: str | None = None
    ) -> Any:
        """Replace the routing rules of an account, keeping its other settings."""
        from oms.notify.settings_io import build_settings, publish_settings, read_settings

        account = account_id or self.account_id
        current = await read_settings(self.settings, account)
        base = current.model_dump(mode="json", exclude={"rules", "updated_at"}) if current else {}
        base.pop("account_id", None)
        settings = build_settings(account, rules=rules, **base)
        await publish_settings(self.settings, settings)
        return settings

    async def send_emergency_alert(
        self,
        message: str,
        alert_type: str = "system_error",
        *,
        account_id: str | None = None,
        subject: str = "system:manual",
        alert_id: str | None = None,
    ) -> str:
        """Raise an emergency (system_error, large_loss, margin_call, position_mismatch): it
        goes to every configured channel of the account at once and repeats until
        acknowledged. Returns the alert id (for ``oms notify ack``)."""
        from oms.notify.settings_io import emergency_event

        event = emergency_event(
            account_id or self.account_id, alert_type, message, subject=subject, alert_id=alert_id
        )
        assert self._producer is not None, "call start() first"
        await self._producer.send_and_wait(
            self._events_topic, value=event.to_bytes(), key=event.order_id.encode()
        )
        return str(event.details["alert_id"])

    async def acknowledge_alert(self, alert_id: str, by: str = "sdk") -> None:
        """Stop an emergency alert from repeating."""
        from oms.notify.settings_io import publish_ack

        await publish_ack(self.settings, alert_id, by=by)

    # -- positions ---------------------------------------------------------------------------

    async def get_position_records(
        self,
        account_id: str | None = None,
        instrument_name: str | None = None,
        start_time: datetime | int | None = None,
        end_time: datetime | int | None = None,
        include_history: bool = True,
    ) -> list[dict[str, Any]]:
        """Position change records from ClickHouse, oldest first; without
        history only the latest record per position. Defaults to this client's account."""
        from oms.positions.queries import get_position_records

        return await get_position_records(
            self.settings, account_id or self.account_id, instrument_name, start_time,
            end_time, include_history,
        )  # fmt: skip

    async def get_current_positions(
        self, account_id: str | None = None, instrument_name: str | None = None
    ) -> list[dict[str, Any]]:
        """Current positions with mark, unrealized PnL, exposure and review flag."""
        from oms.positions.queries import get_current_positions

        return await get_current_positions(
            self.settings, account_id or self.account_id, instrument_name
        )

    async def get_position_history(
        self, instrument_name: str, account_id: str | None = None, limit: int = 1_000
    ) -> list[dict[str, Any]]:
        """Every recorded change of one position (the audit trail), oldest first."""
        from oms.positions.queries import get_position_history

        return await get_position_history(
            self.settings, account_id or self.account_id, instrument_name, limit=limit
        )

    async def calculate_position_statistics(
        self, account_id: str | None = None, days: int = 30, venue: str | None = None
    ) -> dict[str, Any]:
        """Per-day and per-venue fills, turnover, realized PnL, fees, fill ratio, submit
        latency, slippage; exposure and unrealized PnL by instrument, USD exposure by
        currency and venue; counts, and money totals per settlement currency and turnover
        unit. ``venue`` keeps one venue's figures."""
        from oms.positions.queries import calculate_position_statistics

        return await calculate_position_statistics(
            self.settings, account_id or self.account_id, days, venue
        )

    async def get_positions_by_currency(
        self, account_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Net and gross USD exposure per currency, summed over instruments and venues."""
        from oms.positions.queries import get_positions_by_currency

        return await get_positions_by_currency(self.settings, account_id or self.account_id)


async def fetch_queue_statistics(urls: Sequence[str], timeout_s: float = 5.0) -> dict[str, Any]:
    """Queue statistics of several workers, combined: depths, totals and rates add up, the
    oldest age is the oldest of all. Workers that do not answer are listed in ``unreachable``."""
    combined: dict[str, Any] = {
        "depth": {},
        "oldest_age_ms": {},
        "total_depth": 0,
        "waiting": 0,
        "enqueued_total": 0,
        "dequeued_total": 0,
        "dequeue_rate_per_s": 0.0,
        "rejected_total": 0,
        "triggered_total": 0,
        "workers": 0,
        "unreachable": [],
    }
    summed = ("total_depth", "waiting", "enqueued_total", "dequeued_total", "rejected_total")
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for url in urls:
            try:
                async with session.get(f"{url.rstrip('/')}/queue") as response:
                    response.raise_for_status()
                    stats = await response.json()
            except (aiohttp.ClientError, TimeoutError):
                combined["unreachable"].append(url)
                continue
            combined["workers"] += 1
            for name in summed:
                combined[name] += stats.get(name, 0)
            combined["triggered_total"] += stats.get("triggered_total", 0)
            combined["dequeue_rate_per_s"] += stats.get("dequeue_rate_per_s", 0.0)
            for priority, depth in stats.get("depth", {}).items():
                combined["depth"][priority] = combined["depth"].get(priority, 0) + depth
            for priority, age in stats.get("oldest_age_ms", {}).items():
                current = combined["oldest_age_ms"].get(priority)
                if age is not None and (current is None or age > current):
                    combined["oldest_age_ms"][priority] = age
                else:
                    combined["oldest_age_ms"].setdefault(priority, current)
    return combined
