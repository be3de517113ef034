"""Signing and verification without Kafka: the committed test vectors, the shell examples
that reproduce them with openssl and b2sum, each refusal, and replay versus redelivery."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from oms.auth import Authenticated, Authenticator, NonceStore, compute_signature, sign_headers
from oms.auth.signing import signing_payload
from oms.orders.validation import parse_request
from oms.schemas import OrderRequest, ReasonCode, derive_order_id, now_ms
from oms.schemas.rejection import Rejection
from oms.secrets import SigningKey, SigningKeys, write_signing_keys
from oms.settings import RiskSettings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "signing"
VECTORS = json.loads((EXAMPLES / "vectors.json").read_text())


@pytest.mark.parametrize("vector", VECTORS["signatures"], ids=lambda v: v["description"][:40])
def test_signature_vectors(vector: dict[str, object]) -> None:
    value = str(vector["value"]).encode()
    key_id, ts, nonce = str(vector["key_id"]), int(str(vector["timestamp"])), str(vector["nonce"])
    assert signing_payload(key_id, ts, nonce, value) == str(vector["string_to_sign"]).encode()
    signature = compute_signature(str(vector["key"]).encode(), key_id, ts, nonce, value)
    assert signature == vector["signature"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
@pytest.mark.parametrize("vector", VECTORS["signatures"], ids=lambda v: v["description"][:40])
def test_the_openssl_example_signs_like_the_oms(vector: dict[str, object], tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(str(vector["value"]).encode())
    args = [str(vector[k]) for k in ("key_id", "key", "timestamp", "nonce")]
    out = subprocess.run(
        ["sh", str(EXAMPLES / "sign.sh"), *args, str(body)],
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == vector["signature"]


@pytest.mark.parametrize("vector", VECTORS["order_ids"], ids=lambda v: v["request_id"])
def test_order_id_vectors_and_the_b2sum_example(vector: dict[str, str]) -> None:
    assert derive_order_id(vector["account_id"], vector["request_id"]) == vector["order_id"]
    if shutil.which("b2sum") is None:
        pytest.skip("b2sum is not installed")
    out = subprocess.run(
        ["sh", str(EXAMPLES / "order_id.sh"), vector["account_id"], vector["request_id"]],
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == vector["order_id"]


def test_a_vector_request_parses_and_gets_its_derived_order_id() -> None:
    parsed = parse_request(str(VECTORS["signatures"][0]["value"]).encode())
    assert isinstance(parsed, OrderRequest)
    assert parsed.amount == 10.0 and parsed.price == 50_000.0
    assert parsed.order_id == derive_order_id("desk-1", "r-1")


def test_a_submit_claiming_another_order_id_is_refused_as_such() -> None:
    raw = (
        b'{"request_id":"r-1","account_id":"desk-1","instrument_name":"BTC-PERPETUAL",'
        b'"direction":"buy","amount":10,"order_id":"o-000000000000000000000000"}'
    )
    failure = parse_request(raw)
    assert not isinstance(failure, OrderRequest)
    assert failure.reason_code is ReasonCode.ORDER_ID_MISMATCH
    # The refusal is addressed to the sender's own (derived) order, never to the claimed one.
    assert failure.identity is not None
    assert failure.identity["order_id"] == derive_order_id("desk-1", "r-1")


def test_verification(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    write_signing_keys(path, {"a": {"k1": "s3cret-key"}})
    keys = SigningKeys(path)
    key = keys.for_signing("a")
    assert key is not None and "s3cret" not in repr(key)
    auth = Authenticator(RiskSettings(), keys)
    value = OrderRequest(
        request_id="r1", account_id="a", instrument_name="X", amount=10, direction="buy"
    ).to_bytes()
    now = now_ms()

    def check(data: bytes, headers: list[tuple[str, bytes]] | None) -> ReasonCode | None:
        verdict = auth.authenticate("a", data, headers, reference_ms=now)
        return verdict.reason_code if isinstance(verdict, Rejection) else None

    headers = sign_headers(value, key)
    verdict = auth.authenticate("a", value, headers, reference_ms=now)
    assert isinstance(verdict, Authenticated) and verdict.key_id == "k1"
    tampered = value.replace(b'"amount":10.0', b'"amount":20.0')
    assert tampered != value and check(tampered, headers) is ReasonCode.SIGNATURE_INVALID
    assert check(value, None) is ReasonCode.SIGNATURE_MISSING
    assert check(value, headers[:3]) is ReasonCode.SIGNATURE_INVALID  # a header missing
    assert check(value, [*headers, headers[0]]) is ReasonCode.SIGNATURE_INVALID  # repeated
    assert check(value, sign_headers(value, SigningKey("a", "k2", b"x"))) is ReasonCode.UNKNOWN_KEY
    assert auth.authenticate("b", value, headers, reference_ms=now).reason_code is (  # type: ignore[union-attr]
        ReasonCode.UNKNOWN_KEY
    )
    old = sign_headers(value, key, timestamp=now - 60_000)
    assert check(value, old) is ReasonCode.STALE_REQUEST
    future = sign_headers(value, key, timestamp=now + 60_000)
    assert check(value, future) is ReasonCode.STALE_REQUEST


def test_nonces_tell_a_replay_from_a_redelivery() -> None:
    store = NonceStore({})
    assert not store.check("o-1", "nonce-1", "0:5").replay
    store.remember("o-1", "nonce-1", "0:5")
    assert store.check("o-1", "nonce-1", "0:5").redelivery  # the same request, forwarded again
    assert store.check("o-1", "nonce-1", "3:9").replay  # the same bytes published again
    assert not store.check("o-2", "nonce-1", "3:9").replay  # per order
