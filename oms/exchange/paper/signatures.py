"""Deribit's signed authentication, checked the way Deribit documents it: the HTTP
``Authorization: deri-hmac-sha256 id=ClientId,ts=Timestamp,sig=Signature,nonce=Nonce``
header and the ``client_signature`` grant of ``public/auth``.

Both sign ``Timestamp + "\\n" + Nonce + "\\n" + Data`` with the client secret
(:func:`oms.exchange.deribit.auth.signature`); over HTTP, Data is the request itself
(:func:`oms.exchange.deribit.auth.http_request_data`). A timestamp is valid for 60 seconds
after it was generated and a nonce is single use, so a captured request cannot be replayed.

Answers, from Deribit's error list (there is no dedicated code per cause; ``data.reason``
tells them apart):

* unknown client id: ``13004 invalid_credentials`` ("invalid credentials have been used");
* a signature that does not match, a timestamp 60 s old (or as far in the future) and a
  nonce used before: ``13009 unauthorized`` ("wrong or expired authorization token or bad
  signature").

Seen nonces are kept in memory for as long as their timestamp is valid: after a restart of
the exchange a request signed in the last minute could be replayed once (tokens do not
survive a restart either).
"""

from __future__ import annotations

import heapq
import hmac
from dataclasses import dataclass

from oms.exchange.deribit.auth import HTTP_SIGNATURE_SCHEME, signature
from oms.exchange.paper import errors
from oms.exchange.paper.errors import RpcError

VALIDITY_MS = 60_000


@dataclass(frozen=True, slots=True)
class SignedClaim:
    """Who claims to sign, when, with which nonce, and the signature they sent.
    ``timestamp`` is kept as sent: the signature covers those exact characters."""

    client_id: str
    timestamp: str
    nonce: str
    signature: str

    @property
    def timestamp_ms(self) -> int:
        try:
            return int(self.timestamp)
        except ValueError:
            raise RpcError(
                errors.INVALID_PARAMS, {"reason": "must be an integer", "param": "timestamp"}
            ) from None


def parse_authorization(value: str) -> SignedClaim:
    """The claim of a ``deri-hmac-sha256`` Authorization header value (without the scheme)."""
    fields: dict[str, str] = {}
    for part in value.split(","):
        key, sep, item = part.strip().partition("=")
        if sep:
            fields[key] = item
    missing = [k for k in ("id", "ts", "sig") if not fields.get(k)]
    if missing:
        raise RpcError(
            errors.UNAUTHORIZED,
            {"reason": f"malformed {HTTP_SIGNATURE_SCHEME} header: no {missing[0]}"},
        )
    return SignedClaim(fields["id"], fields["ts"], fields.get("nonce", ""), fields["sig"])


class NonceWindow:
    """Nonces each client id used while their timestamps are still valid (older ones
    cannot be replayed anyway: their timestamp is refused first)."""

    def __init__(self, validity_ms: int = VALIDITY_MS) -> None:
        self.validity_ms = validity_ms
        self._seen: set[tuple[str, str]] = set()
        self._expiry: list[tuple[int, tuple[str, str]]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def use(self, client_id: str, nonce: str, timestamp_ms: int, now_ms: int) -> bool:
        """Record a nonce; False if this client id used it before. A request without a
        nonce is single use by its timestamp."""
        while self._expiry and self._expiry[0][0] <= now_ms:
            self._seen.discard(heapq.heappop(self._expiry)[1])
        key = (client_id, nonce or f"@{timestamp_ms}")
        if key in self._seen:
            return False
        self._seen.add(key)
        heapq.heappush(self._expiry, (timestamp_ms + self.validity_ms, key))
        return True


def check(claim: SignedClaim, secret: str, data: str, nonces: NonceWindow, now_ms: int) -> None:
    """Raise Deribit's error unless ``claim`` is a fresh, valid signature of ``data``."""
    age = now_ms - claim.timestamp_ms
    if age >= nonces.validity_ms:
        raise RpcError(errors.UNAUTHORIZED, {"reason": "timestamp expired", "param": "timestamp"})
    if -age >= nonces.validity_ms:
        raise RpcError(
            errors.UNAUTHORIZED, {"reason": "timestamp in the future", "param": "timestamp"}
        )
    expected = signature(secret, claim.timestamp, claim.nonce, data)
    if not hmac.compare_digest(expected.encode(), claim.signature.lower().encode()):
        raise RpcError(errors.UNAUTHORIZED, {"reason": "invalid signature", "param": "signature"})
    if not nonces.use(claim.client_id, claim.nonce, claim.timestamp_ms, now_ms):
        raise RpcError(errors.UNAUTHORIZED, {"reason": "nonce already used", "param": "nonce"})
