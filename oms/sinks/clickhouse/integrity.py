"""Finding data parts that a storage fault left broken.

A background merge that is writing when the disk fills can finish with an empty marks file
and still become the active part (chDB 4.4 / ClickHouse 26.9): inserts keep working, but
every read of the table fails with CORRUPTED_DATA. ``CHECK TABLE`` finds such parts by
their checksums; reopening the embedded engine detaches them (``broken-on-start``) and
reactivates the parts they replaced, kept for ``OLD_PARTS_LIFETIME_S`` (migration 6).
"""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from oms.sinks.clickhouse.migrations import MERGE_TREE_TABLES
from oms.sinks.failures import error_line

# Insert failures after which the data parts on disk may be broken.
STORAGE_REASONS = frozenset({"disk_full", "permission_denied", "read_only_filesystem"})


def broken_tables(client: Client) -> dict[str, str]:
    """Tables whose ``CHECK TABLE`` fails, with what it said. Blocking (reads every part)."""
    existing = {
        row[0]
        for row in client.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase()"
        ).result_rows
    }
    broken: dict[str, str] = {}
    for table in MERGE_TREE_TABLES:
        if table not in existing:
            continue
        try:
            rows = client.query(
                f"CHECK TABLE {table}", settings={"check_query_single_value_result": 0}
            ).result_rows
        except Exception as exc:  # the check itself can trip over the broken part
            broken[table] = error_line(exc)
            continue
        # One row per part: (part_path, is_passed, message).
        bad = [row for row in rows if len(row) >= 2 and not int(row[1])]
        if bad:
            broken[table] = "; ".join(f"{row[0]}: {row[2] if len(row) > 2 else ''}" for row in bad)[
                :500
            ]
    return broken


def broken_detached_parts(client: Client) -> int:
    """Parts the engine detached as broken (since the data path was created)."""
    rows = client.query(
        "SELECT count() FROM system.detached_parts WHERE startsWith(coalesce(reason, ''), 'broken')"
    ).result_rows
    return int(rows[0][0])
