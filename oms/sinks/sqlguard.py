"""Admission check for ad-hoc SQL: one read-only statement, nothing else.

``readonly=1`` on the session is the real enforcement; this check gives a clear error
early and closes what readonly does not: several statements in one request (chDB runs
them all) and ``INTO OUTFILE`` (chDB writes the file on the sink's host).
"""

from __future__ import annotations

import itertools
import re

from oms.sinks.errors import ReadOnlyViolation

READ_ONLY_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN"})
_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")


def _code_only(sql: str) -> str:
    """``sql`` with string literals, quoted identifiers and comments blanked out (same
    length, so positions in the result are positions in ``sql``)."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`":
            j = i + 1
            while j < n:
                if sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == ch:
                    if j + 1 < n and sql[j + 1] == ch:  # doubled quote inside the literal
                        j += 2
                        continue
                    break
                j += 1
            if j >= n:
                raise ReadOnlyViolation("unterminated quoted string or identifier")
            out.append(" " * (j + 1 - i))
            i = j + 1
        elif sql.startswith("--", i):
            # '#' comments are left alone: misreading one only ever rejects a query.
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            if j < 0:
                raise ReadOnlyViolation("unterminated comment")
            out.append(" " * (j + 2 - i))
            i = j + 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def check_read_only(sql: str) -> str:
    """Return ``sql`` without a trailing ``;`` if it is one SELECT/WITH/SHOW/DESCRIBE/EXPLAIN
    statement; raise :class:`ReadOnlyViolation` with the reason otherwise."""
    code = _code_only(sql)
    head, sep, tail = code.partition(";")
    if sep and tail.strip(" \t\r\n;"):
        raise ReadOnlyViolation("only one statement per query")
    words = [w.upper() for w in _WORD.findall(head)]
    if not words:
        raise ReadOnlyViolation("empty query")
    if words[0] not in READ_ONLY_KEYWORDS:
        allowed = ", ".join(sorted(READ_ONLY_KEYWORDS))
        raise ReadOnlyViolation(f"{words[0]} is not allowed: read-only queries only ({allowed})")
    if any(a == "INTO" and b == "OUTFILE" for a, b in itertools.pairwise(words)):
        raise ReadOnlyViolation("INTO OUTFILE is not allowed")
    if sep:
        # Cut at the first top-level ';' (positions in ``code`` match ``sql``).
        return sql[: len(head)].strip()
    return sql.strip()
