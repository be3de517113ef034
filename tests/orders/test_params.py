"""Typed order parameters: parsed once from the wire's flat ``metadata`` keys, refused with a
reason code and the key's name when a value cannot be applied."""

from __future__ import annotations

import pytest

from oms.orders.params import (
    ChaseParams,
    LifecycleOverrides,
    OrderParams,
    TwapParams,
    parse_params,
)
from oms.schemas import ReasonCode
from oms.schemas.rejection import Rejection
from oms.settings import LifecycleSettings


def test_the_wire_format_becomes_typed_parameters() -> None:
    params = parse_params({"algo": "twap", "twap_duration": 6, "twap_slices": 3, "note": "x"})
    assert params == OrderParams(algo=TwapParams(duration_s=6.0, slices=3, randomize=0.0))
    chase = parse_params({"algo": "chase", "chase_limit": 51_000})
    assert isinstance(chase, OrderParams) and chase.algo == ChaseParams(limit=51_000.0)
    assert parse_params({"note": "no algorithm"}) == OrderParams()


def test_recorded_parameters_read_back_the_same() -> None:
    twap = TwapParams(duration_s=2.5, slices=4, randomize=0.3, lot=10.0, reason="big")
    recorded = twap.to_metadata()
    assert recorded == {
        "twap_duration": 2.5,
        "twap_slices": 4,
        "twap_randomize": 0.3,
        "twap_lot": 10.0,
        "twap_reason": "big",
    }
    assert TwapParams.from_metadata({"algo": "twap", **recorded}) == twap


@pytest.mark.parametrize(
    ("metadata", "key"),
    [
        ({"algo": "twap", "twap_slices": 3}, "twap_duration"),
        ({"algo": "twap", "twap_duration": 0, "twap_slices": 3}, "twap_duration"),
        ({"algo": "twap", "twap_duration": 86_401, "twap_slices": 3}, "twap_duration"),
        ({"algo": "twap", "twap_duration": "6", "twap_slices": 3}, "twap_duration"),
        ({"algo": "twap", "twap_duration": 6, "twap_slices": 2.5}, "twap_slices"),
        ({"algo": "twap", "twap_duration": 6, "twap_slices": True}, "twap_slices"),
        ({"algo": "twap", "twap_duration": 6, "twap_slices": 101}, "twap_slices"),
        (
            {"algo": "twap", "twap_duration": 6, "twap_slices": 3, "twap_randomize": 1},
            "twap_randomize",
        ),
        ({"algo": "chase"}, "chase_limit"),
        ({"algo": "chase", "chase_limit": -1}, "chase_limit"),
        ({"algo": "vwap"}, "algo"),
        ({"retry_attempts": 2.5}, "retry_attempts"),
        ({"error_handling": "pray"}, "error_handling"),
        ({"auto_cancel_timeout": "soon"}, "auto_cancel_timeout"),
    ],
)
def test_bad_values_are_refused_naming_the_key(metadata: dict[str, object], key: str) -> None:
    rejection = parse_params(metadata)
    assert isinstance(rejection, Rejection)
    assert rejection.reason_code is ReasonCode.SCHEMA_INVALID
    assert f"metadata.{key}" in rejection.message


def test_lifecycle_overrides_fall_back_to_the_settings() -> None:
    defaults = LifecycleSettings(retry_attempts=3, auto_cancel_timeout=60)
    policy = LifecycleOverrides(retry_attempts=1.0, partial_fill_grace=2).resolve(defaults)
    assert (policy.retry_attempts, policy.partial_fill_grace) == (1, 2.0)
    assert (policy.error_handling, policy.auto_cancel_timeout) == ("retry", 60.0)
    assert policy.submit_attempts == 2
