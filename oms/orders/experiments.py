"""A/B experiments on execution strategies: which orders take part, which variant each gets.

An experiment (``settings.experiments``, :class:`~oms.settings.ExperimentSettings`) names the
orders it applies to (accounts, instruments, and either only the orders that ask for it with
``metadata.experiment = NAME`` or also every order that names no algorithm) and its variants,
each a weight and a strategy: an algorithm with its parameters, or ``none`` (the order goes
out as sent).

Intake enrols a new order once, before it parses the order's parameters
(:meth:`Experiments.enrol`): the variant is drawn from a hash of the experiment's name and the
order id, so the same order gets the same variant in any process and after any restart, and
variants receive their weights' share of orders. The draw is written into the order's
metadata (``experiment``, ``variant``, the variant's algorithm keys, and the arrival mark and
time for the report), so everything after intake (the executor, the algorithms' timers,
ClickHouse) sees an ordinary order with an algorithm, and the record says which arm it was.

Pure logic: no Kafka, no clock, no market access (the caller passes the mark and the time).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import accumulate
from typing import Any

from oms.orders.params import ALGO_KEY, CHASE, parse_algo
from oms.schemas import OrderRequest, ReasonCode
from oms.schemas.base import MetadataValue
from oms.schemas.rejection import Rejection
from oms.settings import ExperimentSettings, ExperimentVariant

EXPERIMENT_KEY = "experiment"
VARIANT_KEY = "variant"
# The instrument's mark price when intake accepted the order, and that moment (ms): what the
# report measures slippage and time to fill from.
ARRIVAL_MARK_KEY = "arrival_mark"
ARRIVAL_AT_KEY = "arrival_at"
# Written by the OMS only: an order of an experiment (or tagged for one) carrying one would
# forge its place in the report.
RESERVED_KEYS = (VARIANT_KEY, ARRIVAL_MARK_KEY, ARRIVAL_AT_KEY)
NO_ALGO = "none"
CHASE_LIMIT_KEY = "chase_limit"


class ExperimentConfigError(ValueError):
    """An experiment in the settings cannot run (the message names it and why)."""


@dataclass(frozen=True)
class Variant:
    """One arm: its name, weight and the metadata keys it gives an order."""

    name: str
    weight: float
    algo: str
    params: Mapping[str, MetadataValue]

    def metadata(self) -> dict[str, MetadataValue]:
        """The keys this variant sets on an order (``algo`` too, unless it is ``none``)."""
        if self.algo == NO_ALGO:
            return dict(self.params)
        return {ALGO_KEY: self.algo, **self.params}


def assignment_unit(experiment: str, order_id: str) -> float:
    """Where an order falls in [0, 1) for one experiment: the first 8 bytes of the BLAKE2b
    digest of ``experiment NUL order_id`` as a fraction of 2**64. A pure function of the two
    names, so every process and every restart draws the same; another experiment's draw of
    the same order is independent of it."""
    digest = hashlib.blake2b(f"{experiment}\x00{order_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class Experiment:
    """A validated experiment: its selection and its variants with cumulative weights."""

    name: str
    accounts: frozenset[str]
    instruments: frozenset[str]
    select: str
    variants: tuple[Variant, ...]

    @classmethod
    def from_settings(cls, settings: ExperimentSettings) -> Experiment:
        """The experiment ``settings`` describe; raises :class:`ExperimentConfigError` if a
        variant's algorithm or parameters would be refused for every order."""
        variants = tuple(
            Variant(v.name, v.weight, v.algo, _checked_params(settings.name, v, v.params))
            for v in settings.variants
        )
        return cls(
            name=settings.name,
            accounts=frozenset(settings.accounts),
            instruments=frozenset(settings.instruments),
            select=settings.select,
            variants=variants,
        )

    @cached_property
    def bounds(self) -> tuple[float, ...]:
        """Upper bounds of the variants' intervals in [0, 1) (the last is exactly 1, so
        rounding never leaves a draw without a variant)."""
        total = sum(v.weight for v in self.variants)
        cumulative = [w / total for w in accumulate(v.weight for v in self.variants)]
        cumulative[-1] = 1.0
        return tuple(cumulative)

    def assign(self, order_id: str) -> Variant:
        """The variant of ``order_id`` (deterministic, in proportion to the weights)."""
        unit = assignment_unit(self.name, order_id)
        index = bisect_right(self.bounds, unit)
        return self.variants[min(index, len(self.variants) - 1)]

    def applies_to(self, request: OrderRequest) -> bool:
        """Does this experiment take ``request`` (its account, instrument and selection)?
        A linked group's parent never does: its group was planned for it as sent."""
        if request.contingency is not None:
            return False
        if self.accounts and request.account_id not in self.accounts:
            return False
        if self.instruments and request.instrument_name not in self.instruments:
            return False
        tag = request.metadata.get(EXPERIMENT_KEY)
        if tag is not None:
            return tag == self.name
        return self.select == "untagged" and ALGO_KEY not in request.metadata


class Experiments:
    """The experiments of the settings, in order: the first that applies enrols an order."""

    def __init__(self, experiments: Sequence[Experiment] = ()) -> None:
        self.experiments = tuple(experiments)

    @classmethod
    def from_settings(cls, settings: Sequence[ExperimentSettings]) -> Experiments:
        """Validate and build every configured experiment (:class:`ExperimentConfigError`)."""
        return cls([Experiment.from_settings(s) for s in settings])

    def get(self, name: str) -> Experiment | None:
        """The experiment called ``name``, if configured."""
        return next((e for e in self.experiments if e.name == name), None)

    def enrol(
        self, request: OrderRequest, *, mark: float | None, now: int
    ) -> OrderRequest | Rejection:
        """``request`` as it executes: unchanged if no experiment applies, else with its
        variant's strategy and the assignment in its metadata; or why it is refused (tagged or
        enrolled, it set a key only the OMS writes, or it names its own algorithm in an
        experiment that sets one).

        ``mark``: the instrument's mark price now (None: unknown, no slippage for the order);
        ``now``: the time of acceptance (ms)."""
        metadata = request.metadata
        experiment = next((e for e in self.experiments if e.applies_to(request)), None)
        if experiment is None and EXPERIMENT_KEY not in metadata:
            # Not in any experiment, and no report will read it: its keys are its own.
            return request
        forged = [key for key in RESERVED_KEYS if key in metadata]
        if forged:
            return Rejection(
                ReasonCode.SCHEMA_INVALID,
                f"metadata.{forged[0]} is written by the OMS in orders of an experiment, "
                "not by requests",
            )
        if experiment is None:
            return request
        if ALGO_KEY in metadata:
            return Rejection(
                ReasonCode.SCHEMA_INVALID,
                f"metadata.{ALGO_KEY}: an order in experiment {experiment.name!r} takes its "
                "algorithm from its variant; leave algo out (or the experiment tag)",
            )
        variant = experiment.assign(request.key)
        assigned: dict[str, MetadataValue] = {
            **metadata,
            **variant.metadata(),
            EXPERIMENT_KEY: experiment.name,
            VARIANT_KEY: variant.name,
            ARRIVAL_AT_KEY: now,
        }
        if variant.algo == CHASE and CHASE_LIMIT_KEY not in assigned and request.price is not None:
            # A chase variant without its own limit chases up to the order's price.
            assigned[CHASE_LIMIT_KEY] = request.price
        if mark is not None:
            assigned[ARRIVAL_MARK_KEY] = mark
        return request.model_copy(update={"metadata": assigned})


def _checked_params(
    experiment: str, variant: ExperimentVariant, params: Mapping[str, Any]
) -> dict[str, MetadataValue]:
    algo = variant.algo
    where = f"experiment {experiment!r}, variant {variant.name!r}"
    clash = sorted({ALGO_KEY, EXPERIMENT_KEY, *RESERVED_KEYS} & set(params))
    if clash:
        raise ExperimentConfigError(
            f"{where}: params may not set {', '.join(clash)} (the algorithm goes in 'algo')"
        )
    if algo == NO_ALGO:
        if params:
            raise ExperimentConfigError(f"{where}: algo 'none' takes no params, got {dict(params)}")
        return {}
    probe: dict[str, Any] = {ALGO_KEY: algo, **params}
    if algo == CHASE:
        # The limit may come from the order (its chase_limit, else its price): any valid
        # value stands in for it here.
        probe.setdefault(CHASE_LIMIT_KEY, 1.0)
    parsed = parse_algo(probe)
    if isinstance(parsed, Rejection):
        raise ExperimentConfigError(f"{where}: {parsed.message}")
    if parsed is None:  # pragma: no cover - probe always names an algorithm
        raise ExperimentConfigError(f"{where}: no algorithm")
    # Any strategy's parameter model: its metadata keys are its fields' aliases.
    known = set(parsed.model_dump(by_alias=True, exclude_none=True))
    unknown = sorted(set(params) - known - {ALGO_KEY})
    if unknown:
        raise ExperimentConfigError(f"{where}: {algo} has no parameter {', '.join(unknown)}")
    return dict(params)
