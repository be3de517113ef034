"""A merge broken by a storage fault (the ``disk-error`` chaos scenario found it): detected, then
repaired by reopening the embedded engine, with every row still there.

Under a disk that fills mid-merge, chDB 4.4 can activate a merged part whose marks file is
empty: every read of the table then fails with CORRUPTED_DATA while inserts go on. Here the
same damage is made by hand (the merged part's marks file emptied) so the test does not need
root to fill a tmpfs; ``oms chaos run --scenario disk-error`` makes it for real.
The rows come back only while the parts the merge replaced are still on disk: chDB removes
them ~30-40 s after the merge by default (old_parts_lifetime 0), too slow to wait for here,
so the test checks that migration 6 keeps them (``old_parts_lifetime``) instead.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from oms.settings import Settings
from oms.sinks.clickhouse.integrity import broken_tables
from oms.sinks.clickhouse.migrations import OLD_PARTS_LIFETIME_S
from oms.sinks.errors import QueryError
from oms.sinks.query import run_query
from oms.sinks.service import SinkService

from .conftest import make_settings

COLUMNS = ["worker", "name", "timestamp", "value"]


def merged_part_with_empty_marks(client: Client, batches: int = 3, rows: int = 100) -> None:
    """``batches`` inserts into ``metrics`` merged into one part, whose marks are then lost."""
    for b in range(batches):
        data = [["w", f"m{b}-{i}", datetime.now(UTC), float(i)] for i in range(rows)]
        client.insert("metrics", data, column_names=COLUMNS)
    client.command("OPTIMIZE TABLE metrics FINAL")
    [(path,)] = client.query(
        "SELECT path FROM system.parts WHERE table = 'metrics' AND active"
    ).result_rows
    marks = [p for p in Path(path).iterdir() if ".mrk" in p.name or ".cmrk" in p.name]
    assert marks, list(Path(path).iterdir())
    marks[0].write_bytes(b"")


@pytest.fixture
def sink_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


async def test_sink_detects_a_broken_merge_and_reopening_brings_every_row_back(
    sink_settings: Settings,
) -> None:
    service = SinkService(sink_settings)
    assert service._lock is not None
    service._lock.acquire(role="sink")
    try:
        await service._open_clickhouse(migrate=True)
        assert service._writer is not None
        ddl = service._writer.command(
            "SELECT create_table_query FROM system.tables WHERE name = 'metrics'"
        )
        assert f"old_parts_lifetime = {OLD_PARTS_LIFETIME_S}" in str(ddl)
        await asyncio.to_thread(merged_part_with_empty_marks, service._writer)
        # The damage is real: reads through the sink's endpoint fail, CHECK TABLE names it.
        with pytest.raises(QueryError, match="marks"):
            await run_query(sink_settings, "SELECT count() FROM metrics FINAL")
        assert set(await asyncio.to_thread(broken_tables, service._writer)) == {"metrics"}

        still_broken = await service.verify_storage()

        assert still_broken == {}
        assert service.stats.storage_checks == 1 and service.stats.storage_repairs == 1
        assert service.stats.broken_parts_detached == 1
        # Every row is back (from the parts the merge had replaced), through the endpoint.
        result = await run_query(sink_settings, "SELECT count(), uniqExact(name) FROM metrics")
        assert result.rows == [[300, 300]]
        # And the repaired engine takes inserts again.
        assert service._ch is not None
        await service._ch.insert(
            "metrics", [["w", "after", datetime.now(UTC), 1.0]], column_names=COLUMNS
        )
        result = await run_query(sink_settings, "SELECT count() FROM metrics FINAL")
        assert result.rows == [[301]]
    finally:
        await service._close_clickhouse()
        service._lock.release()


async def test_storage_check_passes_on_healthy_tables(sink_settings: Settings) -> None:
    service = SinkService(sink_settings)
    assert service._lock is not None
    service._lock.acquire(role="sink")
    try:
        await service._open_clickhouse(migrate=True)
        assert service._writer is not None
        service._writer.insert(
            "metrics", [["w", "ok", datetime.now(UTC), 1.0]], column_names=COLUMNS
        )
        assert await service.verify_storage() == {}
        assert service.stats.storage_checks == 1 and service.stats.storage_repairs == 0
    finally:
        await service._close_clickhouse()
        service._lock.release()
