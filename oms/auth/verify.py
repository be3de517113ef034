"""Request authentication at intake: signature, key, freshness, nonce. Runs first.

Order of checks, each with its reason code:

1. no ``auth`` on the request -> ``signature_missing``;
2. ``key_id`` is not a signing key of the request's account -> ``unknown_key``;
3. the HMAC does not match the canonical body -> ``signature_invalid`` (constant-time);
4. the nonce was accepted before for this order id at another offset -> ``nonce_reused``;
5. the timestamp is older than ``max_request_age_s`` or more than ``max_clock_skew_s`` in the
   future -> ``stale_request``.

The signature is checked before the nonce store is read or written, so forged requests cannot
fill it. Messages and logs name the account, key id and order id, never a key or signature.
"""

from __future__ import annotations

import hmac
from typing import Any

import orjson
import structlog

from oms.auth.nonces import NonceStore
from oms.auth.signing import canonical_body, compute_signature
from oms.schemas import OrderRequest, ReasonCode, now_ms
from oms.secrets import SigningKeys
from oms.settings import RiskSettings
from oms.streams.validation import Rejection

log = structlog.get_logger(__name__)


class Authenticator:
    """Verifies signed requests against the account's signing keys and the nonce store."""

    def __init__(self, settings: RiskSettings, keys: SigningKeys, nonces: NonceStore) -> None:
        self._settings = settings
        self._keys = keys
        self._nonces = nonces
        self.trusted = settings.auth_mode == "trusted"
        self._max_age_ms = int(settings.max_request_age_s * 1000)
        self._max_skew_ms = int(settings.max_clock_skew_s * 1000)

    def authenticate(
        self,
        request: OrderRequest,
        raw: bytes,
        *,
        offset: int | None = None,
        reference_ms: int | None = None,
    ) -> Rejection | None:
        """``None`` if ``request`` (parsed from ``raw``) is authentic, fresh and not a replay.

        ``offset`` is the message's offset in its partition (tells a redelivery from a
        replay); ``reference_ms`` is the time freshness is judged against (default: now; the
        worker passes the record's timestamp for messages that were already on the topic
        when it took the partition over, so a takeover does not turn them stale).
        """
        if self.trusted:
            return None
        rejection = self._verify(request, raw, offset, reference_ms)
        if rejection is not None:
            log.warning(
                "auth.rejected",
                reason=rejection.reason_code.value,
                account_id=request.account_id,
                key_id=request.auth.key_id if request.auth else None,
                order_id=request.order_id,
                request_id=request.request_id,
            )
        return rejection

    def _verify(
        self, request: OrderRequest, raw: bytes, offset: int | None, reference_ms: int | None
    ) -> Rejection | None:
        auth = request.auth
        if auth is None:
            return Rejection(ReasonCode.SIGNATURE_MISSING, "request is not signed")
        key = self._keys.lookup(request.account_id, auth.key_id)
        if key is None:
            return Rejection(
                ReasonCode.UNKNOWN_KEY,
                f"key id {auth.key_id!r} is not a signing key of account {request.account_id!r}",
            )
        obj: dict[str, Any] = orjson.loads(raw)  # parse_request accepted it: a JSON object
        expected = compute_signature(
            key.secret, auth.key_id, auth.timestamp, auth.nonce, canonical_body(obj)
        )
        if not hmac.compare_digest(expected, auth.signature):
            return Rejection(
                ReasonCode.SIGNATURE_INVALID, "signature does not match the request body"
            )
        order_id = request.key
        seen = self._nonces.check(order_id, auth.nonce, offset)
        if seen.replay:
            return Rejection(
                ReasonCode.NONCE_REUSED, f"nonce already used for order {order_id}: a replay"
            )
        if seen.redelivery:
            return None  # this very message was accepted before (at-least-once redelivery)
        now = reference_ms if reference_ms is not None else now_ms()
        age = now - auth.timestamp
        if age > self._max_age_ms:
            return Rejection(
                ReasonCode.STALE_REQUEST,
                f"signed {age / 1000:.1f} s ago, more than {self._settings.max_request_age_s} s",
            )
        if -age > self._max_skew_ms:
            return Rejection(
                ReasonCode.STALE_REQUEST,
                f"signed {-age / 1000:.1f} s in the future, more than "
                f"{self._settings.max_clock_skew_s} s ahead",
            )
        self._nonces.remember(order_id, auth.nonce, offset)
        return None
