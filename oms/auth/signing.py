"""HMAC-SHA256 signature of an order request: the exact bytes sent, signed in Kafka headers.

A request is signed over the very bytes of the Kafka record's value, so no client has to
reproduce a canonical JSON form (key order, number formatting): whatever bytes it sends are
what it signs. The signature and what it covers travel in four record headers:

==================  ===========================================================
``oms-key-id``      the account's signing key id
``oms-timestamp``   the signer's clock, milliseconds since the epoch (decimal)
``oms-nonce``       single-use, 8-64 characters of ``[A-Za-z0-9_-]``
``oms-signature``   lower-case hex HMAC-SHA256 of the string to sign, keyed by the signing key
==================  ===========================================================

The string to sign is ``"oms-hmac-sha256-v2\\n" + key_id + "\\n" + timestamp + "\\n" + nonce
+ "\\n"`` followed by the value bytes. With plain tools::

    { printf 'oms-hmac-sha256-v2\\n%s\\n%s\\n%s\\n' "$KEY_ID" "$TS" "$NONCE"; cat body.json; } \\
        | openssl dgst -sha256 -hmac "$KEY" -r | cut -d' ' -f1

(``examples/signing/`` has test vectors and that script; a test checks both.)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from oms.schemas import OrderRequest, now_ms
from oms.secrets import SigningKey, SigningKeys

# Bumped if the signed string ever changes shape, so old and new signatures never collide.
SIGNATURE_SCHEME = b"oms-hmac-sha256-v2"

HEADER_KEY_ID = "oms-key-id"
HEADER_TIMESTAMP = "oms-timestamp"
HEADER_NONCE = "oms-nonce"
HEADER_SIGNATURE = "oms-signature"
SIGNATURE_HEADERS = (HEADER_KEY_ID, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)

_KEY_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_NONCE = re.compile(r"^[A-Za-z0-9_\-]{8,64}$")
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,15}$")

Headers = Iterable[tuple[str, bytes]] | Mapping[str, bytes]


@dataclass(frozen=True)
class RequestSignature:
    """The four signature headers of a record, checked for shape (not yet verified)."""

    key_id: str
    timestamp: int
    nonce: str
    signature: str


def signing_payload(key_id: str, timestamp: int, nonce: str, value: bytes) -> bytes:
    """Everything the HMAC covers: the scheme, key id, timestamp and nonce on a line each,
    then the value bytes exactly as sent."""
    head = b"\n".join((SIGNATURE_SCHEME, key_id.encode(), str(timestamp).encode(), nonce.encode()))
    return head + b"\n" + value


def compute_signature(secret: bytes, key_id: str, timestamp: int, nonce: str, value: bytes) -> str:
    """Lower-case hex HMAC-SHA256 of :func:`signing_payload`."""
    payload = signing_payload(key_id, timestamp, nonce, value)
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def new_nonce() -> str:
    """128 random bits, URL-safe: never repeats in practice."""
    return secrets.token_urlsafe(16)


def sign_headers(
    value: bytes, key: SigningKey, *, timestamp: int | None = None, nonce: str | None = None
) -> list[tuple[str, bytes]]:
    """The Kafka headers that sign ``value`` with ``key`` (fresh timestamp and nonce)."""
    ts = now_ms() if timestamp is None else timestamp
    nonce = nonce or new_nonce()
    signature = compute_signature(key.secret, key.key_id, ts, nonce, value)
    return [
        (HEADER_KEY_ID, key.key_id.encode()),
        (HEADER_TIMESTAMP, str(ts).encode()),
        (HEADER_NONCE, nonce.encode()),
        (HEADER_SIGNATURE, signature.encode()),
    ]


class SignatureHeaderError(ValueError):
    """Signature headers that are present but malformed (the message says which)."""


def read_signature(headers: Headers | None) -> RequestSignature | None:
    """The signature headers of a record: ``None`` if it carries none of them; raises
    :class:`SignatureHeaderError` if some are missing, repeated or malformed."""
    items = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
    found: dict[str, str] = {}
    for name, raw in items:
        if name not in SIGNATURE_HEADERS:
            continue
        if name in found:
            raise SignatureHeaderError(f"header {name} appears more than once")
        try:
            found[name] = bytes(raw or b"").decode("ascii")
        except UnicodeDecodeError as exc:
            raise SignatureHeaderError(f"header {name} is not ASCII") from exc
    if not found:
        return None
    missing = [name for name in SIGNATURE_HEADERS if name not in found]
    if missing:
        raise SignatureHeaderError(f"missing header(s) {', '.join(missing)}")
    checks = (
        (HEADER_KEY_ID, _KEY_ID, "1-64 characters of [A-Za-z0-9_.:-]"),
        (HEADER_TIMESTAMP, _TIMESTAMP, "milliseconds since the epoch, decimal"),
        (HEADER_NONCE, _NONCE, "8-64 characters of [A-Za-z0-9_-]"),
        (HEADER_SIGNATURE, _SIGNATURE, "64 lower-case hex digits"),
    )
    for name, pattern, shape in checks:
        if not pattern.match(found[name]):
            raise SignatureHeaderError(f"header {name} must be {shape}")
    return RequestSignature(
        key_id=found[HEADER_KEY_ID],
        timestamp=int(found[HEADER_TIMESTAMP]),
        nonce=found[HEADER_NONCE],
        signature=found[HEADER_SIGNATURE],
    )


class RequestSigner:
    """Signs the requests of every account that has a signing key in the secrets store
    (what a producer serving several desks needs); an account without one is sent unsigned,
    for trusted mode."""

    def __init__(self, keys: SigningKeys) -> None:
        self._keys = keys
        self._cache: dict[str, SigningKey | None] = {}

    def key_of(self, account_id: str) -> SigningKey | None:
        """The key ``account_id`` signs with, if it has one."""
        if account_id not in self._cache:
            self._cache[account_id] = self._keys.for_signing(account_id)
        return self._cache[account_id]

    def message(self, request: OrderRequest) -> tuple[bytes, list[tuple[str, bytes]]]:
        """A request's wire form: its JSON value and the headers signing those exact bytes
        (fresh timestamp and nonce each call)."""
        value = request.to_bytes()
        key = self.key_of(request.account_id)
        return value, (sign_headers(value, key) if key is not None else [])
