"""The committed JSON Schemas match the pydantic models, and accept what we put on the wire."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from oms.schemas import OrderRequest
from oms.schemas.export import EXPORTED, render

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


@pytest.mark.parametrize("model", EXPORTED, ids=lambda m: m.__name__)
def test_committed_schema_is_current(model: type) -> None:
    path = SCHEMAS / f"{model.__name__}.json"
    assert path.read_text() == render(model), f"run: python -m oms.schemas.export ({path})"


def test_wire_request_validates_against_exported_schema() -> None:
    schema = json.loads((SCHEMAS / "OrderRequest.json").read_text())
    request = OrderRequest(
        request_id="r1",
        account_id="a",
        instrument_name="BTC-PERPETUAL",
        amount=10,
        direction="buy",
        price=50_000.0,
    )
    jsonschema.validate(json.loads(request.to_bytes()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"request_id": "r1", "account_id": "a", "amount": "ten"}, schema)
