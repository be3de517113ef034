"""Canonical body and HMAC-SHA256 signature of an order request.

The signature covers the key id, the timestamp, the nonce and the *canonical body*: the
request's JSON object exactly as sent, without its ``auth`` field, serialized by orjson with
sorted keys (compact, no spaces). A client in another language reproduces it by sorting keys
recursively and writing compact JSON with the shortest round-trip float representation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import orjson

from oms.schemas import OrderRequest, now_ms
from oms.schemas.auth import RequestAuth
from oms.secrets import SigningKey

# Bumped if the signed payload ever changes shape, so old and new signatures never collide.
SIGNATURE_SCHEME = b"oms-hmac-sha256-v1"


def canonical_body(obj: dict[str, Any]) -> bytes:
    """The signed form of a request object: without ``auth``, keys sorted, compact JSON."""
    body = {k: v for k, v in obj.items() if k != "auth"}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def signing_payload(key_id: str, timestamp: int, nonce: str, body: bytes) -> bytes:
    """Everything the HMAC covers, newline separated (none of the parts may hold one)."""
    return b"\n".join(
        (SIGNATURE_SCHEME, key_id.encode(), str(timestamp).encode(), nonce.encode(), body)
    )


def compute_signature(secret: bytes, key_id: str, timestamp: int, nonce: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the signing payload."""
    payload = signing_payload(key_id, timestamp, nonce, body)
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def new_nonce() -> str:
    """128 random bits, URL-safe: never repeats in practice."""
    return secrets.token_urlsafe(16)


def sign_request_obj(
    obj: dict[str, Any], key: SigningKey, *, timestamp: int | None = None, nonce: str | None = None
) -> dict[str, Any]:
    """``obj`` (a request as a JSON object) with an ``auth`` field signing it."""
    ts = now_ms() if timestamp is None else timestamp
    nonce = nonce or new_nonce()
    signature = compute_signature(key.secret, key.key_id, ts, nonce, canonical_body(obj))
    auth = RequestAuth(key_id=key.key_id, timestamp=ts, nonce=nonce, signature=signature)
    return {**{k: v for k, v in obj.items() if k != "auth"}, "auth": auth.model_dump(mode="json")}


def signed_request_bytes(request: OrderRequest, key: SigningKey) -> bytes:
    """The wire bytes of ``request`` signed with ``key`` (what the SDK publishes)."""
    obj = request.model_dump(mode="json", exclude={"auth"})
    return orjson.dumps(sign_request_obj(obj, key))
