"""The committed JSON Schemas in schemas/ match the pydantic models, and validate real samples."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import orjson
import pytest

from stream.schemas import SCHEMAS, render

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_committed_schema_matches_the_model(name: str) -> None:
    committed = (ROOT / "schemas" / name).read_bytes()
    assert committed == render(SCHEMAS[name]), f"schemas/{name} drifted: run `trustgap schemas`"


@pytest.mark.parametrize(("name", "sample", "valid"), [
    ("prediction.v1.json", {"schema_version": 1, "event_id": "e", "prediction_id": "p", "model": "m",
                            "model_version": "1", "ts": "2026-11-01T12:00:00Z", "label": "x"}, True),
    ("prediction.v1.json", {"schema_version": 1, "event_id": "e", "model": "m"}, False),
    ("human_action.v1.json", {"schema_version": 1, "event_id": "e", "prediction_id": "p",
                              "ts": "2026-11-01T12:00:00Z", "action": "fold"}, False),
])
def test_schemas_validate_samples(name: str, sample: dict[str, object], valid: bool) -> None:
    schema = orjson.loads((ROOT / "schemas" / name).read_bytes())
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(sample) is valid
