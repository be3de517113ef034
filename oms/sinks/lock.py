"""Exclusive ownership of the embedded chDB data path.

chDB lets one process open a data path; a second one fails with an opaque
"Error initializing EmbeddedServer". We take an ``flock`` on a file next to the data
directory first, so a second opener learns who holds it and where its query endpoint is.
The kernel drops the lock when the holder dies (even on SIGKILL), so it never goes stale.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from pathlib import Path
from typing import Any

import orjson


class ChdbPathBusy(RuntimeError):
    """Another process holds the embedded ClickHouse data path."""

    def __init__(self, path: Path, holder: dict[str, Any] | None) -> None:
        self.path = path
        self.holder = holder or {}
        pid = self.holder.get("pid", "?")
        role = self.holder.get("role", "process")
        endpoint = self.holder.get("query_url")
        where = f", query endpoint {endpoint}" if endpoint else ""
        super().__init__(
            f"embedded ClickHouse at {path} is already open by {role} pid {pid}{where}; "
            "embedded chDB mode runs exactly one sink process per data dir: stop that one, "
            "or set OMS_CLICKHOUSE_URL to a ClickHouse server to run several sinks"
        )


# Role of a process that holds the path only for one read-only query.
SQL_ROLE = "oms sql"


class ChdbPathLock:
    """Non-blocking exclusive lock on ``<chdb path>.lock`` carrying the holder's details."""

    def __init__(self, chdb_path: Path) -> None:
        self.chdb_path = chdb_path
        self.lock_path = chdb_path.with_name(chdb_path.name + ".lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, **info: Any) -> None:
        """Take the lock or raise :class:`ChdbPathBusy` naming the current holder."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ChdbPathBusy(self.chdb_path, self.read_holder()) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, orjson.dumps({"pid": os.getpid(), **info}), 0)
        self._fd = fd

    async def acquire_waiting(
        self, *, wait_for: frozenset[str], timeout_s: float = 10.0, **info: Any
    ) -> None:
        """:meth:`acquire`, but wait up to ``timeout_s`` while the holder's role is in
        ``wait_for`` (short-lived holders such as a direct ``oms sql`` read)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.acquire(**info)
                return
            except ChdbPathBusy as busy:
                if busy.holder.get("role") not in wait_for or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)

    def update(self, **info: Any) -> None:
        """Rewrite the holder details (e.g. once the query endpoint is listening)."""
        if self._fd is None:
            raise RuntimeError("lock not held")
        current = self.read_holder() or {}
        current.update(info)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, orjson.dumps(current), 0)

    def read_holder(self) -> dict[str, Any] | None:
        """Details written by the holder, or None if unreadable."""
        try:
            data = orjson.loads(self.lock_path.read_bytes() or b"null")
        except (OSError, orjson.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
