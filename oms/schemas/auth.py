"""Request authentication carried on an order request (issue 9)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from oms.schemas.base import Record

# A signature is HMAC-SHA256 as lower-case hex.
SIGNATURE_HEX_CHARS = 64


class RequestAuth(Record):
    """Who signed a request, when, with which single-use nonce, and the HMAC itself.

    ``signature`` = hex HMAC-SHA256 with the account's signing key ``key_id`` over
    :func:`oms.auth.signing.signing_payload` (key id, timestamp, nonce and the canonical
    body: the request's JSON object minus ``auth``, keys sorted, compact).
    """

    key_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
    timestamp: int = Field(description="signer's clock, ms since the epoch")
    nonce: Annotated[str, Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
    signature: Annotated[
        str,
        Field(
            min_length=SIGNATURE_HEX_CHARS,
            max_length=SIGNATURE_HEX_CHARS,
            pattern=r"^[0-9a-f]+$",
        ),
    ]
