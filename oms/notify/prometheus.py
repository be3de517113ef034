"""The notifier's ``/stats`` as Prometheus metrics (``/metrics``), for the compose and k8s
monitoring: notification success, delivery attempts per channel, pending work.

Names (all ``oms_notify_*``): ``notifications_total{outcome}`` (delivered / undelivered),
``attempts_total{outcome}`` (sent / failed / deduplicated),
``channel_attempts_total{channel,outcome}``, ``events_total{counter}`` (the service's own
counters: consumed, notices, suppressed...), gauges ``success_rate``, ``pending``,
``inflight``, ``active_alerts``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StatsCollector(Collector):
    def __init__(self, stats: dict[str, Any]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        delivery = self.stats.get("delivery") or {}
        notifications = CounterMetricFamily(
            "oms_notify_notifications", "Notifications by final outcome", labels=["outcome"]
        )
        for outcome, n in sorted((delivery.get("notifications") or {}).items()):
            notifications.add_metric([outcome], n)
        yield notifications
        attempts = CounterMetricFamily(
            "oms_notify_attempts", "Channel delivery attempts by outcome", labels=["outcome"]
        )
        for outcome, n in sorted((delivery.get("attempts") or {}).items()):
            attempts.add_metric([outcome], n)
        yield attempts
        per_channel = CounterMetricFamily(
            "oms_notify_channel_attempts",
            "Delivery attempts per channel and outcome",
            labels=["channel", "outcome"],
        )
        for key, n in sorted((delivery.get("by_channel") or {}).items()):
            channel, _, outcome = key.rpartition(":")
            per_channel.add_metric([channel, outcome], n)
        yield per_channel
        events = CounterMetricFamily(
            "oms_notify_events", "Notifier counters (consumed, notices...)", labels=["counter"]
        )
        for name, n in sorted((self.stats.get("counters") or {}).items()):
            events.add_metric([name], n)
        yield events
        rate = delivery.get("success_rate")
        if rate is not None:
            yield GaugeMetricFamily(
                "oms_notify_success_rate", "delivered / (delivered + undelivered)", value=rate
            )
        for name in ("pending", "inflight", "active_alerts"):
            yield GaugeMetricFamily(
                f"oms_notify_{name}", f"Notifier {name.replace('_', ' ')}", value=self.stats[name]
            )


def render(stats: dict[str, Any]) -> bytes:
    """Prometheus text exposition of a notifier ``stats()`` dict."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(stats))
    return generate_latest(registry)
