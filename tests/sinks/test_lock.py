"""The chDB path lock: who holds it, and who waits for whom."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from oms.sinks.lock import SQL_ROLE, ChdbPathBusy, ChdbPathLock


async def test_second_holder_is_told_who_has_it(tmp_path: Path) -> None:
    first = ChdbPathLock(tmp_path / "clickhouse")
    first.acquire(role="sink")
    first.update(query_url="http://127.0.0.1:1/query")
    try:
        with pytest.raises(ChdbPathBusy, match=r"already open by sink pid \d+, query endpoint"):
            await ChdbPathLock(tmp_path / "clickhouse").acquire_waiting(
                wait_for=frozenset({SQL_ROLE}), role="sink"
            )
    finally:
        first.release()
    again = ChdbPathLock(tmp_path / "clickhouse")
    again.acquire(role="sink")  # released locks are free again
    again.release()


async def test_sink_waits_for_a_one_off_reader(tmp_path: Path) -> None:
    reader = ChdbPathLock(tmp_path / "clickhouse")
    reader.acquire(role=SQL_ROLE)
    asyncio.get_running_loop().call_later(0.3, reader.release)
    started = time.monotonic()
    sink = ChdbPathLock(tmp_path / "clickhouse")
    await sink.acquire_waiting(wait_for=frozenset({SQL_ROLE}), role="sink")
    assert sink.held and time.monotonic() - started >= 0.25
    assert sink.read_holder() is not None and sink.read_holder()["role"] == "sink"  # type: ignore[index]
    sink.release()
