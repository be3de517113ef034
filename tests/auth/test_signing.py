"""Signing and verification without Kafka: canonical body, each refusal, redelivery."""

from __future__ import annotations

import orjson

from oms.auth import Authenticator, NonceStore, canonical_body, sign_request_obj
from oms.schemas import OrderRequest, ReasonCode, now_ms
from oms.secrets import SigningKey, SigningKeys, write_signing_keys
from oms.settings import RiskSettings
from oms.streams.validation import parse_request


def test_canonical_body_ignores_key_order_and_auth() -> None:
    a = {"b": 1, "a": {"y": 2.5, "x": None}, "auth": {"nonce": "n"}}
    b = {"a": {"x": None, "y": 2.5}, "b": 1}
    assert canonical_body(a) == canonical_body(b) == b'{"a":{"x":null,"y":2.5},"b":1}'


def test_verification(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "secrets.json"
    write_signing_keys(path, {"a": {"k1": "s3cret-key"}})
    keys = SigningKeys(path)
    key = keys.for_signing("a")
    assert key is not None and "s3cret" not in repr(key)
    auth = Authenticator(RiskSettings(), keys, NonceStore({}))
    request = OrderRequest(
        request_id="r1", account_id="a", instrument_name="X", amount=10, direction="buy"
    )
    raw = orjson.dumps(sign_request_obj(request.model_dump(mode="json"), key))

    def check(data: bytes, offset: int) -> ReasonCode | None:
        parsed = parse_request(data)
        assert isinstance(parsed, OrderRequest)
        rejection = auth.authenticate(parsed, data, offset=offset)
        return rejection.reason_code if rejection else None

    assert check(raw, 1) is None
    assert check(raw, 1) is None  # the same message redelivered
    assert check(raw, 2) is ReasonCode.NONCE_REUSED  # a replay: a new message
    tampered = raw.replace(b'"amount":10.0', b'"amount":20.0')
    assert tampered != raw and check(tampered, 3) is ReasonCode.SIGNATURE_INVALID
    assert check(request.to_bytes(), 4) is ReasonCode.SIGNATURE_MISSING
    other = SigningKey("a", "k2", b"x")
    assert check(orjson.dumps(sign_request_obj(request.model_dump(mode="json"), other)), 5) is (
        ReasonCode.UNKNOWN_KEY
    )
    old = sign_request_obj(request.model_dump(mode="json"), key, timestamp=now_ms() - 60_000)
    assert check(orjson.dumps(old), 6) is ReasonCode.STALE_REQUEST
