"""Typed parameters of an order: its execution algorithm and its lifecycle overrides.

On the wire they stay flat keys of the request's ``metadata`` (the format traders already
send)::

    {"algo": "twap", "twap_duration": 6, "twap_slices": 3, "twap_randomize": 0.2}
    {"algo": "chase", "chase_limit": 51000}
    {"error_handling": "manual", "retry_attempts": 2, "auto_cancel_timeout": 600}

Intake parses them once (:func:`parse_params`) and refuses bad values with
``schema_invalid`` and a message naming the key; everything after that works on the typed
objects. An accepted order's record keeps the same keys, so code that only has the record
(the executor, the timers, after any restart) reads them back with the same models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from oms.schemas import OrderStatus, ReasonCode
from oms.schemas.base import MetadataValue
from oms.schemas.rejection import Rejection
from oms.settings import LifecycleSettings

ALGO_KEY = "algo"
# The metadata key naming a child's parent: an algorithm's children (TWAP's slices, a routed
# order's per-venue children) carry it, and their news folds into that order.
PARENT_KEY = "parent_id"
# The statuses in which a parent works through its children.
PARENT_WORKING = frozenset({OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED})
# The version of the strategy an order started with (set by intake, never by the client):
# the order keeps running that version while it is in flight, whatever is loaded later.
ALGO_VERSION_KEY = "algo_version"
# Cancel requests the OMS sends itself carry their reason in metadata under this key; intake
# records it on the order, and the cancelled event reports it.
CANCEL_REASON_KEY = "reason_code"
TWAP = "twap"
CHASE = "chase"
SOR = "sor"
ALGOS = (TWAP, CHASE, SOR)
# Algorithms whose parent is never sent to a venue itself: it works through child orders
# (each naming its venue) whose fills add up to the parent's.
PARENT_ALGOS = frozenset({TWAP, SOR})

MAX_SLICES = 100
MAX_DURATION_S = 86_400.0

# Numbers on the wire are JSON numbers: strings and booleans are refused, not coerced.
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class _MetadataParams(BaseModel):
    """Parameters read from flat ``metadata`` keys (the field aliases); other keys belong to
    someone else and are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> Self:
        """The parameters in ``metadata`` (raises ``pydantic.ValidationError``)."""
        return cls.model_validate(dict(metadata))

    def to_metadata(self) -> dict[str, MetadataValue]:
        """The same parameters as ``metadata`` keys (unset ones left out)."""
        return self.model_dump(by_alias=True, exclude_none=True)


class TwapParams(_MetadataParams):
    """A TWAP parent: ``slices`` child orders spread evenly over ``duration_s``."""

    duration_s: Number = Field(alias="twap_duration", gt=0, le=MAX_DURATION_S)
    slices: int = Field(alias="twap_slices", strict=True, ge=1, le=MAX_SLICES)
    # Each slice's time moves by up to +-randomize/2 of the interval (the first never does).
    randomize: Number = Field(0.0, alias="twap_randomize", ge=0, lt=1)
    # Set by intake when the parent starts: the instrument's minimum amount, so slicing needs
    # no instrument catalogue later.
    lot: Number | None = Field(None, alias="twap_lot", gt=0)
    # Set by intake (or the release of a held parent) when the parent starts working (ms):
    # slices count from then, not from the client's creation time, so a request that
    # reached the OMS late is still spread over its whole duration.
    start_ms: int | None = Field(None, alias="twap_start", strict=True, ge=0)
    # Why the OMS sliced an order nobody asked to slice (the slicing threshold).
    reason: str | None = Field(None, alias="twap_reason")


class ChaseParams(_MetadataParams):
    """A post-only chase: re-quoted at the touch, never beyond ``limit``."""

    limit: Number = Field(alias="chase_limit", gt=0)


class SorParams(_MetadataParams):
    """A routed order: split across ``venues`` (comma-separated names on the wire, e.g.
    ``"deribit,paper2"``) by the best price net of each venue's taker fee, as IOC limit
    children; what a venue leaves unfilled is routed again, at most ``max_attempts`` times."""

    venues: tuple[str, ...] = Field(alias="sor_venues")
    # A venue whose rate budget holds the next order back longer than this is left out.
    max_entry_delay_s: Number = Field(0.0, alias="sor_max_entry_delay", ge=0, le=60)
    max_attempts: int = Field(3, alias="sor_max_attempts", strict=True, ge=1, le=20)
    # Book levels per venue the router looks at.
    depth: int = Field(10, alias="sor_depth", strict=True, ge=1, le=100)

    @field_validator("venues", mode="before")
    @classmethod
    def _names(cls, value: Any) -> tuple[str, ...]:
        if not isinstance(value, str):
            raise ValueError("must be a comma-separated string of venue names")
        names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
        if not names:
            raise ValueError("names no venue")
        return names

    def to_metadata(self) -> dict[str, MetadataValue]:
        """The same parameters as ``metadata`` keys (venues comma-separated again)."""
        data = super().to_metadata()
        data["sor_venues"] = ",".join(self.venues)
        return data


AlgoParams = TwapParams | ChaseParams | SorParams


def works_through_children(metadata: Mapping[str, Any]) -> bool:
    """Is this order a parent that is never at the exchange itself (a TWAP's, a routed
    order's), working through child orders instead? Its cancel stops it at the OMS, it
    cannot be amended, and nobody looks for it at a venue."""
    return metadata.get(ALGO_KEY) in PARENT_ALGOS
# The parameters' model of a strategy by name, or why it cannot be used (a plugin registry).
ModelOf = Callable[[str], type[BaseModel] | Rejection]


class LifecycleOverrides(_MetadataParams):
    """Per-order overrides of the ``OMS_LIFECYCLE__*`` policy (same names); None: the
    settings' value."""

    error_handling: Literal["retry", "cancel", "manual"] | None = None
    retry_attempts: Number | None = Field(None, ge=0, le=20)
    partial_fill_handling: Literal["wait_remaining", "cancel_remaining"] | None = None
    partial_fill_grace: Number | None = Field(None, ge=0, le=86_400 * 30)
    auto_cancel_timeout: Number | None = Field(None, ge=0, le=86_400 * 365)

    @field_validator("retry_attempts")
    @classmethod
    def _whole(cls, value: float | None) -> float | None:
        if value is not None and not value.is_integer():
            raise ValueError("must be a whole number")
        return value

    def resolve(self, defaults: LifecycleSettings) -> LifecyclePolicy:
        """The policy of an order with these overrides."""
        return LifecyclePolicy(
            error_handling=self.error_handling or defaults.error_handling,
            retry_attempts=int(
                self.retry_attempts if self.retry_attempts is not None else defaults.retry_attempts
            ),
            partial_fill_handling=self.partial_fill_handling or defaults.partial_fill_handling,
            partial_fill_grace=_or(self.partial_fill_grace, defaults.partial_fill_grace),
            auto_cancel_timeout=_or(self.auto_cancel_timeout, defaults.auto_cancel_timeout),
        )


@dataclass(frozen=True)
class LifecyclePolicy:
    """What the OMS does with one order when time passes or something fails."""

    error_handling: Literal["retry", "cancel", "manual"]
    retry_attempts: int
    partial_fill_handling: Literal["wait_remaining", "cancel_remaining"]
    partial_fill_grace: float
    auto_cancel_timeout: float

    @property
    def submit_attempts(self) -> int:
        """How many times a submit may be sent: retries only under the ``retry`` strategy."""
        return 1 + (self.retry_attempts if self.error_handling == "retry" else 0)


@dataclass(frozen=True)
class OrderParams:
    """Everything an order's ``metadata`` configures, typed."""

    # TwapParams, ChaseParams, or the model of a plugin strategy.
    algo: BaseModel | None = None
    lifecycle: LifecycleOverrides = field(default_factory=LifecycleOverrides)


def parse_params(
    metadata: Mapping[str, Any], model_of: ModelOf | None = None
) -> OrderParams | Rejection:
    """The order's parameters, or why ``metadata`` holds a value we cannot apply.
    ``model_of``: the loaded strategies' parameter models (None: TWAP and chase only)."""
    lifecycle = parse_lifecycle(metadata)
    if isinstance(lifecycle, Rejection):
        return lifecycle
    algo = parse_algo(metadata, model_of)
    if isinstance(algo, Rejection):
        return algo
    return OrderParams(algo=algo, lifecycle=lifecycle)


def parse_algo(
    metadata: Mapping[str, Any], model_of: ModelOf | None = None
) -> BaseModel | Rejection | None:
    """The execution algorithm named by ``metadata.algo`` with its parameters; None: none.
    ``model_of``: the loaded strategies' parameter models (None: TWAP and chase only)."""
    name = metadata.get(ALGO_KEY)
    if name is None:
        return None
    model: type[BaseModel]
    if model_of is not None and isinstance(name, str):
        found = model_of(name)
        if isinstance(found, Rejection):
            return found
        model = found
    elif name == TWAP:
        model = TwapParams
    elif name == CHASE:
        model = ChaseParams
    elif name == SOR:
        model = SorParams
    else:
        return Rejection(
            ReasonCode.SCHEMA_INVALID,
            f"metadata.{ALGO_KEY}: {name!r} is not an algorithm; one of {', '.join(ALGOS)}",
        )
    try:
        return model.model_validate(dict(metadata))
    except ValidationError as exc:
        return _invalid(exc, f"{name}: ")
    except Exception as exc:  # a plugin's own validator failing otherwise
        return Rejection(ReasonCode.SCHEMA_INVALID, f"{name}: {type(exc).__name__}: {exc}")


def parse_lifecycle(metadata: Mapping[str, Any]) -> LifecycleOverrides | Rejection:
    """The lifecycle overrides in ``metadata``, or why one of them cannot be applied."""
    try:
        return LifecycleOverrides.from_metadata(metadata)
    except ValidationError as exc:
        return _invalid(exc)


def _invalid(exc: ValidationError, prefix: str = "") -> Rejection:
    parts = []
    for err in exc.errors()[:5]:
        key = ".".join(str(p) for p in err["loc"])
        parts.append(f"metadata.{key}: {err['msg']}" if key else err["msg"])
    return Rejection(ReasonCode.SCHEMA_INVALID, prefix + "; ".join(parts))


def _or(value: float | None, default: float) -> float:
    return float(default) if value is None else float(value)
