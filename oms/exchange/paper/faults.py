"""Fault injection for tests: dropped connections, latency, rejects, rate-limit answers and
late replies. Not a Deribit feature; set through the constructor, the CLI or
``admin/set_faults``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from typing import Any

from oms.exchange.paper import errors
from oms.exchange.paper.errors import invalid_param


@dataclass
class Faults:
    """Current fault settings; all off by default."""

    drop_every_s: float = 0.0  # close every connection this often (0: never)
    latency_ms: float = 0.0  # added before each request is processed
    reject_fraction: float = 0.0  # order requests answered with ``reject_code``
    reject_code: int = errors.MATCHING_ENGINE_QUEUE_FULL
    rate_limit_fraction: float = 0.0  # requests answered with 10028 (session kept)
    delay_fraction: float = 0.0  # replies held back ``delay_s`` (the request is executed)
    delay_s: float = 0.0
    # 1: a request's own notifications follow its reply; 0 (default): they come first,
    # the order that trips clients (Deribit sends both orders).
    reply_first: float = 0.0
    # Deterministic one-shots for tests: the next N order-entry requests are answered with
    # ``reject_code`` (not executed), or executed and then the connection is cut before the
    # reply (the request reached the exchange, the answer was lost).
    reject_next: int = 0
    drop_after_next: int = 0
    seed: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)
    # How often each fault fired (admin/get_stats), for reports of chaos runs.
    fired: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.rng.seed(self.seed)

    def update(self, values: dict[str, Any]) -> None:
        """Apply ``admin/set_faults`` params; an empty dict resets everything."""
        names = {f.name for f in fields(self) if f.name not in _INTERNAL}
        if not values:
            values = {f.name: f.default for f in fields(self) if f.name not in _INTERNAL}
        for name, value in values.items():
            if name not in names:
                raise invalid_param(name, "unknown fault")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise invalid_param(name, "must be a number")
            if name.endswith("fraction") and not 0 <= value <= 1:
                raise invalid_param(name, "must be between 0 and 1")
            if value < 0 and name != "reject_code":
                raise invalid_param(name, "must not be negative")
            setattr(self, name, int(value) if name in _INTEGERS else float(value))
        if "seed" in values:
            self.rng.seed(self.seed)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _INTERNAL}

    def count(self, name: str) -> None:
        self.fired[name] = self.fired.get(name, 0) + 1

    def hit(self, fraction: float) -> bool:
        return fraction > 0 and self.rng.random() < fraction

    def take(self, name: str) -> bool:
        """Consume one of a one-shot counter (``reject_next``, ``drop_after_next``)."""
        left: int = getattr(self, name)
        if left <= 0:
            return False
        setattr(self, name, left - 1)
        return True


_INTERNAL = frozenset({"rng", "fired"})
_INTEGERS = frozenset({"reject_code", "seed", "reject_next", "drop_after_next"})
