"""Samples of a worker's order metrics, on ``oms.metrics`` (keyed by worker)."""

from __future__ import annotations

from pydantic import Field

from oms.schemas.base import Record, now_ms


class MetricsSample(Record):
    """A snapshot of one worker's metrics: flat ``name -> value`` (see
    :class:`oms.metrics.OrderMetricsCollector`), stored as one ClickHouse row per value."""

    worker: str = Field(min_length=1, max_length=128)
    timestamp: int = Field(default_factory=now_ms)
    values: dict[str, float] = Field(default_factory=dict)
