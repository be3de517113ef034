"""Hostile input (``oms bench hostile``, also the ``hostile`` chaos scenario): the generator, then a
real worker under it."""

from __future__ import annotations

from collections import Counter

import pytest

from oms.orders.validation import MAX_REQUEST_BYTES, ParseFailure, parse_request
from oms_dev.benchmarks.hostile import (
    KINDS,
    HostileConfig,
    could_execute,
    generate_hostile,
    plan_messages,
    run_hostile,
    valid_orders,
)

ACCOUNTS = ["acct-a", "acct-b"]


def test_generator_covers_every_kind_and_nothing_it_keeps_could_execute() -> None:
    drawn = generate_hostile(400, ACCOUNTS, seed=3)
    assert len(drawn) == 400
    kinds = Counter(kind for kind, _ in drawn)
    assert set(kinds) == set(KINDS)
    planned, expected = plan_messages(drawn, valid_orders(10, ACCOUNTS, "t"), set(ACCOUNTS), 3)
    assert len(expected) == 10 and sum(p.kind == "valid" for p in planned) == 10
    for p in planned:
        if p.kind == "valid":
            continue
        parsed = parse_request(p.value)
        if isinstance(parsed, ParseFailure):
            assert p.order_id is None  # its outcome is a dead letter
        else:
            assert not could_execute(parsed, set(ACCOUNTS))
            assert p.order_id == parsed.key  # its outcome is a rejection of that order
        if p.kind == "huge":
            assert len(p.value) > MAX_REQUEST_BYTES
    # Reproducible per seed.
    assert generate_hostile(50, ACCOUNTS, seed=3) == generate_hostile(50, ACCOUNTS, seed=3)


@pytest.mark.kafka
async def test_worker_survives_hostile_input(kafka_bootstrap: str) -> None:
    result = await run_hostile(
        HostileConfig(hostile=300, valid=40, accounts=4, bootstrap=kafka_bootstrap, timeout_s=120),
        on_status=lambda _: None,
    )
    assert result["worker_crashes"] == 0
    assert result["hostile_without_outcome"] == 0, result["examples"]
    assert result["hostile_dead_lettered"] + result["hostile_rejected_with_event"] == 300
    assert result["hostile_dead_lettered"] > 0 and result["hostile_rejected_with_event"] > 0
    assert {"malformed_json", "schema_invalid", "payload_too_large"} <= set(result["reason_codes"])
    assert result["valid_not_ending_as_expected"] == 0, result["examples"]
    assert result["foreign_labels_at_exchange"] == 0
    assert result["labels_twice_at_exchange"] == 0
    assert result["ok"]
