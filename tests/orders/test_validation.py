"""Intake validation: parse failures and instrument/account checks with reason codes."""

from __future__ import annotations

import orjson
import pytest

from oms.orders.validation import ParseFailure, parse_request, validate_submit
from oms.schemas import InstrumentSpec, OrderRequest, ReasonCode, derive_order_id
from tests.orders.factories import BTC_PERPETUAL

BTC_PERP = BTC_PERPETUAL
BTC_OPTION = InstrumentSpec(
    instrument_name="BTC-25DEC26-70000-C",
    kind="option",
    base_currency="BTC",
    quote_currency="BTC",
    tick_size=0.0005,
    contract_size=1,
    min_trade_amount=0.1,
)


def _req(**kw: object) -> OrderRequest:
    base: dict[str, object] = dict(
        request_id="r1",
        account_id="acc",
        instrument_name="BTC-PERPETUAL",
        amount=100,
        direction="buy",
        price=50_000.5,
    )
    base.update(kw)
    return OrderRequest.model_validate(base)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", ReasonCode.MALFORMED_JSON),
        (b"[1,2]", ReasonCode.SCHEMA_INVALID),
        (b'{"request_id": "r"}', ReasonCode.SCHEMA_INVALID),
        (
            b'{"request_id":"r","account_id":"a","instrument_name":"X","amount":"ten",'
            b'"direction":"buy"}',
            ReasonCode.SCHEMA_INVALID,
        ),
        (
            b'{"request_id":"r","account_id":"a","bogus":1,"instrument_name":"X","amount":1,'
            b'"direction":"buy"}',
            ReasonCode.SCHEMA_INVALID,
        ),
        (b"x" * 70_000, ReasonCode.PAYLOAD_TOO_LARGE),
        (b"\xff\xfe\x00", ReasonCode.MALFORMED_JSON),
        (None, ReasonCode.TOMBSTONE),
        (b"", ReasonCode.EMPTY_PAYLOAD),
    ],
)
def test_parse_failures_have_reason_codes(raw: bytes | None, reason: ReasonCode) -> None:
    result = parse_request(raw)
    assert isinstance(result, ParseFailure)
    assert result.reason_code is reason and result.message


def test_schema_failure_keeps_identity_for_the_sender() -> None:
    raw = orjson.dumps({"request_id": "r9", "account_id": "acc", "amount": -1})
    result = parse_request(raw)
    assert isinstance(result, ParseFailure)
    assert result.identity == {
        "account_id": "acc",
        "request_id": "r9",
        "order_id": derive_order_id("acc", "r9"),
        "command": "submit",
    }


def test_submit_order_id_must_be_derived() -> None:
    raw = orjson.dumps(
        {
            "request_id": "r",
            "account_id": "a",
            "order_id": "mine",
            "instrument_name": "X",
            "amount": 10,
            "direction": "buy",
        }
    )
    assert isinstance(parse_request(raw), ParseFailure)


@pytest.mark.parametrize(
    ("changes", "spec", "known", "reason"),
    [
        ({}, None, True, ReasonCode.UNKNOWN_INSTRUMENT),
        ({}, BTC_PERP, False, ReasonCode.UNKNOWN_ACCOUNT),
        ({"amount": 0}, BTC_PERP, True, ReasonCode.INVALID_AMOUNT),
        ({"amount": -10}, BTC_PERP, True, ReasonCode.INVALID_AMOUNT),
        ({"amount": 5}, BTC_PERP, True, ReasonCode.AMOUNT_TOO_SMALL),
        ({"amount": 15}, BTC_PERP, True, ReasonCode.AMOUNT_NOT_MULTIPLE),
        ({"price": 50_000.3}, BTC_PERP, True, ReasonCode.PRICE_OFF_TICK),
        ({"price": None}, BTC_PERP, True, ReasonCode.PRICE_REQUIRED),
        ({"price": -1}, BTC_PERP, True, ReasonCode.INVALID_PRICE),
    ],
)
def test_submit_rejections(
    changes: dict[str, object], spec: InstrumentSpec | None, known: bool, reason: ReasonCode
) -> None:
    rejection = validate_submit(_req(**changes), spec, known)
    assert rejection is not None and rejection.reason_code is reason


def test_valid_orders_pass() -> None:
    assert validate_submit(_req(), BTC_PERP, True) is None
    assert validate_submit(_req(order_type="market", price=None), BTC_PERP, True) is None
    option = _req(instrument_name=BTC_OPTION.instrument_name, amount=0.3, price=0.0125)
    assert validate_submit(option, BTC_OPTION, True) is None
    off_tick = _req(instrument_name=BTC_OPTION.instrument_name, amount=0.3, price=0.0126)
    rejection = validate_submit(off_tick, BTC_OPTION, True)
    assert rejection is not None and rejection.reason_code is ReasonCode.PRICE_OFF_TICK
