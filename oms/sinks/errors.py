"""Errors the query side reports to users."""

from __future__ import annotations


class QueryError(RuntimeError):
    """A query could not run; the message is meant for the user."""


class ReadOnlyViolation(QueryError, ValueError):
    """The SQL is not a single read-only statement."""
