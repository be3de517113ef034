"""Tables ClickHouse fills from the messages' own JSON (the sink's two busiest tables).

For ``position_changes`` and ``executions`` the sink does not build Python rows: it still
validates every message with pydantic (malformed ones are counted, logged and skipped as for
every topic), then sends the valid messages' bytes as ``JSONEachRow`` into a staging table
(``ENGINE = Null``, nothing stored) whose materialized view turns them into the real rows
(see migration 6). Parsing JSON in ClickHouse runs outside the GIL; building rows and
clickhouse-connect's Native serialization did not.

A message's bytes go as they are only when ClickHouse reads the same values from them as
pydantic did. That holds when the message passes pydantic's *strict* mode (JSON types exactly
as declared: no numeric strings, no ``5.0`` for an int, no ``"yes"`` for a bool) and carries
every field whose default is computed at validation time (``now``). Any other valid message
(rare: our producers write canonical JSON) takes the Python row path into the same table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pydantic
from pydantic_core import SchemaValidator

from oms.schemas import ExecutionReport, PositionRecord, Record, Topic
from oms.sinks.clickhouse import rows as R

# Settings of every raw insert, spelled out: a ClickHouse server's defaults differ from chDB's.
RAW_INSERT_SETTINGS: dict[str, Any] = {
    # Fields the staging table does not need (the report's order-level price, ...).
    "input_format_skip_unknown_fields": 1,
    # Omitted fields take the staging column's DEFAULT (the pydantic default).
    "input_format_defaults_for_omitted_fields": 1,
    # Fills as named tuples: objects in, missing elements defaulted, extra keys ignored.
    "input_format_json_named_tuples_as_objects": 1,
    "input_format_json_defaults_for_missing_elements_in_named_tuple": 1,
    "input_format_json_ignore_unknown_keys_in_named_tuple": 1,
    # One batch is a few MB: splitting it over parsing threads cost more CPU than it saved.
    "input_format_parallel_parsing": 0,
    # Correctly rounded floats, as Python parses them (the fast parser can be one ulp off).
    "precise_float_parsing": 1,
    # The token deduplicates the view's insert into the target table (a Null table keeps
    # nothing to deduplicate itself).
    "deduplicate_blocks_in_dependent_materialized_views": 1,
}


@dataclass(frozen=True)
class StagedTable:
    """A table the sink fills through a JSON staging table and a materialized view."""

    table: str  # the real table (its rows are identical to the Python path's)
    staging: str  # ENGINE = Null table the JSON goes into
    model: type[Record]
    rows: Callable[[Any], list[R.Row]]  # the Python path for the same record
    count: Callable[[Any], int]  # rows the record becomes in ``table``
    # Fields with a default computed at validation time: a message without one can't go raw.
    required: frozenset[str] = frozenset()
    # The model's own validator (same schema and config: the contract) but caching only
    # keys while parsing JSON: the values here are mostly unique ids and numbers, and
    # looking each one up in the string cache cost ~15% of the validation.
    validator: SchemaValidator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        schema = self.model.__pydantic_core_schema__
        validator = SchemaValidator(schema, config={"cache_strings": "keys"})
        object.__setattr__(self, "validator", validator)

    def parse(self, value: bytes) -> tuple[int, list[R.Row]]:
        """Validate one message: ``(rows, [])`` if its bytes can go to the staging table as
        they are, ``(0, rows)`` with its Python rows if not. Raises what pydantic raises for
        a malformed message (the lax validation's error, as on every other topic)."""
        try:
            record = self.validator.validate_json(value, strict=True)
        except pydantic.ValidationError:
            lax = self.model.model_validate_json(value)  # raises for a malformed message
            return 0, self.rows(lax)
        if not self.required <= record.__pydantic_fields_set__:
            return 0, self.rows(record)
        return self.count(record), []

    def fallback_rows(self, lines: list[bytes]) -> list[R.Row]:
        """Python rows for lines ClickHouse refused (all of them were valid for pydantic)."""
        return [row for line in lines for row in self.rows(self.model.model_validate_json(line))]


def _one(record: Any) -> int:
    return 1


def _fills(report: Any) -> int:
    return len(report.fills)


def _position_rows(record: Any) -> list[R.Row]:
    return [R.position_row(record)]


STAGED: dict[Topic, StagedTable] = {
    Topic.POSITIONS: StagedTable(
        "position_changes",
        "position_changes_json",
        PositionRecord,
        _position_rows,
        _one,
        frozenset({"timestamp"}),
    ),
    Topic.EXECUTION_REPORTS: StagedTable(
        "executions",
        "executions_json",
        ExecutionReport,
        R.execution_rows,
        _fills,
        frozenset({"received_at"}),
    ),
}
STAGED_BY_NAME: dict[str, StagedTable] = {s.staging: s for s in STAGED.values()}
