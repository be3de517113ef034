"""Mapping of topic records to table rows (column order matches ``COLUMNS``)."""

from __future__ import annotations

from typing import Any

import orjson

from oms.schemas import (
    DEFAULT_VENUE,
    DeadLetter,
    ExecutionReport,
    MarketTick,
    MetricsSample,
    NotificationRecord,
    OrderEvent,
    OrderRecord,
    PositionRecord,
)

COLUMNS: dict[str, list[str]] = {
    "orders": [
        "order_id", "version", "request_id", "account_id", "instrument_name", "direction",
        "order_type", "amount", "price", "trigger_price", "time_in_force", "post_only",
        "reduce_only", "execute_immediately", "priority", "conditions", "metadata", "status",
        "exchange_order_id", "filled_amount", "average_price", "fee", "reason_code",
        "reason_message", "created_at", "submitted_at", "updated_at", "exchange_updated_at",
        "trade_ids", "last_event_id", "venue",
    ],
    "order_events": [
        "event_id", "event_type", "order_id", "account_id", "request_id", "instrument_name",
        "status", "previous_status", "reason_code", "message", "direction", "amount", "price",
        "filled_amount", "average_price", "exchange_order_id", "version", "timestamp",
        "request_created_at", "details", "kafka_partition", "kafka_offset", "venue",
    ],
    "executions": [
        "order_id", "trade_id", "account_id", "instrument_name", "direction", "amount", "price",
        "fee", "fee_currency", "liquidity", "timestamp", "exchange_order_id", "report_id",
        "source", "received_at", "venue",
    ],
    "market_ticks": [
        "instrument_name", "bucket", "timestamp", "last_price", "mark_price", "index_price",
        "best_bid_price", "best_bid_amount", "best_ask_price", "best_ask_amount",
        "open_interest", "state", "received_at",
    ],
    "dead_letters": [
        "kafka_partition", "kafka_offset", "source_topic", "source_partition", "source_offset",
        "key", "reason_code", "error", "payload", "payload_size", "truncated", "received_at",
    ],
    "position_changes": [
        "record_id", "account_id", "instrument_name", "record_type", "size", "size_before",
        "average_price", "average_price_before", "realized_pnl", "unrealized_pnl", "fee",
        "order_id", "trade_id", "direction", "trade_amount", "trade_price", "actor",
        "timestamp", "kind", "realized_pnl_change", "fees_total", "version", "mark_price",
        "reason_code", "message", "needs_review", "exchange_size", "exchange_average_price",
        "fills_total", "turnover_total", "trade_notional", "venue",
    ],
    "notifications": [
        "notification_id", "channel", "attempt", "account_id", "notification_type",
        "priority", "title", "content", "status", "error_message", "order_id", "created_at",
        "sent_at", "kafka_offset", "severity", "reason_code", "event_count", "group_key",
        "alert_id",
    ],
    "metrics": ["worker", "name", "timestamp", "value"],
}  # fmt: skip

Row = list[Any]


def ts(ms: int) -> int:
    """A ``DateTime64(3)`` value: milliseconds since the epoch are its ticks already.

    clickhouse-connect writes integers to DateTime64 columns unchanged; a datetime would be
    built here and taken apart again there, for every value of every row (hot path)."""
    return int(ms)


def ts_opt(ms: int | None) -> int | None:
    return None if ms is None else int(ms)


def _val(value: Any) -> Any:
    """Enum members to their wire string; everything else unchanged."""
    return getattr(value, "value", value)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def order_row(order: OrderRecord, event_id: str) -> Row:
    """The ``orders`` row for an event's order snapshot."""
    return [
        order.order_id, order.version, order.request_id, order.account_id,
        order.instrument_name, _val(order.direction), _val(order.order_type), order.amount,
        order.price, order.trigger_price, _val(order.time_in_force), order.post_only,
        order.reduce_only, order.execute_immediately, _val(order.priority),
        _json(order.conditions), _json(order.metadata), _val(order.status),
        order.exchange_order_id, order.filled_amount, order.average_price, order.fee,
        _val(order.reason_code), order.reason_message, ts(order.created_at),
        ts_opt(order.submitted_at), ts(order.updated_at), ts(order.exchange_updated_at),
        list(order.trade_ids), event_id, order.venue,
    ]  # fmt: skip


def order_event_row(event: OrderEvent, partition: int, offset: int) -> Row:
    """The ``order_events`` row (the snapshot goes to ``orders``, not here). Its venue is
    the snapshot's: an event without one (a request refused before it became an order)
    counts at the default venue."""
    return [
        event.event_id, _val(event.event_type), event.order_id, event.account_id,
        event.request_id, event.instrument_name, _val(event.status),
        _val(event.previous_status), _val(event.reason_code), event.message,
        _val(event.direction), event.amount, event.price, event.filled_amount,
        event.average_price, event.exchange_order_id, event.version, ts(event.timestamp),
        ts_opt(event.request_created_at), _json(event.details), partition, offset,
        event.order.venue if event.order is not None else DEFAULT_VENUE,
    ]  # fmt: skip


# fmt: off
def execution_rows(report: ExecutionReport) -> list[Row]:
    """One ``executions`` row per fill in the report (none for a report without fills)."""
    return [
        [
            report.order_id, fill.trade_id, report.account_id, report.instrument_name,
            _val(report.direction), fill.amount, fill.price, fill.fee, fill.fee_currency,
            fill.liquidity, ts(fill.timestamp or report.exchange_timestamp),
            report.exchange_order_id, report.report_id, _val(report.source),
            ts(report.received_at), report.venue,
        ]
        for fill in report.fills
    ]
# fmt: on


def tick_row(tick: MarketTick, bucket_ms: int) -> Row:
    """The ``market_ticks`` row; ``bucket_ms`` is the start of its sample period."""
    return [
        tick.instrument_name, ts(bucket_ms), ts(tick.timestamp), tick.last_price,
        tick.mark_price, tick.index_price, tick.best_bid_price, tick.best_bid_amount,
        tick.best_ask_price, tick.best_ask_amount, tick.open_interest, tick.state,
        ts(tick.received_at),
    ]  # fmt: skip


def dead_letter_row(letter: DeadLetter, partition: int, offset: int) -> Row:
    """The ``dead_letters`` row, identified by its own partition and offset."""
    return [
        partition, offset, letter.source_topic, letter.source_partition, letter.source_offset,
        letter.key, _val(letter.reason_code), letter.error, letter.payload,
        letter.payload_size, letter.truncated, ts(letter.received_at),
    ]  # fmt: skip


def position_row(record: PositionRecord) -> Row:
    """The ``position_changes`` row."""
    return [
        record.record_id, record.account_id, record.instrument_name,
        _val(record.record_type), record.size, record.size_before, record.average_price,
        record.average_price_before, record.realized_pnl, record.unrealized_pnl, record.fee,
        record.order_id, record.trade_id, record.direction, record.trade_amount,
        record.trade_price, record.actor, ts(record.timestamp), record.kind,
        record.realized_pnl_change, record.fees_total, record.version, record.mark_price,
        _val(record.reason_code), record.message, record.needs_review, record.exchange_size,
        record.exchange_average_price, record.fills_total, record.turnover_total,
        record.trade_notional, record.venue,
    ]  # fmt: skip


def notification_row(record: NotificationRecord, offset: int) -> Row:
    """The ``notifications`` row; the Kafka offset versions a delivery attempt's status."""
    return [
        record.notification_id, record.channel, record.attempt, record.account_id,
        record.notification_type, record.priority, record.title, record.content,
        _val(record.status), record.error_message, record.order_id, ts(record.created_at),
        ts_opt(record.sent_at), offset, record.severity, record.reason_code,
        record.event_count, record.group_key, record.alert_id,
    ]  # fmt: skip


def metric_rows(sample: MetricsSample) -> list[Row]:
    """One ``metrics`` row per value of a worker's sample."""
    at = ts(sample.timestamp)
    return [[sample.worker, name, at, value] for name, value in sorted(sample.values.items())]
