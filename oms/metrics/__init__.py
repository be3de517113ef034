"""Order metrics (seed section 9): collected in the worker, exported for Prometheus."""

from oms.metrics.collector import STAGES, OrderMetricsCollector

__all__ = ["STAGES", "OrderMetricsCollector"]
