"""Why a request cannot proceed: the one value every check returns on refusal."""

from __future__ import annotations

from dataclasses import dataclass

from oms.schemas.enums import ReasonCode


@dataclass(frozen=True)
class Rejection:
    """A reason code and a human message."""

    reason_code: ReasonCode
    message: str
