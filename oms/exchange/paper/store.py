"""The paper exchange's durable state on disk: one SQLite database and one id-reservation file.

Layout of the state directory:

- ``paper.db`` (+ ``-wal``): SQLite in WAL mode with ``synchronous=FULL``, so a committed
  transaction survives a crash of the process or of the machine. One table,
  ``state(kind, key, data)``: the latest version of every durable object as JSON (kinds in
  :mod:`oms.exchange.paper.restore`). Rows are replaced and deleted as the exchange changes,
  so the file is as bounded as the exchange's own state;
- ``ids.json``: the highest order and trade numbers the exchange may have handed out. It is
  raised in blocks (:data:`ID_BLOCK`) *before* a commit uses a number past it, written by
  rename and kept apart from the database: whatever happens to the database (a lost WAL tail,
  a corrupt page, ``--reset``), numbers start above it, so ids are never reused.

Everything here blocks, and runs on the journal's writer thread (or before the exchange
serves anything); :class:`Store` is not thread-safe and is used by one thread at a time.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog

log = structlog.get_logger("oms.paper.store")

DB_NAME = "paper.db"
IDS_NAME = "ids.json"
SCHEMA_VERSION = 1
# Numbers reserved per write of ids.json: a crash skips at most this many.
ID_BLOCK = 10_000
# Keep the WAL file from growing past this after checkpoints.
WAL_SIZE_LIMIT = 64 << 20

# A row of a batch: (kind, key, JSON-able value), the value None to delete the row.
Row = tuple[str, str, Any]
Key = tuple[str, str]

# A whole batch is one statement: SQLite unpacks the batch, a JSON array (json_each), and the
# trigger turns rows whose value is null into deletes. One statement in autocommit mode is
# one transaction and one call into SQLite, during which the writer thread does not hold the
# GIL; row by row (executemany), it would have to win the GIL back from the busy event loop
# after every row (measured: a third more time per commit under load).
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS state ("
    " kind TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL,"
    " PRIMARY KEY (kind, key)) WITHOUT ROWID",
    "CREATE TRIGGER IF NOT EXISTS state_delete AFTER INSERT ON state WHEN NEW.data = 'null'"
    " BEGIN DELETE FROM state WHERE kind = NEW.kind AND key = NEW.key; END",
)
BATCH_SQL = (
    "INSERT OR REPLACE INTO state (kind, key, data) "
    "SELECT value ->> 0, value ->> 1, value -> 2 FROM json_each(?)"
)
UPSERT_SQL = "INSERT OR REPLACE INTO state (kind, key, data) VALUES (?, ?, ?)"


def clock_floor() -> int:
    """An id number derived from the wall clock (microseconds since the epoch): above any
    number an earlier incarnation could have reached, whatever its state, since no exchange
    hands out a million ids per second."""
    return time.time_ns() // 1_000


@dataclass(slots=True)
class WalReport:
    """What SQLite will find in the write-ahead log: committed transactions it replays, and
    bytes it ignores (a torn or corrupt tail, or a transaction that never committed)."""

    size: int = 0
    committed_frames: int = 0
    commits: int = 0
    uncommitted_frames: int = 0  # valid frames after the last commit: never acknowledged
    dropped_bytes: int = 0  # bytes past the last valid frame of this WAL generation
    dropped_commits: int = 0  # commit marks among them: acknowledged transactions lost
    header_valid: bool = True


@dataclass(slots=True)
class Loaded:
    """The state found at start, and what recovery kept and dropped."""

    rows: dict[str, dict[str, Any]]
    last_ids: tuple[int, int]  # (order number, trade number) to continue above
    fresh: bool  # nothing was stored (or --reset)
    report: dict[str, Any] = field(default_factory=dict)


def _wal_checksum(data: bytes, big_endian: bool, s0: int, s1: int) -> tuple[int, int]:
    """SQLite's WAL checksum (a Fibonacci-weighted sum over 32-bit words), continued from
    (s0, s1)."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    mask = 0xFFFFFFFF
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & mask
        s1 = (s1 + words[i + 1] + s0) & mask
    return s0, s1


def inspect_wal(path: Path) -> WalReport:
    """Walk a WAL file the way SQLite's recovery does (file format: sqlite.org/fileformat2),
    to report what recovery is about to keep and drop; SQLite itself drops it silently."""
    report = WalReport()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return report
    report.size = len(data)
    if len(data) < 32:
        report.header_valid = len(data) == 0
        report.dropped_bytes = len(data)
        return report
    magic, _version, page_size, _ckpt, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:32])
    big_endian = bool(magic & 1)
    if magic not in (0x377F0682, 0x377F0683) or page_size < 512 or page_size & (page_size - 1):
        report.header_valid = False
        report.dropped_bytes = len(data)
        return report
    s0, s1 = _wal_checksum(data[:24], big_endian, 0, 0)
    if (s0, s1) != (c1, c2):
        report.header_valid = False
        report.dropped_bytes = len(data)
        return report
    frame_size = 24 + page_size
    offset = 32
    pending = 0  # valid frames since the last commit
    while offset + frame_size <= len(data):
        header = data[offset : offset + 24]
        _page, commit_size, f_salt1, f_salt2, f_c1, f_c2 = struct.unpack(">6I", header)
        if (f_salt1, f_salt2) != (salt1, salt2):
            break  # a frame of an earlier WAL generation: the end of this one, not loss
        s0, s1 = _wal_checksum(header[:8], big_endian, s0, s1)
        s0, s1 = _wal_checksum(data[offset + 24 : offset + frame_size], big_endian, s0, s1)
        if (s0, s1) != (f_c1, f_c2):
            # Corrupt: this frame and every later one of this generation are ignored.
            report.dropped_bytes, report.dropped_commits = _rest_of_generation(
                data, offset, frame_size, salt1, salt2
            )
            break
        pending += 1
        offset += frame_size
        if commit_size:
            report.commits += 1
            report.committed_frames += pending
            pending = 0
    else:
        # The loop ran off the end: a partial frame of this generation is a torn write.
        tail = data[offset:]
        if len(tail) < 16 or struct.unpack(">2I", tail[8:16]) == (salt1, salt2):
            report.dropped_bytes = len(tail)
            if len(tail) >= 8 and struct.unpack(">I", tail[4:8])[0]:
                report.dropped_commits += 1  # the torn frame closed a transaction
    report.uncommitted_frames = pending
    return report


def _rest_of_generation(
    data: bytes, offset: int, frame_size: int, salt1: int, salt2: int
) -> tuple[int, int]:
    """Bytes and commit marks from ``offset`` on that still carry this generation's salts."""
    start, commits = offset, 0
    while offset + frame_size <= len(data):
        _page, commit_size, f_salt1, f_salt2 = struct.unpack(">4I", data[offset : offset + 16])
        if (f_salt1, f_salt2) != (salt1, salt2):
            break
        commits += 1 if commit_size else 0
        offset += frame_size
    if offset + frame_size > len(data):
        offset = len(data)  # a torn last frame belongs to the dropped tail too
    return offset - start, commits


def read_ids(path: Path) -> tuple[int, int] | None:
    """(order, trade) numbers reserved by ``ids.json``; None if missing or unreadable."""
    try:
        data = orjson.loads(path.read_bytes())
        return int(data["order"]), int(data["trade"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_ids(path: Path, order: int, trade: int) -> None:
    """Replace ``ids.json`` atomically and durably (temp file, fsync, rename, fsync dir)."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        f.write(orjson.dumps({"order": order, "trade": trade}))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    """The state directory: open (recovering what it can), commit batches, close."""

    def __init__(self, directory: Path, busy_timeout_s: float = 5.0) -> None:
        self.directory = Path(directory)
        # How long a commit waits for a lock held by another process (an operator's sqlite3
        # shell) before it fails and the journal retries it.
        self.busy_timeout_s = busy_timeout_s
        self.db_path = self.directory / DB_NAME
        self.ids_path = self.directory / IDS_NAME
        self._db: sqlite3.Connection | None = None
        self._reserved = (0, 0)  # what ids.json holds

    # ---- open and recover --------------------------------------------------------------------

    def open(self, reset: bool = False) -> Loaded:
        """Open the state directory and read everything in it. ``reset`` discards the stored
        state but not the id reservation."""
        self.directory.mkdir(parents=True, exist_ok=True)
        report: dict[str, Any] = {"state_dir": str(self.directory)}
        if reset:
            removed = self._remove_db_files()
            log.info("paper.store_reset", state_dir=str(self.directory), removed=removed)
        wal = inspect_wal(self.db_path.with_name(DB_NAME + "-wal"))
        report.update(
            wal_commits_replayed=wal.commits,
            wal_uncommitted_frames=wal.uncommitted_frames,
            wal_dropped_bytes=wal.dropped_bytes,
            wal_dropped_commits=wal.dropped_commits,
            wal_header_valid=wal.header_valid,
        )
        raw, salvage = self._open_db()
        report.update(salvage)
        rows: dict[str, dict[str, Any]] = {}
        undecodable = 0
        for kind, key, data in raw:
            try:
                rows.setdefault(kind, {})[key] = orjson.loads(data)
            except orjson.JSONDecodeError:
                undecodable += 1
        report["rows_undecodable"] = undecodable
        fresh = not rows
        last_ids = self._starting_ids(rows, fresh, report)
        return Loaded(rows=rows, last_ids=last_ids, fresh=fresh, report=report)

    def _starting_ids(
        self, rows: dict[str, dict[str, Any]], fresh: bool, report: dict[str, Any]
    ) -> tuple[int, int]:
        reserved = read_ids(self.ids_path)
        engine = rows.get("meta", {}).get("engine") or {}
        stored = (int(engine.get("last_order", 0)), int(engine.get("last_trade", 0)))
        order, trade = stored
        if reserved is not None:
            order, trade = max(order, reserved[0]), max(trade, reserved[1])
        if fresh or reserved is None:
            # Nothing (or no reservation) says which numbers an earlier incarnation used:
            # continue above the clock.
            floor = clock_floor()
            order, trade = max(order, floor), max(trade, floor)
        self._reserved = reserved or (0, 0)
        report.update(
            ids_reserved=list(reserved) if reserved else None,
            ids_stored=list(stored),
            ids_continue_after=[order, trade],
        )
        return order, trade

    def _remove_db_files(self) -> list[str]:
        removed = []
        for suffix in ("", "-wal", "-shm"):
            path = self.db_path.with_name(DB_NAME + suffix)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path.name)
        return removed

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.db_path,
            timeout=self.busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            self._prepare(db)
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _prepare(db: sqlite3.Connection) -> None:
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk when COMMIT returns (NORMAL only syncs at checkpoints).
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        for statement in SCHEMA:
            db.execute(statement)
        if db.execute("PRAGMA user_version").fetchone()[0] == 0:
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _open_db(self) -> tuple[list[tuple[str, str, bytes]], dict[str, Any]]:
        """Connect and read every row; a damaged database is salvaged into a fresh one."""
        db: sqlite3.Connection | None = None
        try:
            db = self._connect()
            check = db.execute("PRAGMA quick_check").fetchall()
            if check == [("ok",)]:
                self._db = db
                raw = db.execute("SELECT kind, key, data FROM state").fetchall()
                return raw, {"db_corrupt": False}
            problem = "; ".join(str(r[0]) for r in check[:5])
        except sqlite3.DatabaseError as exc:
            problem = str(exc)
        return self._salvage(db, problem)

    def _salvage(
        self, db: sqlite3.Connection | None, problem: str
    ) -> tuple[list[tuple[str, str, bytes]], dict[str, Any]]:
        """Read what a damaged database still yields (scanning from both ends, since a scan
        stops at the first bad page), move it aside and start a new one with those rows."""
        found: dict[Key, bytes] = {}
        if db is not None:
            for direction in ("ASC", "DESC"):
                try:
                    for kind, key, data in db.execute(
                        f"SELECT kind, key, data FROM state ORDER BY kind {direction}, "
                        f"key {direction}"
                    ):
                        found[(kind, key)] = data
                except sqlite3.DatabaseError:
                    pass
            with contextlib.suppress(sqlite3.Error):
                db.close()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        moved = self.db_path.with_name(f"{DB_NAME}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            path = self.db_path.with_name(DB_NAME + suffix)
            if path.exists():
                os.replace(path, moved.with_name(moved.name + suffix))
        self._db = self._connect()
        self._db.execute("BEGIN")
        self._db.executemany(
            UPSERT_SQL, [(kind, key, data) for (kind, key), data in found.items()]
        )
        self._db.execute("COMMIT")
        log.error(
            "paper.store_corrupt",
            problem=problem,
            rows_salvaged=len(found),
            moved_to=str(moved),
        )
        raw = [(kind, key, data) for (kind, key), data in found.items()]
        return raw, {
            "db_corrupt": True,
            "db_problem": problem,
            "rows_salvaged": len(found),
            "corrupt_db_moved_to": str(moved),
        }

    # ---- write -------------------------------------------------------------------------------

    def commit(self, rows: list[Row], last_ids: tuple[int, int]) -> None:
        """Make one batch durable: reserve ids past ``last_ids`` first if needed, then write
        every row in one transaction (encoded here, off the event loop)."""
        order, trade = last_ids
        if order > self._reserved[0] or trade > self._reserved[1]:
            self._reserved = (
                max(self._reserved[0], order + ID_BLOCK),
                max(self._reserved[1], trade + ID_BLOCK),
            )
            write_ids(self.ids_path, *self._reserved)
        db = self._db
        assert db is not None, "store not open"
        # Autocommit: the statement is its own transaction (all rows or none).
        db.execute(BATCH_SQL, (orjson.dumps(rows).decode(),))

    def close(self, last_ids: tuple[int, int] | None = None) -> None:
        """Checkpoint and close; ``last_ids`` (a clean stop) narrows the reservation to the
        numbers really handed out, so the next start continues without a gap."""
        if last_ids is not None:
            self._reserved = last_ids
            write_ids(self.ids_path, *last_ids)
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None
