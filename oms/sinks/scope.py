"""Desk scoping of ad-hoc SQL: a desk's query only ever reads its own accounts' rows.

The query is parsed with sqlglot (ClickHouse dialect) into a syntax tree, checked against
what a desk may do, and every table it reads is replaced by a filtered subquery::

    FROM orders AS o      ->  FROM (SELECT * FROM orders AS __oms_scope
                                    WHERE __oms_scope.account_id IN ('a1', 'a2')) AS o

ClickHouse then runs the SQL generated *from the checked tree*, never the text the desk
sent, so whatever the parser understood is exactly what runs: a comment, quoting or
case trick that the parser reads one way cannot reach ClickHouse another way. The
generated SQL is parsed again and checked against the invariant (:func:`check_scoped`)
before it runs.

The filter names the column through the inner alias (``__oms_scope.account_id``): a bare
``account_id`` could be captured by a ``WITH 'a' AS account_id`` of the desk's query, which
ClickHouse propagates into subqueries.

Refused, each with a reason code (:class:`ScopeViolation`):

* ``parse_error``, ``multiple_statements``, ``not_select``: one SELECT (with WITH, UNION,
  subqueries and JOINs) only; no SHOW/DESCRIBE/EXPLAIN/SET;
* ``table_function``: every table function (``file``, ``url``, ``remote``, ``s3``,
  ``cluster``, ``input``, ``numbers``, ``merge``, ...), and ``VALUES`` as a source: they read
  outside the allowed tables or are not needed by a desk;
* ``system_table`` (``system.*``, ``information_schema.*``) and ``other_database``: only
  the sink's own tables, unqualified;
* ``table_not_allowed``: a table outside :data:`SCOPED_TABLES` and
  :data:`REFERENCE_TABLES` (``dead_letters`` and ``metrics`` hold no account, and may hold
  any account's payloads or aggregate every account's activity), including a WITH name
  used where that WITH is not in scope (:func:`is_cte_reference`);
* ``in_table``: ``x IN some_table`` (ClickHouse reads the table by name);
* ``function_not_allowed``: functions that read data by name or from the host
  (:data:`DENIED_FUNCTIONS`);
* ``settings``, ``format``: ``SETTINGS`` and ``FORMAT`` clauses (the endpoint sets both);
* ``identifier_parameter``: a ``{name:Identifier}`` parameter, which ClickHouse fills in
  as a table or column name after this check;
* ``cte_shadows_table``: a ``WITH`` name that is also a table name (which one a reference
  means would depend on ClickHouse's scoping rules);
* ``reserved_name``: names starting with ``__oms`` are the rewrite's own;
* ``unsupported_clause``: table clauses the rewrite does not carry (anything but FINAL,
  SAMPLE and an alias);
* ``unsupported_query``: the SQL written back from the checked tree fails the invariant
  check, i.e. it would not be the query that was checked (sqlglot drops a ``WITH`` on a
  later ``UNION`` branch, for one).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError

from oms.sinks.errors import ReadOnlyViolation
from oms.sinks.sqlguard import check_read_only

DIALECT = "clickhouse"
ACCOUNT_COLUMN = "account_id"
SCOPE_ALIAS = "__oms_scope"
RESERVED_PREFIX = "__oms"

# Tables and views that hold an account: a desk reads them filtered to its accounts.
SCOPED_TABLES = frozenset({
    "orders", "order_events", "executions", "position_changes", "notifications",
    "positions_current", "positions", "position_daily", "position_daily_stats",
    "positions_marked", "positions_by_instrument", "positions_by_currency",
})  # fmt: skip
# Public reference data with no account in it: read unfiltered.
REFERENCE_TABLES = frozenset({"market_ticks"})
# Every other table the sink creates. A WITH may not take any of these names: which one a
# reference meant would depend on ClickHouse's scoping rules.
OTHER_TABLES = frozenset({
    "dead_letters", "metrics", "schema_migrations", "position_changes_json",
    "executions_json", "positions_current_mv", "position_daily_mv",
    "position_changes_json_mv", "executions_json_mv",
})  # fmt: skip
KNOWN_TABLES = SCOPED_TABLES | REFERENCE_TABLES | OTHER_TABLES

# Functions that read a table, dictionary, file or setting by name, or only stall the server.
DENIED_FUNCTIONS = frozenset({
    "file", "input", "url", "s3", "hdfs", "remote", "remotesecure", "cluster",
    "clusterallreplicas", "hascolumnintable", "getsetting", "getsettingordefault",
    "getmacro", "getclienthttpheader", "sleep", "sleepeachrow", "catboostevaluate",
})  # fmt: skip
DENIED_FUNCTION_PREFIXES = ("dictget", "dicthas", "dictisin", "joinget", "__")
# in(), globalIn(), notNullIn(), inIgnoreSet(), ...: the function forms of IN, which read a
# table named by their second argument.
IN_FUNCTION = re.compile(r"(global)?(not)?(null)?(not)?in(ignoreset)?")

SOURCE_ROOTS = (exp.Select, exp.SetOperation, exp.Subquery)
STATEMENT_NODES = (
    exp.Command, exp.Insert, exp.Create, exp.Drop, exp.Alter, exp.Set, exp.Delete,
    exp.Update, exp.Merge, exp.Into, exp.Use, exp.Describe, exp.Show,
)  # fmt: skip


class ScopeViolation(ReadOnlyViolation):
    """The query is refused for a desk; ``reason`` is a stable code for programs."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Scope:
    """Whose rows a query may read: ``accounts`` of ``desk``, or everything (``None``)."""

    desk: str | None
    accounts: frozenset[str] | None


EVERYTHING = Scope(desk=None, accounts=None)


def prepare_statement(sql: str, scope: Scope) -> str:
    """The SQL to run for ``scope``: the operator's as sent (one read-only statement,
    :func:`~oms.sinks.sqlguard.check_read_only`), a desk's rewritten by :func:`scope_sql`."""
    if scope.accounts is None:
        return check_read_only(sql)
    return scope_sql(sql, scope.accounts)


def parse_single(sql: str) -> exp.Expr:
    """The one statement in ``sql``, parsed; refuses parse errors and several statements."""
    try:
        statements = [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        where = f" (line {first.get('line')}, column {first.get('col')})" if first else ""
        detail = first.get("description") or "invalid SQL"
        raise ScopeViolation("parse_error", f"could not parse the query: {detail}{where}") from exc
    except SqlglotError as exc:
        raise ScopeViolation("parse_error", f"could not parse the query: {exc}") from exc
    except RecursionError as exc:
        raise ScopeViolation("parse_error", "the query is nested too deeply") from exc
    if not statements:
        raise ScopeViolation("parse_error", "empty query")
    if len(statements) > 1:
        raise ScopeViolation("multiple_statements", "only one statement per query")
    return statements[0]


def scope_sql(sql: str, accounts: Collection[str]) -> str:
    """``sql`` rewritten so every table it reads holds only ``accounts``' rows.

    Raises :class:`ScopeViolation` for anything a desk may not run (see the module doc).
    The result passed :func:`check_scoped`.
    """
    try:
        return _scope_sql(sql, accounts)
    except RecursionError as exc:
        raise ScopeViolation("parse_error", "the query is nested too deeply") from exc


def _scope_sql(sql: str, accounts: Collection[str]) -> str:
    tree = parse_single(sql)
    if not isinstance(tree, SOURCE_ROOTS):
        raise ScopeViolation("not_select", "only a SELECT query is allowed")
    _check(tree)
    # No WITH is named like a table (refused above), so these are all real tables.
    for table in [t for t in tree.find_all(exp.Table) if t.name in SCOPED_TABLES]:
        _wrap(table, accounts)
    scoped = tree.sql(dialect=DIALECT, comments=False)
    try:
        check_scoped(scoped, accounts)
    except ScopeViolation as exc:
        # The checked tree was scoped, so the SQL written from it says something else: a
        # construct the generator does not write back faithfully (a WITH on a later UNION
        # branch is dropped, for one). Refuse rather than run what was not checked.
        raise ScopeViolation(
            "unsupported_query",
            "this query cannot be scoped as written (a WITH inside a UNION branch? "
            "parenthesise that branch or move the WITH to the front)",
        ) from exc
    return scoped


def _check(tree: exp.Expr) -> None:
    """Refuse what a desk may not run."""
    for cte in tree.find_all(exp.CTE):
        name = cte.alias_or_name
        if name in KNOWN_TABLES:
            raise ScopeViolation("cte_shadows_table", f"WITH name {name!r} is a table name")
    for node in tree.walk():
        _check_node(node)


def is_cte_reference(table: exp.Table) -> bool:
    """Whether ``table`` names a WITH of an enclosing query (its own SELECT, a SELECT it is
    nested in, or a UNION led by a WITH). A WITH elsewhere (another UNION branch's
    subquery) does not count: ClickHouse would read a real table of that name."""
    if table.args.get("db") or table.args.get("catalog"):
        return False
    node = table.parent
    while node is not None:
        with_ = node.args.get("with_") or node.args.get("with")
        if isinstance(with_, exp.With) and any(
            cte.alias_or_name == table.name for cte in with_.expressions
        ):
            return True
        node = node.parent
    return False


def _check_node(node: exp.Expr) -> None:
    if isinstance(node, STATEMENT_NODES):
        raise ScopeViolation("not_select", f"{node.key.upper()} is not allowed")
    if isinstance(node, exp.Identifier) and node.name.lower().startswith(RESERVED_PREFIX):
        raise ScopeViolation("reserved_name", f"names starting with {RESERVED_PREFIX} are reserved")
    if isinstance(node, (exp.Select, exp.SetOperation, exp.Subquery)):
        if node.args.get("settings"):
            raise ScopeViolation("settings", "SETTINGS clauses are not allowed")
        if node.args.get("format"):
            raise ScopeViolation("format", "FORMAT clauses are not allowed")
    if isinstance(node, exp.Placeholder) and not isinstance(node.args.get("kind"), exp.DataType):
        raise ScopeViolation(
            "identifier_parameter", "query parameters must be values, not identifiers"
        )
    if isinstance(node, exp.In) and _in_names_a_table(node):
        raise ScopeViolation("in_table", "IN <table> is not allowed: use IN (SELECT ...)")
    if isinstance(node, exp.Func):
        name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
        if (
            name in DENIED_FUNCTIONS
            or name.startswith(DENIED_FUNCTION_PREFIXES)
            or IN_FUNCTION.fullmatch(name)
        ):
            raise ScopeViolation("function_not_allowed", f"function {name}() is not allowed")
    if isinstance(node, (exp.Values, exp.Unnest, exp.Lateral, exp.TableFromRows)):
        raise ScopeViolation("table_function", f"{node.key.upper()} is not allowed as a source")
    if isinstance(node, exp.Table):
        _check_table(node)


def _in_names_a_table(node: exp.In) -> bool:
    """``x IN t``, ``x IN (t)``, ``x IN ((t) AS a)``: ClickHouse reads a table named by a
    lone identifier on the right of IN (a list of two or more names is a tuple)."""
    if node.args.get("field") is not None:
        return True
    items = node.args.get("expressions") or []
    if len(items) != 1:
        return False
    item = items[0]
    while isinstance(item, (exp.Paren, exp.Alias)):
        item = item.this
    return isinstance(item, exp.Column)


def _check_table(table: exp.Table) -> None:
    if isinstance(table.this, exp.Placeholder):
        raise ScopeViolation(
            "identifier_parameter", "query parameters must be values, not identifiers"
        )
    if not isinstance(table.this, exp.Identifier):
        raise ScopeViolation("table_function", "table functions are not allowed")
    database = (table.text("catalog") or table.text("db")).lower()
    if database in {"system", "information_schema"}:
        raise ScopeViolation("system_table", f"{database} tables are not allowed")
    if database:
        raise ScopeViolation("other_database", "only the sink's own tables, unqualified")
    extra = {k for k, v in table.args.items() if v and k not in {"this", "alias", "sample"}}
    if extra:
        raise ScopeViolation("unsupported_clause", f"unsupported table clause: {sorted(extra)}")
    name = table.name
    if name in SCOPED_TABLES or name in REFERENCE_TABLES or is_cte_reference(table):
        return
    raise ScopeViolation("table_not_allowed", f"table {name!r} is not readable by a desk")


def account_filter(accounts: Collection[str]) -> exp.Expr:
    """``__oms_scope.account_id IN (...)``, or FALSE for a desk without accounts."""
    if not accounts:
        return exp.false()
    column = exp.column(ACCOUNT_COLUMN, table=SCOPE_ALIAS)
    return column.isin(*[exp.Literal.string(a) for a in sorted(accounts)])


def _wrap(table: exp.Table, accounts: Collection[str]) -> None:
    """Replace ``table`` (with its FINAL, if any) by a filtered subquery of the same alias."""
    # Allow-listed names are plain identifiers: written unquoted.
    inner = exp.Table(
        this=exp.to_identifier(table.name),
        alias=exp.TableAlias(this=exp.to_identifier(SCOPE_ALIAS)),
    )
    if table.args.get("sample"):
        inner.set("sample", table.args["sample"].copy())
    source: exp.Expr = inner
    target: exp.Expr = table
    if isinstance(table.parent, exp.Final):
        source = exp.Final(this=inner)
        target = table.parent
    alias = table.alias or table.name
    select = exp.select(exp.Star()).from_(source).where(account_filter(accounts))
    target.replace(exp.Subquery(this=select, alias=exp.TableAlias(this=exp.to_identifier(alias))))


def check_scoped(sql: str, accounts: Collection[str]) -> None:
    """Raise :class:`ScopeViolation` unless every scoped table read in ``sql`` is the
    ``FROM`` of a SELECT filtered by exactly ``accounts`` (the rewrite's invariant), and no
    other table is read but reference data or WITH names. It checks the output of
    :func:`scope_sql`, whose input passed every other check."""
    tree = parse_single(sql)
    expected = account_filter(accounts)
    for table in tree.find_all(exp.Table):
        qualified = table.args.get("db") or table.args.get("catalog")
        if not qualified and (table.name in REFERENCE_TABLES or is_cte_reference(table)):
            continue
        if qualified or table.name not in SCOPED_TABLES or table.alias != SCOPE_ALIAS:
            raise ScopeViolation("not_scoped", f"table {table.name!r} is read unfiltered")
        source = table.parent.parent if isinstance(table.parent, exp.Final) else table.parent
        select = source.parent if isinstance(source, exp.From) else None
        where = select.args.get("where") if isinstance(select, exp.Select) else None
        if (
            select is None
            or select.args.get("joins")
            or where is None
            or where.this != expected
            or not isinstance(select.parent, exp.Subquery)
        ):
            raise ScopeViolation("not_scoped", f"table {table.name!r} is read unfiltered")
