"""Request authentication (issue 9): HMAC-SHA256 signatures, signing keys, nonces."""

from oms.auth.nonces import NonceStore
from oms.auth.signing import (
    canonical_body,
    compute_signature,
    sign_request_obj,
    signed_request_bytes,
)
from oms.auth.verify import Authenticator
from oms.schemas.auth import RequestAuth

__all__ = [
    "Authenticator",
    "NonceStore",
    "RequestAuth",
    "canonical_body",
    "compute_signature",
    "sign_request_obj",
    "signed_request_bytes",
]
