"""The figures `oms bench e2e` computes from its own timings."""

from __future__ import annotations

import pytest

from oms_dev.benchmarks.e2e import max_ack_gap_s


def test_the_ack_gap_is_the_longest_quiet_time_with_orders_outstanding() -> None:
    published = [0.0, 0.1, 0.2, 5.0]
    acknowledged = [0.3, 0.4, 3.4, 5.2]
    # 0.4 -> 3.4: one order outstanding, nothing acknowledged for 3 s.
    assert max_ack_gap_s(published, acknowledged, end=6.0) == pytest.approx(3.0)


def test_idle_time_with_nothing_outstanding_is_no_gap() -> None:
    published = [0.0, 10.0]
    acknowledged = [0.05, 10.05]
    assert max_ack_gap_s(published, acknowledged, end=20.0) == pytest.approx(0.05)


def test_orders_never_acknowledged_are_outstanding_until_the_end() -> None:
    # The second order, sent at 1.0, is still outstanding at 9.0.
    assert max_ack_gap_s([0.0, 1.0], [0.5], end=9.0) == pytest.approx(8.0)
