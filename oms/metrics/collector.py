"""OrderMetricsCollector: order counts, success rate and latencies, plus per-stage latency.

Fed by the worker with every order event it emits and every exchange command its executor
completes. Exported at ``/metrics`` (Prometheus text format, prometheus-client) and as a
JSON summary (``snapshot``) for ``/stats``, ``oms stats`` and the ClickHouse ``metrics``
table.

Stages of an order (seconds between two milestones of the same order):

* ``intake``: request created -> accepted by intake (submitted, queued, waiting or rejected);
* ``queued``: queued/waiting -> sent (only for held orders);
* ``sent``: one exchange RPC (submit, cancel, amend), request to reply;
* ``acknowledged``: sent -> first exchange answer (open, filled, rejected, ...);
* ``filled``: acknowledged -> fully filled;
* ``end_to_end``: request created -> first exchange answer (the processing time).

Success rate is ``succeeded / (succeeded + failed)`` over orders that reached an outcome,
each order counted once. Every average is a sum over exactly the observations it counts (a
running sum divided by the count of processed orders only is wrong as soon as failures
interleave).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from oms.schemas import OrderEvent, OrderEventType

STAGES = ("intake", "queued", "sent", "acknowledged", "filled", "end_to_end")
CONTENT_TYPE = CONTENT_TYPE_LATEST

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_HELD = frozenset({OrderEventType.QUEUED, OrderEventType.WAITING})
_INTAKE_OUTCOMES = frozenset({OrderEventType.SUBMITTED, OrderEventType.REJECTED, *_HELD})
_EXCHANGE_ANSWERS = frozenset(
    {
        OrderEventType.OPEN,
        OrderEventType.PARTIALLY_FILLED,
        OrderEventType.FILLED,
        OrderEventType.CANCELLED,
        OrderEventType.EXPIRED,
        OrderEventType.REJECTED,
        OrderEventType.NEEDS_REVIEW,
    }
)
_FAILED = frozenset({OrderEventType.REJECTED, OrderEventType.NEEDS_REVIEW})
_TERMINAL = frozenset(
    {
        OrderEventType.FILLED,
        OrderEventType.CANCELLED,
        OrderEventType.EXPIRED,
        OrderEventType.REJECTED,
    }
)
# Samples kept per stage for percentiles in the JSON summary (Prometheus has the histogram).
_RESERVOIR = 10_000
# Orders followed at once; the oldest milestones are dropped beyond it (bounded memory).
_MAX_TRACKED = 200_000


class OrderMetricsCollector:
    """Counters, gauges and latency distributions of one worker."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.registry = CollectorRegistry()
        r = self.registry
        self.processed = Counter(
            "oms_orders_processed", "Orders that reached an outcome", registry=r
        )
        self.succeeded = Counter("oms_orders_succeeded", "Orders the exchange accepted", registry=r)
        self.failed = Counter(
            "oms_orders_failed", "Orders rejected or parked for review", ["reason"], registry=r
        )
        self.success_rate = Gauge(
            "oms_order_success_rate", "succeeded / (succeeded + failed)", registry=r
        )
        self.events = Counter("oms_order_events", "Order events emitted", ["type"], registry=r)
        self.retries = Counter("oms_retries", "Exchange commands sent again", registry=r)
        self.commands = Counter(
            "oms_exchange_commands", "Exchange commands by outcome", ["command", "ok"], registry=r
        )
        self.queue_length = Gauge(
            "oms_queue_length", "Orders held or in flight in this worker", registry=r
        )
        # What the counter and the gauge were last set to (prometheus_client keeps its
        # values private).
        self._retries_total = 0
        self._queue_length = 0
        self.queue_depth = Gauge(
            "oms_queue_depth", "Queued orders per priority", ["priority"], registry=r
        )
        self.queue_oldest = Gauge(
            "oms_queue_oldest_age_seconds",
            "Age of the oldest queued order per priority",
            ["priority"],
            registry=r,
        )
        self.waiting = Gauge(
            "oms_orders_waiting", "Delayed and conditional orders held", registry=r
        )
        self.dequeued = Gauge(
            "oms_queue_dequeued_total", "Orders taken off the queues (this worker)", registry=r
        )
        self.dequeue_rate = Gauge(
            "oms_queue_dequeue_rate", "Orders taken off the queues per second (1 min)", registry=r
        )
        self.queue_rejected = Gauge(
            "oms_queue_rejected_total", "Requests refused with queue_full", registry=r
        )
        self.notifications = Counter(
            "oms_notifications", "Notifications by outcome", ["ok"], registry=r
        )
        self.latency = Histogram(
            "oms_stage_latency_seconds",
            "Latency per order stage",
            ["stage"],
            buckets=_BUCKETS,
            registry=r,
        )
        self._samples: dict[str, deque[float]] = {s: deque(maxlen=_RESERVOIR) for s in STAGES}
        self._sums: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._counts: dict[str, int] = dict.fromkeys(STAGES, 0)
        self._created: dict[str, float] = {}
        self._sent: dict[str, float] = {}
        self._held: dict[str, float] = {}
        self._acked: dict[str, float] = {}
        # Orders that reached their outcome (insertion-ordered set, bounded): each order is
        # counted once, whatever news about it comes later.
        self._outcomes: dict[str, None] = {}
        self._n_succeeded = 0
        self._n_failed = 0
        self._n_notified = [0, 0]  # failed, ok

    # -- inputs ------------------------------------------------------------------------------

    def observe_event(self, event: OrderEvent) -> None:
        """Account for one emitted order event (re-announcements are ignored)."""
        if event.details.get("reannounced"):
            return
        kind = event.event_type
        self.events.labels(kind.value).inc()
        oid = event.order_id
        at = event.timestamp / 1000
        if kind in _INTAKE_OUTCOMES and oid not in self._created and oid not in self._outcomes:
            created = (event.request_created_at or event.timestamp) / 1000
            self._created[oid] = created
            self._stage("intake", at - created)
        if kind in _HELD:
            self._held[oid] = at
        elif kind is OrderEventType.SUBMITTED:
            held = self._held.pop(oid, None)
            if held is not None:
                self._stage("queued", at - held)
            self._sent[oid] = at
        if kind in _EXCHANGE_ANSWERS and oid not in self._outcomes:
            self._outcome(event, at)
        if kind is OrderEventType.FILLED:
            acked = self._acked.get(oid)
            if acked is not None:
                self._stage("filled", at - acked)
        if kind in _TERMINAL:
            for memo in (self._created, self._sent, self._held, self._acked):
                memo.pop(oid, None)
        self._bound()

    def observe_command(self, command: str, seconds: float, ok: bool) -> None:
        """One exchange RPC completed (the ``sent`` stage)."""
        self.commands.labels(command, str(ok).lower()).inc()
        self._stage("sent", seconds)

    def set_retries(self, total: int) -> None:
        """The executor's retry counter (monotonic)."""
        if total > self._retries_total:
            self.retries.inc(total - self._retries_total)
            self._retries_total = total

    def set_queue_length(self, value: int) -> None:
        self._queue_length = value
        self.queue_length.set(value)

    def set_queue_statistics(self, stats: dict[str, Any], inflight: int) -> None:
        """The priority queues' statistics (``get_queue_statistics``) as gauges; the
        queue length is everything held or in flight."""
        for priority, depth in stats["depth"].items():
            self.queue_depth.labels(priority).set(depth)
        for priority, age in stats["oldest_age_ms"].items():
            self.queue_oldest.labels(priority).set((age or 0) / 1000)
        self.waiting.set(stats["waiting"])
        self.dequeued.set(stats["dequeued_total"])
        self.dequeue_rate.set(stats["dequeue_rate_per_s"])
        self.queue_rejected.set(stats["rejected_total"])
        self.set_queue_length(stats["total_depth"] + stats["waiting"] + inflight)

    def record_notification(self, ok: bool) -> None:
        """For the notification service: one delivery attempt's outcome."""
        self.notifications.labels(str(ok).lower()).inc()
        self._n_notified[int(ok)] += 1

    # -- outputs -----------------------------------------------------------------------------

    def prometheus(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, Any]:
        """A JSON summary: counts, rates, averages and percentiles per stage (ms)."""
        done = self._n_succeeded + self._n_failed
        notified = sum(self._n_notified)
        stages: dict[str, Any] = {}
        for stage in STAGES:
            count = self._counts[stage]
            samples = sorted(self._samples[stage])
            stages[stage] = {
                "count": count,
                "avg_ms": round(self._sums[stage] / count * 1000, 3) if count else None,
                "p50_ms": _pct(samples, 0.50),
                "p95_ms": _pct(samples, 0.95),
                "p99_ms": _pct(samples, 0.99),
            }
        return {
            "orders_processed": done,
            "orders_succeeded": self._n_succeeded,
            "orders_failed": self._n_failed,
            "success_rate": round(self._n_succeeded / done, 6) if done else None,
            "average_processing_ms": stages["end_to_end"]["avg_ms"],
            "queue_length": self._queue_length,
            "retry_count": self._retries_total,
            "notification_success_rate": (
                round(self._n_notified[1] / notified, 6) if notified else None
            ),
            "stages": stages,
        }

    def flat(self) -> dict[str, float]:
        """The snapshot as flat ``name -> value`` (``stage.<name>.<stat>`` for stages),
        values that are not known yet left out: the shape of a ClickHouse sample."""
        out: dict[str, float] = {}
        for name, value in self.snapshot().items():
            if name == "stages":
                for stage, row in value.items():
                    for stat, number in row.items():
                        if number is not None:
                            out[f"stage.{stage}.{stat}"] = float(number)
            elif value is not None:
                out[name] = float(value)
        return out

    # -- internals ---------------------------------------------------------------------------

    def _outcome(self, event: OrderEvent, at: float) -> None:
        oid = event.order_id
        self._acked[oid] = at
        self._outcomes[oid] = None
        sent = self._sent.get(oid)
        if sent is not None:
            self._stage("acknowledged", at - sent)
        created = self._created.get(oid) or (
            event.request_created_at / 1000 if event.request_created_at else None
        )
        if created is not None:
            self._stage("end_to_end", at - created)
        self.processed.inc()
        if event.event_type in _FAILED:
            self._n_failed += 1
            reason = event.reason_code.value if event.reason_code else "unknown"
            self.failed.labels(reason).inc()
        else:
            self._n_succeeded += 1
            self.succeeded.inc()
        self.success_rate.set(self._n_succeeded / (self._n_succeeded + self._n_failed))

    def _stage(self, stage: str, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.latency.labels(stage).observe(seconds)
        self._samples[stage].append(seconds)
        self._sums[stage] += seconds
        self._counts[stage] += 1

    def _bound(self) -> None:
        for memo in (self._created, self._sent, self._held, self._acked, self._outcomes):
            while len(memo) > _MAX_TRACKED:
                del memo[next(iter(memo))]


def _pct(sorted_samples: list[float], q: float) -> float | None:
    if not sorted_samples:
        return None
    index = min(len(sorted_samples) - 1, int(q * len(sorted_samples)))
    return round(sorted_samples[index] * 1000, 3)
