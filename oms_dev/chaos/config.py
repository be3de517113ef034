"""What every chaos scenario is given."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ChaosConfig:
    """Suite-wide options; each scenario picks its own sizes from ``quick``."""

    quick: bool = False
    # Override the number of orders of the flow scenarios (tests run tiny ones).
    orders: int | None = None
    # Use a running broker instead of one per scenario (not for broker_restart, which must
    # own the broker it restarts).
    bootstrap: str | None = None
