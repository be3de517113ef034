"""The read-only admission check (no database needed)."""

from __future__ import annotations

import pytest

from oms.sinks.errors import ReadOnlyViolation
from oms.sinks.sqlguard import check_read_only


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1", "SELECT 1"),
        ("  select 1 ;  ", "select 1"),
        ("WITH 1 AS x SELECT x", "WITH 1 AS x SELECT x"),
        ("SHOW TABLES", "SHOW TABLES"),
        ("DESCRIBE orders", "DESCRIBE orders"),
        ("desc orders", "desc orders"),
        ("EXPLAIN SELECT 1", "EXPLAIN SELECT 1"),
        ("/* hi */ SELECT ';'", "/* hi */ SELECT ';'"),
        ("SELECT 'a'';b' AS `x;y`;", "SELECT 'a'';b' AS `x;y`"),
        ("SELECT 1 -- ; DROP TABLE orders", "SELECT 1 -- ; DROP TABLE orders"),
    ],
)
def test_accepts_single_read_only_statement(sql: str, expected: str) -> None:
    assert check_read_only(sql) == expected


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("INSERT INTO orders VALUES (1)", "INSERT is not allowed"),
        ("DROP TABLE orders", "DROP is not allowed"),
        ("ALTER TABLE orders DELETE WHERE 1", "ALTER is not allowed"),
        ("TRUNCATE TABLE orders", "TRUNCATE is not allowed"),
        ("SET readonly = 0", "SET is not allowed"),
        ("SELECT 1; DROP TABLE orders", "only one statement"),
        ("SELECT 1; SELECT 2", "only one statement"),
        ("SELECT * FROM orders INTO OUTFILE '/tmp/x'", "INTO OUTFILE"),
        ("", "empty query"),
        ("-- nothing", "empty query"),
        ("SELECT 'open", "unterminated"),
        ("SELECT 1 /* open", "unterminated"),
    ],
)
def test_rejects_everything_else(sql: str, reason: str) -> None:
    with pytest.raises(ReadOnlyViolation, match=reason):
        check_read_only(sql)
