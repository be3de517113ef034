"""The suite's plumbing: scenario sizes, re-running one scenario into an existing report,
the environment of scenarios that start their own broker."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from oms_dev.benchmarks import suite
from oms_dev.benchmarks.report import Figure
from oms_dev.benchmarks.suite import (
    Scenario,
    SuiteConfig,
    own_broker_env,
    scenarios,
)


def test_quick_runs_each_scenario_once_full_repeats() -> None:
    quick = scenarios(SuiteConfig(quick=True))
    full = scenarios(SuiteConfig(repetitions=3))
    names = ["e2e", "e2e-rate20", "route", "conditions", "notify", "positions", "queries", "memory"]
    assert [s.name for s in quick] == names
    assert all(s.repetitions == 1 for s in quick)
    assert {"e2e-paced", "e2e-preload"} <= {s.name for s in full}
    assert {s.name: s.repetitions for s in full}["e2e"] == 3
    assert [s.name for s in scenarios(SuiteConfig(only=["queries"]))] == ["queries"]


def test_own_broker_env_hides_the_shared_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMS_KAFKA__BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("OMS_KAFKA__TOPIC_PREFIX", "x.")
    monkeypatch.setenv("OMS_OTHER", "kept")
    with own_broker_env():
        assert "OMS_KAFKA__BOOTSTRAP" not in os.environ
        assert "OMS_KAFKA__TOPIC_PREFIX" not in os.environ
        assert os.environ["OMS_OTHER"] == "kept"
    assert os.environ["OMS_KAFKA__BOOTSTRAP"] == "127.0.0.1:1"


def test_only_reruns_one_scenario_and_keeps_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full report exists; re-running "notify" alone replaces its runs and keeps the rest.
    previous = {
        "mode": "full",
        "machine": {"git_commit": "abc123", "load_average_before": [1.0, 1.0, 1.0]},
        "runs": {
            "e2e": [{"throughput_per_s": 400.0, "baseline_throughput_per_s": 2000.0}],
            "notify": [{"events_per_s": 1.0}],
        },
        "errors": {"positions#1": "TimeoutError: x", "notify#2": "TimeoutError: y"},
    }
    (tmp_path / "latest.json").write_bytes(orjson.dumps(previous))

    def fake_scenarios(config: SuiteConfig) -> list[Scenario]:
        every = [
            Scenario("e2e", lambda _: {}, 1, [Figure("e2e", "orders/s", "throughput_per_s", "/s")]),
            Scenario(
                "notify",
                lambda _: {"events_per_s": 9_000.0},
                2,
                [Figure("notify", "events/s", "events_per_s", "/s")],
            ),
        ]
        return [s for s in every if not config.only or s.name in config.only]

    monkeypatch.setattr(suite, "scenarios", fake_scenarios)
    report, _ = suite.run_suite(SuiteConfig(only=["notify"], out_dir=tmp_path))
    assert report["runs"]["e2e"] == previous["runs"]["e2e"]
    assert [r["events_per_s"] for r in report["runs"]["notify"]] == [9_000.0, 9_000.0]
    assert report["errors"] == {"positions#1": "TimeoutError: x"}
    assert report["partial_rerun"]["rerun"] == ["notify"]
    assert report["partial_rerun"]["kept_commit"] == "abc123"
    figures = {f["figure"]: f["median"] for f in report["figures"]}
    assert figures == {"orders/s": 400.0, "events/s": 9_000.0}
    assert "Kept from the previous full report" in (tmp_path / "latest.md").read_text()
