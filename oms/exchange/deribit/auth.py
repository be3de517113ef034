"""Session tokens for ``public/auth``: login (client credentials or a client signature),
refresh before expiry, and Deribit's request signatures.

Over WebSocket, ``public/auth`` authenticates the connection itself, so private calls carry no
token; the tokens matter only to refresh the session before Deribit expires it. A new connection
always logs in again (connection-scoped tokens don't carry over).

Two grants log in with the API key: ``client_credentials`` sends the client secret itself;
``client_signature`` sends an HMAC-SHA256 of a timestamp and a fresh nonce keyed by the secret,
so the secret never leaves the process. The same signature, over the request instead, is
Deribit's HTTP ``Authorization: deri-hmac-sha256`` scheme (docs.deribit.com, "Authentication"):

    Signature    = HEX(HMAC-SHA256(ClientSecret, Timestamp + "\n" + Nonce + "\n" + Data))
    Data (HTTP)  = UPPERCASE(method) + "\n" + URI with its query + "\n" + body + "\n"

Nothing here may print a secret: :class:`AuthState` has a redacting ``repr`` and the param dicts
it builds are never logged by the client.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

from oms.secrets import Credentials
from oms.settings import AuthGrant

AUTH_METHOD = "public/auth"
HTTP_SIGNATURE_SCHEME = "deri-hmac-sha256"
# Refresh when this share of the token's lifetime has passed, but at least this many seconds early.
REFRESH_AT_FRACTION = 0.8
REFRESH_MIN_LEAD_S = 30.0


def credentials_params(credentials: Credentials) -> dict[str, Any]:
    """``public/auth`` params for a client-credentials login."""
    return {
        "grant_type": "client_credentials",
        "client_id": credentials.client_id,
        "client_secret": credentials.client_secret,
    }


def signature(secret: str, timestamp: int | str, nonce: str, data: str) -> str:
    """Deribit's signature of ``data`` at ``timestamp`` (ms) with ``nonce``: the hex
    HMAC-SHA256 of ``Timestamp\nNonce\nData`` keyed by the client secret."""
    message = f"{timestamp}\n{nonce}\n{data}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def http_request_data(method: str, uri: str, body: str) -> str:
    """What an HTTP signature covers: the method, the URI (path and query, as sent) and the
    body, each followed by a newline."""
    return f"{method.upper()}\n{uri}\n{body}\n"


def new_nonce() -> str:
    """A fresh single-use nonce."""
    return secrets.token_urlsafe(12)


def signature_params(
    credentials: Credentials, timestamp_ms: int | None = None, nonce: str | None = None,
    data: str = "",
) -> dict[str, Any]:
    """``public/auth`` params for a client-signature login: the secret itself is not sent."""
    ts = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
    nonce = new_nonce() if nonce is None else nonce
    return {
        "grant_type": "client_signature",
        "client_id": credentials.client_id,
        "timestamp": ts,
        "nonce": nonce,
        "data": data,
        "signature": signature(credentials.client_secret, ts, nonce, data),
    }


def login_params(credentials: Credentials, grant: AuthGrant) -> dict[str, Any]:
    """``public/auth`` params for a fresh login with ``grant``."""
    if grant == "client_signature":
        return signature_params(credentials)
    return credentials_params(credentials)


class AuthState:
    """The current session's tokens and when to refresh them."""

    __slots__ = ("_access_token", "_refresh_token", "expires_at", "refresh_at", "scope")

    def __init__(self) -> None:
        self._access_token: str | None = None
        self._refresh_token: str | None = None
        self.expires_at = 0.0
        self.refresh_at = 0.0
        self.scope = ""

    @property
    def authenticated(self) -> bool:
        """Whether a token was granted and has not expired yet."""
        return self._access_token is not None and time.monotonic() < self.expires_at

    @property
    def has_refresh_token(self) -> bool:
        """Whether a refresh-token grant is possible."""
        return self._refresh_token is not None

    def refresh_params(self) -> dict[str, Any]:
        """``public/auth`` params for a refresh-token grant."""
        if self._refresh_token is None:
            raise RuntimeError("no refresh token")
        return {"grant_type": "refresh_token", "refresh_token": self._refresh_token}

    def update(self, result: dict[str, Any]) -> None:
        """Store a ``public/auth`` result and compute the next refresh time."""
        now = time.monotonic()
        expires_in = float(result.get("expires_in") or 0.0)
        self._access_token = result.get("access_token")
        self._refresh_token = result.get("refresh_token") or self._refresh_token
        self.scope = str(result.get("scope", ""))
        self.expires_at = now + expires_in
        lead = max(expires_in * (1.0 - REFRESH_AT_FRACTION), REFRESH_MIN_LEAD_S)
        # A token shorter-lived than the lead refreshes at half its life rather than at once.
        self.refresh_at = now + (expires_in - lead if expires_in > 2 * lead else expires_in / 2)

    def clear(self) -> None:
        """Forget the tokens (the connection they belonged to is gone)."""
        self._access_token = None
        self._refresh_token = None
        self.expires_at = 0.0
        self.refresh_at = 0.0
        self.scope = ""

    def seconds_until_refresh(self) -> float:
        """Seconds from now until the refresh is due (0 if overdue)."""
        return max(0.0, self.refresh_at - time.monotonic())

    def __repr__(self) -> str:
        return f"AuthState(authenticated={self.authenticated}, scope={self.scope!r})"
