"""A/B experiments: settings are checked at load, orders are spread over variants by a hash of
their id (in proportion to the weights, the same in every process), and an enrolled order
carries its variant's strategy and its assignment in its metadata."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from oms.orders.experiments import (
    ARRIVAL_AT_KEY,
    ARRIVAL_MARK_KEY,
    ExperimentConfigError,
    Experiments,
    assignment_unit,
)
from oms.orders.params import ChaseParams, TwapParams, parse_params
from oms.schemas import OrderRequest, ReasonCode, derive_order_id
from oms.schemas.rejection import Rejection
from oms.settings import ExperimentSettings, Settings

TWAP_VARIANT = {
    "name": "twap",
    "weight": 1,
    "algo": "twap",
    "params": {"twap_duration": 6, "twap_slices": 3},
}
PLAIN_VARIANT = {"name": "plain", "weight": 1, "algo": "none"}


def experiment(**fields: Any) -> ExperimentSettings:
    return ExperimentSettings.model_validate(
        {"name": "exec-ab", "variants": [PLAIN_VARIANT, TWAP_VARIANT], **fields}
    )


def order_ids(n: int) -> list[str]:
    return [derive_order_id("acc", f"r-{i}") for i in range(n)]


def request(**fields: Any) -> OrderRequest:
    return OrderRequest.model_validate(
        {
            "request_id": "r-1",
            "account_id": "acc",
            "instrument_name": "BTC-PERPETUAL",
            "direction": "buy",
            "amount": 30,
            "order_type": "market",
            **fields,
        }
    )


# -- settings ------------------------------------------------------------------------------


def test_experiments_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "OMS_EXPERIMENTS",
        json.dumps(
            [{"name": "exec-ab", "accounts": ["acc"], "variants": [PLAIN_VARIANT, TWAP_VARIANT]}]
        ),
    )
    [exp] = Settings().experiments
    assert exp.name == "exec-ab" and exp.accounts == ["acc"] and exp.select == "tagged"
    assert [v.name for v in exp.variants] == ["plain", "twap"]
    assert exp.variants[1].params == {"twap_duration": 6, "twap_slices": 3}


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ([{**PLAIN_VARIANT, "weight": 0}, TWAP_VARIANT], "greater than 0"),
        ([{**PLAIN_VARIANT, "weight": -1}, TWAP_VARIANT], "greater than 0"),
        ([PLAIN_VARIANT], "at least 2"),
        ([PLAIN_VARIANT, {**TWAP_VARIANT, "name": "plain"}], "distinct"),
    ],
)
def test_bad_weights_and_variants_are_refused_at_load(
    variants: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        experiment(variants=variants)


def test_two_experiments_of_one_name_are_refused() -> None:
    with pytest.raises(ValidationError, match="distinct"):
        Settings(experiments=[experiment(), experiment()])


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ({**TWAP_VARIANT, "params": {"twap_duration": 6, "twap_slices": 0}}, "twap_slices"),
        ({**TWAP_VARIANT, "params": {"twap_duration": 6}}, "twap_slices"),
        (
            {**TWAP_VARIANT, "params": {**TWAP_VARIANT["params"], "twap_slice": 2}},
            "no parameter twap_slice",
        ),
        ({"name": "v", "weight": 1, "algo": "vwap"}, "'vwap' is not an algorithm"),
        (
            {"name": "v", "weight": 1, "algo": "none", "params": {"twap_slices": 2}},
            "takes no params",
        ),
        ({"name": "v", "weight": 1, "algo": "chase", "params": {"chase_limit": -5}}, "chase_limit"),
        ({**TWAP_VARIANT, "params": {**TWAP_VARIANT["params"], "variant": "x"}}, "may not set"),
    ],
)
def test_variant_params_are_checked_by_the_algorithms_models(
    variant: dict[str, Any], message: str
) -> None:
    settings = experiment(variants=[PLAIN_VARIANT, variant])
    with pytest.raises(ExperimentConfigError, match=message) as caught:
        Experiments.from_settings([settings])
    assert f"experiment 'exec-ab', variant '{variant['name']}'" in str(caught.value)


# -- assignment ----------------------------------------------------------------------------


def shares(exp: Experiments, ids: list[str]) -> dict[str, float]:
    [only] = exp.experiments
    counts: dict[str, int] = {}
    for order_id in ids:
        name = only.assign(order_id).name
        counts[name] = counts.get(name, 0) + 1
    return {name: count / len(ids) for name, count in counts.items()}


def test_a_50_50_experiment_splits_2000_orders_within_5_percent() -> None:
    split = shares(Experiments.from_settings([experiment()]), order_ids(2_000))
    assert set(split) == {"plain", "twap"}
    assert abs(split["plain"] - 0.5) <= 0.05 and abs(split["twap"] - 0.5) <= 0.05


def test_weights_90_10_are_respected() -> None:
    variants = [{**PLAIN_VARIANT, "weight": 9}, {**TWAP_VARIANT, "weight": 1}]
    split = shares(Experiments.from_settings([experiment(variants=variants)]), order_ids(2_000))
    # sd of a 10% share over 2000 orders is 0.7 points: 3 points is over 4 sd.
    assert abs(split["plain"] - 0.9) <= 0.03 and abs(split["twap"] - 0.1) <= 0.03


def test_the_draw_is_blake2b_of_experiment_and_order_id() -> None:
    order_id = derive_order_id("acc", "r-7")
    digest = hashlib.blake2b(b"exec-ab\x00" + order_id.encode(), digest_size=8).digest()
    assert assignment_unit("exec-ab", order_id) == int.from_bytes(digest, "big") / 2**64
    # 50/50: below one half is the first variant.
    [exp] = Experiments.from_settings([experiment()]).experiments
    expected = "plain" if assignment_unit("exec-ab", order_id) < 0.5 else "twap"
    assert exp.assign(order_id).name == expected


def test_assignment_is_the_same_across_calls_and_processes() -> None:
    ids = order_ids(300)
    [exp] = Experiments.from_settings([experiment()]).experiments
    here = [exp.assign(i).name for i in ids]
    assert here == [exp.assign(i).name for i in ids]
    script = (
        "import json, sys\n"
        "from oms.orders.experiments import Experiments\n"
        "from oms.settings import ExperimentSettings\n"
        "spec, ids = json.loads(sys.stdin.read())\n"
        "[exp] = Experiments.from_settings([ExperimentSettings.model_validate(spec)]).experiments\n"
        "print(json.dumps([exp.assign(i).name for i in ids]))\n"
    )
    spec = experiment().model_dump(mode="json")
    other = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps([spec, ids]),
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert json.loads(other.stdout) == here


def test_an_experiment_draws_independently_of_another() -> None:
    ids = order_ids(2_000)
    first = Experiments.from_settings([experiment()]).experiments[0]
    second = Experiments.from_settings([experiment(name="other")]).experiments[0]
    same = sum(first.assign(i).name == second.assign(i).name for i in ids) / len(ids)
    assert abs(same - 0.5) <= 0.05


# -- enrolment -----------------------------------------------------------------------------


def enrol(exps: list[ExperimentSettings], req: OrderRequest, mark: float | None = 50_000.0):
    return Experiments.from_settings(exps).enrol(req, mark=mark, now=1_700_000_000_000)


def test_a_tagged_order_gets_its_variant_strategy_and_assignment() -> None:
    exps = [experiment(variants=[{**TWAP_VARIANT, "weight": 1}, {**PLAIN_VARIANT, "weight": 1e-9}])]
    enrolled = enrol(exps, request(metadata={"experiment": "exec-ab", "desk_note": "x"}))
    assert isinstance(enrolled, OrderRequest)
    assert enrolled.metadata == {
        "desk_note": "x",
        "experiment": "exec-ab",
        "variant": "twap",
        "algo": "twap",
        "twap_duration": 6,
        "twap_slices": 3,
        ARRIVAL_MARK_KEY: 50_000.0,
        ARRIVAL_AT_KEY: 1_700_000_000_000,
    }
    params = parse_params(enrolled.metadata)
    assert not isinstance(params, Rejection) and isinstance(params.algo, TwapParams)


def test_a_plain_variant_leaves_the_order_without_algorithm() -> None:
    exps = [experiment(variants=[{**PLAIN_VARIANT, "weight": 1}, {**TWAP_VARIANT, "weight": 1e-9}])]
    enrolled = enrol(exps, request(metadata={"experiment": "exec-ab"}), mark=None)
    assert isinstance(enrolled, OrderRequest)
    assert enrolled.metadata == {
        "experiment": "exec-ab",
        "variant": "plain",
        ARRIVAL_AT_KEY: 1_700_000_000_000,
    }


def test_selection_by_tag_account_and_instrument() -> None:
    tagged = {"metadata": {"experiment": "exec-ab"}}
    scoped = [experiment(accounts=["acc"], instruments=["BTC-PERPETUAL"])]
    assert enrol(scoped, request(**tagged)) != request(**tagged)
    # Not tagged, another account, another instrument, another experiment's tag: as sent.
    for req in (
        request(),
        request(account_id="other", **tagged),
        request(instrument_name="ETH-PERPETUAL", **tagged),
        request(metadata={"experiment": "something-else"}),
    ):
        assert enrol(scoped, req) == req


def test_a_linked_group_parent_is_never_enrolled() -> None:
    bracket = {"type": "oto", "orders": [{"order_type": "limit", "price": 80_000}]}
    for exps, metadata in (
        ([experiment()], {"experiment": "exec-ab"}),
        ([experiment(select="untagged")], {}),
    ):
        req = request(contingency=bracket, metadata=metadata)
        assert enrol(exps, req) == req


def test_untagged_selection_takes_orders_without_an_algorithm() -> None:
    exps = [experiment(select="untagged")]
    enrolled = enrol(exps, request())
    assert isinstance(enrolled, OrderRequest) and enrolled.metadata["experiment"] == "exec-ab"
    own = request(metadata={"algo": "twap", "twap_duration": 6, "twap_slices": 2})
    assert enrol(exps, own) == own


def test_the_first_experiment_that_applies_wins() -> None:
    exps = [
        experiment(name="first", select="untagged"),
        experiment(name="second", select="untagged"),
    ]
    enrolled = enrol(exps, request())
    assert isinstance(enrolled, OrderRequest) and enrolled.metadata["experiment"] == "first"


def test_a_tagged_order_naming_its_own_algorithm_is_refused() -> None:
    own = request(
        metadata={"experiment": "exec-ab", "algo": "twap", "twap_duration": 6, "twap_slices": 2}
    )
    refused = enrol([experiment()], own)
    assert isinstance(refused, Rejection) and refused.reason_code is ReasonCode.SCHEMA_INVALID
    assert "takes its algorithm from its variant" in refused.message


@pytest.mark.parametrize("key", ["variant", "arrival_mark", "arrival_at"])
def test_an_order_of_an_experiment_cannot_forge_its_assignment(key: str) -> None:
    # Tagged (even for an experiment not configured: a report may read it later) or enrolled.
    for exps, req in (
        ([], request(metadata={"experiment": "exec-ab", key: 1})),
        ([experiment(select="untagged")], request(metadata={key: 1})),
    ):
        refused = enrol(exps, req)
        assert isinstance(refused, Rejection) and refused.reason_code is ReasonCode.SCHEMA_INVALID
        assert f"metadata.{key}" in refused.message
    # Outside every experiment the key is the trader's own.
    own = request(metadata={key: 1})
    assert enrol([experiment()], own) == own


def test_a_chase_variant_without_limit_chases_up_to_the_order_price() -> None:
    chase = {"name": "chase", "weight": 1, "algo": "chase"}
    exps = [experiment(variants=[chase, {**PLAIN_VARIANT, "weight": 1e-9}])]
    req = request(
        order_type="limit", price=50_000.0, post_only=True, metadata={"experiment": "exec-ab"}
    )
    enrolled = enrol(exps, req)
    assert isinstance(enrolled, OrderRequest)
    params = parse_params(enrolled.metadata)
    assert not isinstance(params, Rejection) and params.algo == ChaseParams(chase_limit=50_000.0)
