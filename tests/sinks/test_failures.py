"""Reasons the sink reports for failed inserts, from the errors chDB really raised in the
``disk-error`` chaos scenario (disk full on a tmpfs, data directories made read-only)."""

from __future__ import annotations

import errno

import pytest

from oms.sinks.failures import error_line, insert_failure_reason

DISK_FULL = (
    "Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. (NOT_ENOUGH_SPACE)"
)
PERMISSION = (
    "Code: 1001. DB::Exception: std::__1::filesystem::filesystem_error: filesystem error: in "
    'create_directories: Permission denied ["/data/clickhouse/store/f05/x/tmp_insert_all_2_2_1"]. '
    "(STD_EXCEPTION)"
)


class DatabaseError(Exception):
    """Stands in for clickhouse_connect's DatabaseError (same str())."""


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (DatabaseError(DISK_FULL), "disk_full"),
        (DatabaseError(PERMISSION + "\nStack trace: ..."), "permission_denied"),
        (OSError(errno.ENOSPC, "No space left on device"), "disk_full"),
        (OSError(errno.EROFS, "Read-only file system"), "read_only_filesystem"),
        (
            ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
            "clickhouse_unreachable",
        ),
        (DatabaseError("Code: 62. Syntax error"), "insert_failed"),
    ],
)
def test_reason_names_what_to_fix(exc: BaseException, reason: str) -> None:
    assert insert_failure_reason(exc) == reason


def test_reason_is_found_in_the_cause_chain() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("insert failed") from inner
    except RuntimeError as outer:
        assert insert_failure_reason(outer) == "disk_full"


def test_error_line_keeps_the_first_line_only() -> None:
    assert (
        error_line(DatabaseError(PERMISSION + "\nStack trace:\n0. DB::Exception"))
        == PERMISSION[:300]
    )
    assert error_line(DatabaseError("")) == "DatabaseError('')"
