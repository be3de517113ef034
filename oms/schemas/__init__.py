"""Pydantic v2 schemas: the contracts between every part of the pipeline."""

from oms.schemas.base import DEFAULT_VENUE, Record, now_ms
from oms.schemas.dead_letters import DeadLetter
from oms.schemas.enums import (
    LIVE_STATUSES,
    CommandType,
    Direction,
    ExchangeOrderState,
    OrderEventType,
    OrderStatus,
    OrderType,
    Priority,
    ReasonCode,
    ReportSource,
    TimeInForce,
)
from oms.schemas.execution import ExecutionReport, Fill
from oms.schemas.market import InstrumentSpec, MarketTick
from oms.schemas.metrics import MetricsSample
from oms.schemas.notifications import NotificationRecord, NotificationStatus
from oms.schemas.orders import (
    OrderEvent,
    OrderRecord,
    OrderRequest,
    PendingAmend,
    derive_order_id,
)
from oms.schemas.positions import PositionRecord, PositionRecordType, position_key
from oms.schemas.topics import Topic, topic_name

__all__ = [
    "DEFAULT_VENUE",
    "LIVE_STATUSES",
    "CommandType",
    "DeadLetter",
    "Direction",
    "ExchangeOrderState",
    "ExecutionReport",
    "Fill",
    "InstrumentSpec",
    "MarketTick",
    "MetricsSample",
    "NotificationRecord",
    "NotificationStatus",
    "OrderEvent",
    "OrderEventType",
    "OrderRecord",
    "OrderRequest",
    "OrderStatus",
    "OrderType",
    "PendingAmend",
    "PositionRecord",
    "PositionRecordType",
    "Priority",
    "ReasonCode",
    "Record",
    "ReportSource",
    "TimeInForce",
    "Topic",
    "derive_order_id",
    "now_ms",
    "position_key",
    "topic_name",
]
