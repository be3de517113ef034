"""Order metrics: collected in the worker, exported for Prometheus."""

from oms.metrics.collector import STAGES, OrderMetricsCollector

__all__ = ["STAGES", "OrderMetricsCollector"]
