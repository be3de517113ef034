"""Request authentication: HMAC-SHA256 signatures in Kafka headers, signing keys, nonces."""

from oms.auth.nonces import NonceStore
from oms.auth.signing import compute_signature, sign_headers, signing_payload
from oms.auth.verify import Authenticated, Authenticator

__all__ = [
    "Authenticated",
    "Authenticator",
    "NonceStore",
    "compute_signature",
    "sign_headers",
    "signing_payload",
]
