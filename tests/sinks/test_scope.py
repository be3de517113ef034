"""Desk scoping of ad-hoc SQL (oms.sinks.scope), at the level of the syntax tree.

What runs on chDB is tested in test_query_scope_endpoint.py; here every refusal reason and
the rewrite's invariant, and 10,000 generated queries against an independent oracle.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from oms.sinks.scope import (
    EVERYTHING,
    Scope,
    ScopeViolation,
    check_scoped,
    prepare_statement,
    scope_sql,
)

from .desk_queries import desk_queries, scoped_reads_ok

DESK_A = ["a1", "a2"]


def scoped(sql: str) -> str:
    return scope_sql(sql, DESK_A)


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        # One SELECT only.
        ("SHOW TABLES", "not_select"),
        ("DESCRIBE TABLE orders", "not_select"),
        ("EXPLAIN SELECT 1", "not_select"),
        ("SET readonly = 0", "not_select"),
        ("SET max_threads = 1; SELECT * FROM orders", "multiple_statements"),
        ("SELECT * FROM orders; SELECT * FROM dead_letters", "multiple_statements"),
        ("INSERT INTO orders (order_id) VALUES ('x')", "not_select"),
        ("DROP TABLE orders", "not_select"),
        ("SELECT * FROM orders INTO OUTFILE '/tmp/x.csv'", "parse_error"),
        ("SELECT * FROM", "parse_error"),
        ("", "parse_error"),
        ("SELECT " + "(" * 5000 + "1" + ")" * 5000, "parse_error"),
        # Table functions, all of them.
        ("SELECT * FROM numbers(10)", "table_function"),
        ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "table_function"),
        ("SELECT * FROM url('http://x', CSV, 'a String')", "table_function"),
        ("SELECT * FROM remote('127.0.0.1', default.orders)", "table_function"),
        ("SELECT * FROM s3('http://x/y.csv')", "table_function"),
        ("SELECT * FROM cluster('c', default.orders)", "table_function"),
        ("SELECT * FROM input('a String')", "table_function"),
        ("SELECT * FROM merge(currentDatabase(), '^ord')", "table_function"),
        ("SELECT o.* FROM orders AS o JOIN numbers(3) AS n ON 1", "table_function"),
        ("SELECT * FROM (SELECT * FROM generateRandom('a String'))", "table_function"),
        # system.*, information_schema and other databases, however spelled.
        ("SELECT * FROM system.tables", "system_table"),
        ('SELECT * FROM "system"."tables"', "system_table"),
        ("SELECT * FROM `system`.`tables`", "system_table"),
        ("SELECT * FROM SYSTEM.TABLES", "system_table"),
        ("SELECT * FROM system . /* x */ tables", "system_table"),
        ("SELECT * FROM information_schema.tables", "system_table"),
        ("SELECT * FROM INFORMATION_SCHEMA.COLUMNS", "system_table"),
        ("SELECT * FROM default.orders", "other_database"),
        ("SELECT * FROM orders UNION ALL SELECT * FROM system.tables", "system_table"),
        ("SELECT (SELECT count() FROM system.parts) AS n", "system_table"),
        # Tables without an account, or not ours.
        ("SELECT * FROM dead_letters", "table_not_allowed"),
        ("SELECT * FROM metrics", "table_not_allowed"),
        ("SELECT * FROM schema_migrations", "table_not_allowed"),
        ("SELECT * FROM position_changes_json", "table_not_allowed"),
        ("SELECT * FROM ORDERS", "table_not_allowed"),  # ClickHouse names are case-sensitive
        ("SELECT * FROM orders AS o JOIN dead_letters AS d ON 1", "table_not_allowed"),
        (
            "SELECT * FROM orders WHERE order_id IN (SELECT key FROM dead_letters)",
            "table_not_allowed",
        ),
        ("SELECT 1 WHERE 'x' IN dead_letters", "in_table"),
        ("SELECT * FROM orders WHERE account_id IN orders", "in_table"),
        ("SELECT 'x' IN (dead_letters)", "in_table"),
        ("SELECT 'x' IN ((dead_letters))", "in_table"),
        ("SELECT 'x' IN (dead_letters AS d)", "parse_error"),  # ClickHouse reads the table
        ("SELECT 1 WHERE 'x' GLOBAL NOT IN dead_letters", "in_table"),
        ("SELECT globalIn('x', dead_letters)", "function_not_allowed"),
        ("SELECT notNullIn('x', dead_letters)", "function_not_allowed"),
        ("SELECT globalNotInIgnoreSet('x', dead_letters)", "function_not_allowed"),
        ("SELECT catboostEvaluate('/tmp/model.bin', 1)", "function_not_allowed"),
        # Settings and formats.
        ("SELECT * FROM orders SETTINGS readonly = 0", "settings"),
        (
            "SELECT * FROM orders UNION ALL SELECT * FROM orders SETTINGS max_threads = 1",
            "settings",
        ),
        ("SELECT * FROM (SELECT * FROM orders SETTINGS max_threads = 1)", "settings"),
        ("SELECT * FROM orders FORMAT JSON", "format"),
        # Names: parameters used as identifiers, WITH shadowing a table, the rewrite's own.
        ("SELECT * FROM {t:Identifier}", "identifier_parameter"),
        ("SELECT {c:Identifier} FROM orders", "identifier_parameter"),
        ("WITH dead_letters AS (SELECT 1 AS a) SELECT * FROM dead_letters", "cte_shadows_table"),
        ("WITH orders AS (SELECT 1 AS account_id) SELECT * FROM orders", "cte_shadows_table"),
        # A WITH counts only where ClickHouse sees it: elsewhere the name is a real table.
        (
            "SELECT * FROM (WITH extra AS (SELECT 1) SELECT 1) UNION ALL SELECT * FROM extra",
            "table_not_allowed",
        ),
        ("SELECT * FROM (WITH extra AS (SELECT 1) SELECT 1) AS s, extra", "table_not_allowed"),
        ("SELECT * FROM orders AS __oms_scope", "reserved_name"),
        ("SELECT __oms_scope.account_id FROM orders", "reserved_name"),
        # Functions that read by name or from the host.
        ("SELECT file('/etc/passwd')", "function_not_allowed"),
        ("SELECT dictGet('accounts', 'name', 1)", "function_not_allowed"),
        ("SELECT joinGet('j', 'v', 1)", "function_not_allowed"),
        ("SELECT getSetting('readonly')", "function_not_allowed"),
        ("SELECT hasColumnInTable('system', 'tables', 'name')", "function_not_allowed"),
        ("SELECT sleep(3)", "function_not_allowed"),
        ("SELECT * FROM orders AS o, VALUES('a String', 'x') AS v", "table_function"),
    ],
)
def test_refused(sql: str, reason: str) -> None:
    with pytest.raises(ScopeViolation) as refused:
        scoped(sql)
    assert refused.value.reason == reason, refused.value


FILTER = "WHERE __oms_scope.account_id IN ('a1', 'a2')"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT * FROM orders",
            f"SELECT * FROM (SELECT * FROM orders AS __oms_scope {FILTER}) AS orders",
        ),
        (
            "select * from `orders` final where status = 'open'",
            f"SELECT * FROM (SELECT * FROM orders AS __oms_scope FINAL {FILTER}) AS orders "
            "WHERE status = 'open'",
        ),
        (
            'SELECT o.order_id FROM "orders" AS o JOIN executions e USING (order_id)',
            f"SELECT o.order_id FROM (SELECT * FROM orders AS __oms_scope {FILTER}) AS o "
            f"JOIN (SELECT * FROM executions AS __oms_scope {FILTER}) AS e USING (order_id)",
        ),
        (
            "SELECT * FROM orders /* comment */ -- trailing\n",
            f"SELECT * FROM (SELECT * FROM orders AS __oms_scope {FILTER}) AS orders",
        ),
        (
            "WITH h AS (SELECT * FROM order_events) SELECT count() FROM h",
            f"WITH h AS (SELECT * FROM (SELECT * FROM order_events AS __oms_scope {FILTER}) "
            "AS order_events) SELECT count() FROM h",
        ),
        ("SELECT * FROM market_ticks", "SELECT * FROM market_ticks"),
    ],
)
def test_rewrites_every_read_to_a_filtered_subquery(sql: str, expected: str) -> None:
    assert scoped(sql) == expected


def test_union_branches_subqueries_and_ctes_are_all_scoped() -> None:
    sql = (
        "WITH c AS (SELECT account_id FROM notifications) "
        "SELECT account_id FROM orders WHERE order_id IN (SELECT order_id FROM executions) "
        "UNION ALL SELECT account_id FROM (SELECT * FROM positions) AS p "
        "UNION ALL SELECT account_id FROM c "
        "UNION ALL SELECT (SELECT any(account_id) FROM position_daily_stats) "
    )
    out = scoped(sql)
    for table in ("notifications", "orders", "executions", "positions", "position_daily_stats"):
        assert f"FROM {table} AS __oms_scope {FILTER}" in out
    assert scoped_reads_ok(out, DESK_A)


def test_a_with_alias_cannot_capture_the_filter_column() -> None:
    # WITH aliases reach into subqueries in ClickHouse: the filter names its table.
    out = scoped("WITH 'a1' AS account_id SELECT * FROM orders")
    assert f"FROM orders AS __oms_scope {FILTER}" in out


def test_a_desk_without_accounts_reads_nothing() -> None:
    assert scope_sql("SELECT * FROM orders", []) == (
        "SELECT * FROM (SELECT * FROM orders AS __oms_scope WHERE FALSE) AS orders"
    )


def test_check_scoped_catches_an_unfiltered_read() -> None:
    check_scoped(scoped("SELECT * FROM orders"), DESK_A)
    for unscoped in (
        "SELECT * FROM orders",
        "SELECT * FROM (SELECT * FROM orders AS __oms_scope WHERE 1) AS orders",
        "SELECT * FROM (SELECT * FROM orders AS __oms_scope "
        "WHERE __oms_scope.account_id IN ('a1', 'b1')) AS orders",
    ):
        with pytest.raises(ScopeViolation) as refused:
            check_scoped(unscoped, DESK_A)
        assert refused.value.reason == "not_scoped"


def test_the_operator_keeps_the_read_only_check_only() -> None:
    assert prepare_statement("SELECT * FROM dead_letters;", EVERYTHING) == (
        "SELECT * FROM dead_letters"
    )
    desk = Scope(desk="a", accounts=frozenset(DESK_A))
    with pytest.raises(ScopeViolation):
        prepare_statement("SELECT * FROM dead_letters", desk)


@settings(
    max_examples=10_000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(desk_queries)
def test_generated_queries_are_scoped_or_refused(sql: str) -> None:
    """10,000 generated queries: each is refused, or its rewrite reads account tables only
    through desk A's filter (checked by an oracle independent of the module)."""
    try:
        out = scoped(sql)
    except ScopeViolation as refused:
        # A refusal for what the query asks. The SQL written back from a checked tree only
        # fails the invariant where sqlglot drops a WITH of a later UNION branch.
        assert refused.reason != "not_scoped", sql
        if refused.reason == "unsupported_query":
            assert "UNION ALL WITH" in sql or "UNION DISTINCT WITH" in sql, sql
        return
    assert scoped_reads_ok(out, DESK_A), out
