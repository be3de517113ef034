"""A grammar of SELECTs over the sink's real tables, for the desk-scoping property tests,
and an oracle that checks a rewritten query independently of ``oms.sinks.scope``.

Every query the grammar makes returns one String column of account ids (or something
derived from them), so a leaked row shows up as another desk's account in the result.
Some queries are meant to be refused (system tables, table functions, settings, tables
without accounts); the rest should run.
"""

from __future__ import annotations

from random import Random

from hypothesis import strategies as st
from sqlglot import exp, parse_one

ACCOUNT_TABLES = (
    "orders", "order_events", "executions", "position_changes", "notifications",
    "positions_current", "positions", "position_daily", "position_daily_stats",
    "positions_marked", "positions_by_instrument", "positions_by_currency",
)  # fmt: skip
# Tables/sources a desk may not read: the grammar mixes them in to be refused.
FORBIDDEN_SOURCES = (
    "dead_letters", "metrics", "system.tables", "`system`.`tables`", "numbers(10)",
    "file('/etc/hostname', 'LineAsString')", "remote('127.0.0.1', default.orders)",
    "merge(currentDatabase(), '^ord')", "information_schema.tables", "default.orders",
)  # fmt: skip
FINAL_TABLES = ("orders", "order_events", "executions", "positions_current")

NAMES = ("t", "u", "x", "sub", "c1", "c2")
COMMENTS = ("", " ", " /* c */ ", " -- c\n ", " # c\n ")
ACCOUNT_EXPRS = (
    "account_id", "lower(account_id)", "concat(account_id, '')", "toString(account_id)",
    "arrayJoin([account_id])", "substring(account_id, 1)",
)  # fmt: skip
AGGREGATES = (
    "any(account_id)", "min(account_id)", "max(account_id)",
    "arrayStringConcat(groupArray(account_id), ',')", "toString(groupUniqArray(account_id))",
)  # fmt: skip
CONDITIONS = (
    "", " WHERE 1", " WHERE account_id != ''", " WHERE account_id = 'b1'",
    " WHERE account_id IN ('a1', 'b1', 'z1')", " WHERE NOT account_id IN ('a1')",
    " WHERE length(account_id) > 0 OR 1 = 1",
)  # fmt: skip
JOINS = ("JOIN", "LEFT JOIN", "INNER JOIN", "FULL JOIN", "RIGHT JOIN")


def table_source(rnd: Random, alias: str = "") -> str:
    """A table of the sink, quoted or not, with an alias and FINAL sometimes; now and then a
    forbidden one."""
    named = f" AS {alias}" if alias else ""
    if rnd.randrange(20) == 0:
        return rnd.choice(FORBIDDEN_SOURCES) + named
    table = rnd.choice(ACCOUNT_TABLES)
    final = " FINAL" if table in FINAL_TABLES and rnd.random() < 0.5 else ""
    return rnd.choice((table, f"`{table}`", f'"{table}"')) + named + final


def select_core(rnd: Random, depth: int = 0) -> str:
    """``SELECT <account expr> AS account_id FROM <source> ...`` nested up to 2 deep: a
    table, a subquery, a JOIN, an IN subquery, a CTE, a scalar subquery or a cross join."""
    kind = rnd.randrange(8 if depth < 2 else 2)
    column = rnd.choice(ACCOUNT_EXPRS)
    where = rnd.choice(CONDITIONS)
    if kind <= 1:
        return f"SELECT {column} AS account_id FROM {table_source(rnd)}{where}"
    if kind == 2:
        inner = select_core(rnd, depth + 1)
        return f"SELECT {column} AS account_id FROM ({inner}) AS {rnd.choice(NAMES)}{where}"
    if kind == 3:
        left = table_source(rnd, "l")
        if rnd.random() < 0.5:
            right = table_source(rnd, "r")
        else:
            right = f"({select_core(rnd, depth + 1)}) AS r"
        col = column.replace("account_id", "l.account_id")
        return (
            f"SELECT {col} AS account_id FROM {left} {rnd.choice(JOINS)} {right} "
            "ON l.account_id = r.account_id"
        )
    if kind == 4:
        inner = select_core(rnd, depth + 1)
        source = table_source(rnd)
        return f"SELECT {column} AS account_id FROM {source} WHERE account_id IN ({inner})"
    if kind == 5:
        inner = select_core(rnd, depth + 1)
        name = rnd.choice(("cte", "d", "history"))
        return f"WITH {name} AS ({inner}) SELECT {column} AS account_id FROM {name}{where}"
    if kind == 7:  # an aggregate over a subquery: one row summing up whatever it read
        inner = select_core(rnd, depth + 1)
        return f"SELECT {rnd.choice(AGGREGATES)} AS account_id FROM ({inner}) AS g"
    source = table_source(rnd)
    if rnd.random() < 0.5:
        inner = select_core(rnd, depth + 1)
        scalar = f"(SELECT any(account_id) FROM ({inner}))"
        return f"SELECT concat({column}, {scalar}) AS account_id FROM {source}{where}"
    return (
        f"SELECT {column} AS account_id FROM {source} "
        "CROSS JOIN (SELECT count() AS n FROM market_ticks) AS m"
    )


def desk_query(rnd: Random) -> str:
    """A whole query: a core SELECT or a UNION of them, with comments and tricks mixed in."""
    if rnd.randrange(20) == 0:
        # WITH aliases reach into subqueries: one named like the filter column must not
        # capture it (a leak would show as another desk's ids in the other columns).
        return f"WITH 'a1' AS account_id SELECT * FROM {table_source(rnd)}"
    parts = [select_core(rnd) for _ in range(rnd.randint(1, 3))]
    # A WITH on a later UNION branch is refused (unsupported_query) unless parenthesised.
    parts[1:] = [f"({p})" if p.startswith("WITH") and rnd.random() < 0.8 else p for p in parts[1:]]
    sql = rnd.choice((" UNION ALL ", " UNION DISTINCT ")).join(parts)
    if rnd.randrange(15) == 0:
        sql += rnd.choice((" SETTINGS max_threads = 1", " FORMAT JSON", "; SELECT 1"))
    return rnd.choice(COMMENTS) + sql + rnd.choice(COMMENTS)


# Hypothesis picks the seed of each query's choices: every seed gives a different query,
# and a failure reports the query itself (st.randoms repeats many early draws, and
# drawing each choice through hypothesis costs more than the check under test).
desk_queries = st.integers(0, 2**64).map(lambda seed: desk_query(Random(seed)))


def scoped_reads_ok(sql: str, accounts: list[str]) -> bool:
    """The oracle: every read of an account table in ``sql`` is exactly
    ``(SELECT * FROM <table> AS __oms_scope [FINAL] WHERE __oms_scope.account_id IN (...))``,
    and nothing but account tables, ``market_ticks`` and WITH names is read."""
    tree = parse_one(sql, read="clickhouse")
    ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
    wanted = ", ".join(f"'{a}'" for a in sorted(accounts))
    for table in tree.find_all(exp.Table):
        if table.name in ctes or (table.name == "market_ticks" and not table.db):
            continue
        if table.name not in ACCOUNT_TABLES or table.db or table.catalog:
            return False
        select = table.find_ancestor(exp.Select)
        if select is None or not isinstance(select.parent, exp.Subquery):
            return False
        final = " FINAL" if isinstance(table.parent, exp.Final) else ""
        expected = (
            f"SELECT * FROM {table.name} AS __oms_scope{final} "
            f"WHERE __oms_scope.account_id IN ({wanted})"
        )
        if select.sql(dialect="clickhouse") != expected:
            return False
    return True
