"""JSON Schemas of the contract, generated from the pydantic models into `schemas/` (a test checks for drift)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from .events import AlignmentAlert, Annotation, HumanActionEvent, OutcomeEvent, PredictionEvent

SCHEMAS: dict[str, Any] = {
    "prediction.v1.json": PredictionEvent,
    "human_action.v1.json": HumanActionEvent,
    "outcome.v1.json": OutcomeEvent,
    "annotation.v1.json": Annotation,
    "alignment_alert.v1.json": AlignmentAlert,
}


def render(model: Any) -> bytes:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **model.model_json_schema()}
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def write_schemas(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, model in SCHEMAS.items():
        path = out / name
        path.write_bytes(render(model))
        paths.append(path)
    return paths
