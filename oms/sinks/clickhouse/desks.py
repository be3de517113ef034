"""Desks on a ClickHouse server: a user, a role, grants and row policies per desk.

A server enforces desk scoping itself, whoever connects: each desk gets

* a role ``oms_desk_<desk>_reader`` with ``SELECT`` on the tables a desk may read
  (:data:`~oms.sinks.scope.SCOPED_TABLES` and :data:`~oms.sinks.scope.REFERENCE_TABLES`)
  and nothing else: no other table, no ``system`` access beyond what every user has, no
  writes, no table functions;
* a row policy ``oms_desk_<desk>`` on every table that holds an account,
  ``USING account_id IN (<the desk's accounts>) TO <role>``;
* if the desk has a query token in the secrets store, a user ``oms_desk_<desk>`` with that
  role and ``readonly = 1``, identified by the SHA-256 of the token (the token itself never
  appears in a statement, so not in the server's query log either).

Servers before ClickHouse 23.x hide every row of a table with a row policy from users the
policies do not name; :func:`desk_access_statements` therefore also gives the operator
(the user the sink connects as) a ``USING 1`` policy, so the sink and its own tools keep
reading everything. It is never granted to ``ALL``: policies add up, and a desk user
holding it would see every row.

All statements are idempotent (``IF NOT EXISTS``/``OR REPLACE``); :func:`sync_desk_access`
runs them at every sink start and drops the users, roles and policies of desks no longer
configured. The sink's user needs access management rights (``access_management = 1``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

from clickhouse_connect.driver.client import Client
from sqlglot import exp

from oms.secrets import QueryTokens
from oms.sinks.scope import ACCOUNT_COLUMN, DIALECT, REFERENCE_TABLES, SCOPED_TABLES

PREFIX = "oms_desk_"
OPERATOR_POLICY = "oms_operator"
# Row policies go on tables, not views: a view reads its tables as the querying user
# (SQL SECURITY INVOKER, the default), so their policies apply through it.
POLICY_TABLES = (
    "orders", "order_events", "executions", "position_changes", "notifications",
    "positions_current", "position_daily",
)  # fmt: skip
GRANTED_TABLES = tuple(sorted(SCOPED_TABLES | REFERENCE_TABLES))


def _slug(desk: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", desk.lower())


def desk_user(desk: str) -> str:
    """The ClickHouse user a desk's reader logs in as."""
    return f"{PREFIX}{_slug(desk)}"


def desk_role(desk: str) -> str:
    """The role holding a desk's grants and row policies."""
    return f"{desk_user(desk)}_reader"


def _ident(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(dialect=DIALECT)


def _string(value: str) -> str:
    return exp.Literal.string(value).sql(dialect=DIALECT)


def _account_condition(accounts: Sequence[str]) -> str:
    if not accounts:
        return "0"
    return f"{ACCOUNT_COLUMN} IN ({', '.join(_string(a) for a in sorted(accounts))})"


def desk_access_statements(
    desks: Mapping[str, Sequence[str]],
    password_sha256: Mapping[str, str],
    operator_user: str,
    database: str,
) -> list[str]:
    """The DDL that gives every desk its role, grants, row policies and (for desks in
    ``password_sha256``: desk -> hex SHA-256 of its token) user, and the operator its
    all-rows policy. Pure: no connection needed."""
    slugs = [_slug(d) for d in desks]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"desk names collide as ClickHouse names: {sorted(desks)}")
    db = _ident(database)
    out: list[str] = []
    if desks:
        for table in POLICY_TABLES:
            out.append(
                f"CREATE ROW POLICY OR REPLACE {_ident(OPERATOR_POLICY)} ON {db}.{_ident(table)} "
                f"AS PERMISSIVE FOR SELECT USING 1 TO {_ident(operator_user)}"
            )
    for desk, accounts in sorted(desks.items()):
        role, user = _ident(desk_role(desk)), _ident(desk_user(desk))
        out.append(f"CREATE ROLE IF NOT EXISTS {role}")
        for table in GRANTED_TABLES:
            out.append(f"GRANT SELECT ON {db}.{_ident(table)} TO {role}")
        condition = _account_condition(accounts)
        for table in POLICY_TABLES:
            out.append(
                f"CREATE ROW POLICY OR REPLACE {_ident(desk_user(desk))} ON {db}.{_ident(table)} "
                f"AS PERMISSIVE FOR SELECT USING {condition} TO {role}"
            )
        digest = password_sha256.get(desk)
        if digest is None:
            continue
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError("password_sha256 values must be hex SHA-256 digests")
        identified = f"IDENTIFIED WITH sha256_hash BY {_string(digest)}"
        out.append(f"CREATE USER IF NOT EXISTS {user} {identified}")
        # A rotated token: the user exists, so set the password again.
        out.append(f"ALTER USER {user} {identified}")
        out.append(f"GRANT {role} TO {user}")
        out.append(f"ALTER USER {user} DEFAULT ROLE {role} SETTINGS readonly = 1")
    return out


def stale_access_statements(
    desks: Mapping[str, Sequence[str]],
    users: Sequence[str],
    roles: Sequence[str],
    policies: Sequence[tuple[str, str, str]],
    database: str,
) -> list[str]:
    """DROP statements for the desk users, roles and row policies (``(name, database,
    table)``) that exist on the server but belong to no configured desk (or table)."""
    wanted_users = {desk_user(d) for d in desks}
    wanted_roles = {desk_role(d) for d in desks}
    out: list[str] = []
    for name, db, table in policies:
        stale_desk = name.startswith(PREFIX) and name not in wanted_users
        stale_operator = name == OPERATOR_POLICY and not desks
        stale_table = name.startswith(PREFIX) and table not in POLICY_TABLES
        if db == database and (stale_desk or stale_operator or stale_table):
            out.append(f"DROP ROW POLICY IF EXISTS {_ident(name)} ON {_ident(db)}.{_ident(table)}")
    out += [
        f"DROP USER IF EXISTS {_ident(u)}"
        for u in users
        if u.startswith(PREFIX) and u not in wanted_users
    ]
    out += [
        f"DROP ROLE IF EXISTS {_ident(r)}"
        for r in roles
        if r.startswith(PREFIX) and r not in wanted_roles
    ]
    return out


def sync_desk_access(
    client: Client, desks: Mapping[str, Sequence[str]], tokens: QueryTokens
) -> int:
    """Bring the server's desk users, roles, grants and row policies to ``desks``
    (blocking; server mode only). Returns the number of statements run."""
    operator, database = client.query("SELECT currentUser(), currentDatabase()").result_rows[0]
    users = [
        r[0]
        for r in client.query(
            "SELECT name FROM system.users WHERE startsWith(name, {p:String})",
            parameters={"p": PREFIX},
        ).result_rows
    ]
    roles = [
        r[0]
        for r in client.query(
            "SELECT name FROM system.roles WHERE startsWith(name, {p:String})",
            parameters={"p": PREFIX},
        ).result_rows
    ]
    policies = [
        (r[0], r[1], r[2])
        for r in client.query(
            "SELECT short_name, database, table FROM system.row_policies "
            "WHERE startsWith(short_name, {p:String}) OR short_name = {o:String}",
            parameters={"p": PREFIX, "o": OPERATOR_POLICY},
        ).result_rows
    ]
    hashes = {
        desk: hashlib.sha256(token.encode()).hexdigest()
        for desk in desks
        if (token := tokens.for_desk(desk)) is not None
    }
    statements = stale_access_statements(desks, users, roles, policies, database)
    statements += desk_access_statements(desks, hashes, operator, database)
    for statement in statements:
        client.command(statement)
    return len(statements)
