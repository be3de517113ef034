"""The suite's plumbing: scenario sizes, the latency capture, the environment of scenarios
that start their own broker."""

from __future__ import annotations

import os

import pytest

from oms.benchmarks import e2e
from oms.benchmarks.suite import (
    SuiteConfig,
    capture_e2e_latencies,
    own_broker_env,
    scenarios,
)


def test_quick_runs_each_scenario_once_full_repeats() -> None:
    quick = scenarios(SuiteConfig(quick=True), {})
    full = scenarios(SuiteConfig(repetitions=3), {})
    names = ["e2e", "conditions", "notify", "positions", "queries", "memory"]
    assert [s.name for s in quick] == names
    assert all(s.repetitions == 1 for s in quick)
    assert "e2e-paced" in [s.name for s in full]
    assert {s.name: s.repetitions for s in full}["e2e"] == 3
    assert [s.name for s in scenarios(SuiteConfig(only=["queries"]), {})] == ["queries"]


def test_e2e_latencies_are_captured_and_the_summary_unchanged() -> None:
    sink: list[float] = []
    original = e2e.latency_summary
    with capture_e2e_latencies(sink):
        summary = e2e.latency_summary([1.0, 2.0, 3.0])
    assert sink == [1.0, 2.0, 3.0]
    assert summary == original([1.0, 2.0, 3.0])
    assert e2e.latency_summary is original


def test_own_broker_env_hides_the_shared_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMS_KAFKA__BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("OMS_KAFKA__TOPIC_PREFIX", "x.")
    monkeypatch.setenv("OMS_OTHER", "kept")
    with own_broker_env():
        assert "OMS_KAFKA__BOOTSTRAP" not in os.environ
        assert "OMS_KAFKA__TOPIC_PREFIX" not in os.environ
        assert os.environ["OMS_OTHER"] == "kept"
    assert os.environ["OMS_KAFKA__BOOTSTRAP"] == "127.0.0.1:1"
