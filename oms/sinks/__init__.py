"""Sinks: the ClickHouse sink service, its read-only query endpoint and query helpers."""
