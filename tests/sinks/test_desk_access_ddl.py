"""Desk users, roles, grants and row policies for a ClickHouse server
(oms.sinks.clickhouse.desks).

There is no ClickHouse server in the test environment (and chDB, being embedded, has no
access management), so the statements are checked as strings, and each is parsed by
ClickHouse's own parser through chDB (``EXPLAIN AST``), which fails on a syntax error.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from oms.secrets import QueryTokens
from oms.sinks.clickhouse.desks import (
    GRANTED_TABLES,
    POLICY_TABLES,
    desk_access_statements,
    desk_role,
    desk_user,
    stale_access_statements,
    sync_desk_access,
)
from oms.sinks.scope import REFERENCE_TABLES, SCOPED_TABLES

DESKS = {"alpha": ["a1", "a'2"], "Beta Desk": ["b1"], "idle": []}
HASH = hashlib.sha256(b"tok-alpha").hexdigest()


def statements() -> list[str]:
    return desk_access_statements(DESKS, {"alpha": HASH}, "default", "default")


def test_every_account_table_gets_a_policy_per_desk() -> None:
    out = statements()
    for table in POLICY_TABLES:
        # Accounts are string literals, quotes doubled.
        assert (
            f'CREATE ROW POLICY OR REPLACE "oms_desk_alpha" ON "default"."{table}" AS PERMISSIVE '
            "FOR SELECT USING account_id IN ('a''2', 'a1') TO \"oms_desk_alpha_reader\""
        ) in out, [s for s in out if table in s]
        assert (
            f'CREATE ROW POLICY OR REPLACE "oms_desk_beta_desk" ON "default"."{table}" '
            "AS PERMISSIVE FOR SELECT USING account_id IN ('b1') TO \"oms_desk_beta_desk_reader\""
        ) in out
        # A desk without accounts sees nothing, and the operator keeps every row.
        assert (
            f'CREATE ROW POLICY OR REPLACE "oms_desk_idle" ON "default"."{table}" '
            'AS PERMISSIVE FOR SELECT USING 0 TO "oms_desk_idle_reader"'
        ) in out
        assert (
            f'CREATE ROW POLICY OR REPLACE "oms_operator" ON "default"."{table}" '
            'AS PERMISSIVE FOR SELECT USING 1 TO "default"'
        ) in out
    assert not any("TO ALL" in s for s in out)
    # Every table holding an account has a policy (views read through their tables').
    assert set(POLICY_TABLES) <= SCOPED_TABLES


def test_desks_get_select_on_their_tables_only() -> None:
    grants = [s for s in statements() if s.startswith("GRANT SELECT")]
    assert set(GRANTED_TABLES) == SCOPED_TABLES | REFERENCE_TABLES
    assert len(grants) == 3 * len(GRANTED_TABLES)
    assert not any("dead_letters" in g or "metrics" in g or "*" in g for g in grants)
    # Roles are granted to users; nothing but SELECT is granted on a table.
    others = [s for s in statements() if s.startswith("GRANT") and s not in grants]
    assert others and all(s.startswith('GRANT "oms_desk_') for s in others)


def test_a_desk_with_a_token_gets_a_read_only_user_without_the_token() -> None:
    out = statements()
    user, role = desk_user("alpha"), desk_role("alpha")
    assert f"CREATE USER IF NOT EXISTS \"{user}\" IDENTIFIED WITH sha256_hash BY '{HASH}'" in out
    assert f"ALTER USER \"{user}\" IDENTIFIED WITH sha256_hash BY '{HASH}'" in out
    assert f'GRANT "{role}" TO "{user}"' in out
    assert f'ALTER USER "{user}" DEFAULT ROLE "{role}" SETTINGS readonly = 1' in out
    assert not any("tok-alpha" in s for s in out)
    # Desks without a token get their role and policies but no user to log in as.
    assert not any(s.startswith("CREATE USER") and "beta" in s for s in out)


def test_the_statements_are_idempotent() -> None:
    for statement in statements():
        assert (
            "IF NOT EXISTS" in statement
            or "OR REPLACE" in statement
            or statement.startswith(("GRANT", "ALTER USER"))
        ), statement


def test_colliding_desk_names_and_bad_hashes_are_refused() -> None:
    with pytest.raises(ValueError, match="collide"):
        desk_access_statements({"a-b": [], "a_b": []}, {}, "default", "default")
    with pytest.raises(ValueError, match="SHA-256"):
        desk_access_statements({"a": []}, {"a": "' OR 1"}, "default", "default")


def test_stale_desks_are_dropped() -> None:
    out = stale_access_statements(
        {"alpha": ["a1"]},
        users=["oms_desk_alpha", "oms_desk_gone", "grafana"],
        roles=["oms_desk_alpha_reader", "oms_desk_gone_reader"],
        policies=[
            ("oms_desk_alpha", "default", "orders"),
            ("oms_desk_gone", "default", "orders"),
            ("oms_desk_alpha", "default", "old_table"),
            ("oms_operator", "default", "orders"),
            ("oms_desk_gone", "other_db", "orders"),
        ],
        database="default",
    )
    assert out == [
        'DROP ROW POLICY IF EXISTS "oms_desk_gone" ON "default"."orders"',
        'DROP ROW POLICY IF EXISTS "oms_desk_alpha" ON "default"."old_table"',
        'DROP USER IF EXISTS "oms_desk_gone"',
        'DROP ROLE IF EXISTS "oms_desk_gone_reader"',
    ]
    # No desks left: the operator's policy goes too.
    assert 'DROP ROW POLICY IF EXISTS "oms_operator" ON "default"."orders"' in (
        stale_access_statements({}, [], [], [("oms_operator", "default", "orders")], "default")
    )


def test_clickhouse_parses_every_statement(ch: Client) -> None:
    """ClickHouse's own parser (chDB) accepts each statement: EXPLAIN AST parses without
    running, and fails on a syntax error."""
    out = statements() + stale_access_statements(
        {}, ["oms_desk_x"], ["oms_desk_x_reader"], [("oms_desk_x", "default", "orders")], "default"
    )
    for statement in out:
        ch.command(f"EXPLAIN AST {statement}")
    with pytest.raises(Exception, match="Syntax error"):
        ch.command("EXPLAIN AST CREATE ROW POLICY p ON t USING account_id IN ('a' TO r")


class FakeServer:
    """Answers sync_desk_access's questions and records its commands."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        rows: list[tuple[Any, ...]] = []
        if "currentUser()" in sql:
            rows = [("oms_sink", "oms")]
        elif "system.users" in sql:
            rows = [("oms_desk_gone",)]
        return type("Result", (), {"result_rows": rows})()

    def command(self, sql: str) -> None:
        self.commands.append(sql)


def test_sync_runs_drops_then_creates(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"query_tokens": {"alpha": "tok-alpha"}}))
    server = FakeServer()
    count = sync_desk_access(server, DESKS, QueryTokens(DESKS, secrets))  # type: ignore[arg-type]
    assert count == len(server.commands)
    assert server.commands[0] == 'DROP USER IF EXISTS "oms_desk_gone"'
    assert server.commands[1:] == desk_access_statements(DESKS, {"alpha": HASH}, "oms_sink", "oms")
