"""Request authentication at the edge: signature, key and freshness. Stateless.

Order of checks, each with its reason code:

1. no signature headers -> ``signature_missing``; malformed ones -> ``signature_invalid``;
2. ``key_id`` is not a signing key of the request's account -> ``unknown_key``;
3. the HMAC does not match the value bytes -> ``signature_invalid`` (constant-time);
4. the request was signed more than ``max_request_age_s`` before it reached the broker, or
   more than ``max_clock_skew_s`` after -> ``stale_request``.

Nonces (replays within the freshness window) are checked where the order's state lives,
by intake on the order's partition: see :mod:`oms.auth.nonces`. Messages and logs name the
account and key id, never a key or a signature.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import structlog

from oms.auth.signing import (
    SIGNATURE_HEADERS,
    Headers,
    RequestSignature,
    SignatureHeaderError,
    compute_signature,
    read_signature,
)
from oms.schemas import ReasonCode
from oms.schemas.rejection import Rejection
from oms.secrets import SigningKeys
from oms.settings import RiskSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Authenticated:
    """A request whose signature checked out: who signed it, when, with which nonce."""

    key_id: str
    nonce: str
    signed_at: int


class Authenticator:
    """Verifies signed requests against the account's signing keys."""

    def __init__(self, settings: RiskSettings, keys: SigningKeys) -> None:
        self._settings = settings
        self._keys = keys
        self._max_age_ms = int(settings.max_request_age_s * 1000)
        self._max_skew_ms = int(settings.max_clock_skew_s * 1000)

    def authenticate(
        self, account_id: str, value: bytes, headers: Headers | None, *, reference_ms: int
    ) -> Authenticated | Rejection:
        """Check the signature headers of a record whose value is ``value``.

        ``reference_ms`` is when the request reached the broker (the record's log-append
        time), so a backlog at the edge never turns a request stale.
        """
        try:
            signature = read_signature(headers)
        except SignatureHeaderError as exc:
            return self._refused(
                Rejection(ReasonCode.SIGNATURE_INVALID, str(exc)), account_id, None
            )
        if signature is None:
            names = ", ".join(SIGNATURE_HEADERS)
            return self._refused(
                Rejection(ReasonCode.SIGNATURE_MISSING, f"request is not signed (headers {names})"),
                account_id,
                None,
            )
        rejection = self._verify(account_id, value, signature, reference_ms)
        if rejection is not None:
            return self._refused(rejection, account_id, signature.key_id)
        return Authenticated(signature.key_id, signature.nonce, signature.timestamp)

    def _verify(
        self, account_id: str, value: bytes, sig: RequestSignature, reference_ms: int
    ) -> Rejection | None:
        key = self._keys.lookup(account_id, sig.key_id)
        if key is None:
            return Rejection(
                ReasonCode.UNKNOWN_KEY,
                f"key id {sig.key_id!r} is not a signing key of account {account_id!r}",
            )
        expected = compute_signature(key.secret, sig.key_id, sig.timestamp, sig.nonce, value)
        if not hmac.compare_digest(expected, sig.signature):
            return Rejection(
                ReasonCode.SIGNATURE_INVALID, "signature does not match the request bytes"
            )
        age = reference_ms - sig.timestamp
        if age > self._max_age_ms:
            return Rejection(
                ReasonCode.STALE_REQUEST,
                f"signed {age / 1000:.1f} s before it was published, more than "
                f"{self._settings.max_request_age_s} s",
            )
        if -age > self._max_skew_ms:
            return Rejection(
                ReasonCode.STALE_REQUEST,
                f"signed {-age / 1000:.1f} s in the future, more than "
                f"{self._settings.max_clock_skew_s} s ahead",
            )
        return None

    @staticmethod
    def _refused(rejection: Rejection, account_id: str, key_id: str | None) -> Rejection:
        log.warning(
            "auth.rejected",
            reason=rejection.reason_code.value,
            account_id=account_id,
            key_id=key_id,
        )
        return rejection
