"""Fixtures for sink tests: a fresh embedded ClickHouse per test.

chDB keeps one engine per process and refuses a second data path while a client is open,
so every fixture here closes its clients before the next test opens another path.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from oms.settings import Settings, SinkSettings
from oms.sinks.clickhouse.client import open_client
from oms.sinks.clickhouse.migrations import apply_migrations


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(data_dir: Path, **sink: object) -> Settings:
    sink_settings = SinkSettings(query_port=free_port(), **sink)
    return Settings(data_dir=data_dir, clickhouse_url=None, sink=sink_settings)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, tick_sample_ms=1_000, batch_size=100, flush_interval_s=0.2)


@pytest.fixture
def ch(settings: Settings) -> Iterator[Client]:
    """A writable client on a migrated embedded database."""
    client = open_client(settings)
    apply_migrations(client, settings.sink)
    try:
        yield client
    finally:
        client.close()
