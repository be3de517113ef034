"""Why an insert failed, as a short machine-readable reason for logs and ``/health``.

The sink retries every failed insert forever, so the operator's only signal is what it
reports while retrying: the reason says what to fix (free disk space, fix the data
directory's permissions, start the server) without reading ClickHouse's exception text.
"""

from __future__ import annotations

import errno

# (reason, substrings of the error text or its cause chain that identify it), first match wins.
_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("disk_full", ("NOT_ENOUGH_SPACE", "No space left on device", "not enough space")),
    ("read_only_filesystem", ("Read-only file system", "TABLE_IS_READ_ONLY")),
    ("permission_denied", ("Permission denied", "Operation not permitted", "Access denied")),
    ("clickhouse_unreachable", ("Connection refused", "timed out", "Name or service not known")),
)
_ERRNOS = {
    errno.ENOSPC: "disk_full",
    errno.EDQUOT: "disk_full",
    errno.EROFS: "read_only_filesystem",
    errno.EACCES: "permission_denied",
    errno.EPERM: "permission_denied",
    errno.ECONNREFUSED: "clickhouse_unreachable",
}


def insert_failure_reason(exc: BaseException) -> str:
    """``disk_full``, ``read_only_filesystem``, ``permission_denied``,
    ``clickhouse_unreachable`` or ``insert_failed`` (anything else)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _ERRNOS:
            return _ERRNOS[seen.errno]
        text = str(seen)
        for reason, needles in _PATTERNS:
            if any(needle in text for needle in needles):
                return reason
        seen = seen.__cause__ or seen.__context__
    return "insert_failed"


def error_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of the error text (ClickHouse appends stack traces), bounded."""
    text = str(exc)
    return text.splitlines()[0][:limit] if text else repr(exc)[:limit]
