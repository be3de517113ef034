"""Who is asking: the query endpoint's bearer token, resolved to a desk's accounts.

With ``Settings.desks`` empty there is one operator and the endpoint is open as it always
was (no token needed, every row visible). With desks configured every request needs
``Authorization: Bearer <token>``: a desk's token (``QueryTokens``) reads only that desk's
accounts, the operator's token reads everything; anything else is refused before any SQL
is looked at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from oms.secrets import QueryTokens
from oms.sinks.errors import QueryError
from oms.sinks.scope import EVERYTHING, Scope

BEARER = "bearer "


class AccessDenied(QueryError):
    """No valid token; ``reason`` is a stable code, ``status`` the HTTP status to answer."""

    def __init__(self, reason: str, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class QueryAccess:
    """Maps an ``Authorization`` header to the :class:`Scope` of a query."""

    def __init__(self, desks: Mapping[str, Sequence[str]], tokens: QueryTokens) -> None:
        self._desks = {desk: frozenset(accounts) for desk, accounts in desks.items()}
        self._tokens = tokens

    @property
    def enforced(self) -> bool:
        """Whether tokens are required (desks are configured)."""
        return bool(self._desks)

    def scope_for(self, authorization: str | None) -> Scope:
        """The scope of a request with this ``Authorization`` header value."""
        if not self.enforced:
            return EVERYTHING
        if not authorization or not authorization.lower().startswith(BEARER):
            raise AccessDenied("missing_token", "an 'Authorization: Bearer <token>' is required")
        principal = self._tokens.identify(authorization[len(BEARER) :].strip())
        if principal is None:
            raise AccessDenied("invalid_token", "the token matches no desk")
        if principal.desk is None:
            return EVERYTHING
        return Scope(desk=principal.desk, accounts=self._desks.get(principal.desk, frozenset()))
