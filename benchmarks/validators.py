"""Cost of validating one event against the purchase schema, per validator.

    .venv/bin/python benchmarks/validators.py

jsonschema-rs is what EventFlow uses. fastjsonschema (drafts 4, 6 and 7 only) and
a pydantic model like the one EventFlow had before its schema registry are
measured when installed (``pip install fastjsonschema``), for comparison.
"""

from __future__ import annotations

import json
import platform
import timeit
from collections.abc import Callable
from typing import Any

import jsonschema_rs
from pydantic import BaseModel, ConfigDict, Field

EVENT: dict[str, Any] = {
    "event_type": "purchase",
    "user_id": "user_42",
    "timestamp": "2026-11-26T10:15:00.123456+00:00",
    "properties": {"amount": 2345.678912345679, "product_id": "p_1", "currency": "USD"},
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["properties"],
    "properties": {
        "properties": {
            "type": "object",
            "required": ["amount"],
            "properties": {"amount": {"type": "number", "exclusiveMinimum": 0}},
        }
    },
}


class PurchaseProperties(BaseModel):
    model_config = ConfigDict(extra="allow")
    amount: float = Field(gt=0)


def candidates() -> dict[str, Callable[[], object]]:
    validator = jsonschema_rs.Draft202012Validator(SCHEMA)
    found: dict[str, Callable[[], object]] = {
        f"jsonschema-rs {jsonschema_rs.__version__ if hasattr(jsonschema_rs, '__version__') else ''} (draft 2020-12)".replace(  # noqa: E501
            "  ", " "
        ): lambda: validator.is_valid(EVENT),
        "pydantic model (properties only)": lambda: PurchaseProperties.model_validate(
            EVENT["properties"]
        ),
    }
    try:
        import fastjsonschema

        compiled = fastjsonschema.compile(
            {**SCHEMA, "$schema": "http://json-schema.org/draft-07/schema#"}
        )
        found["fastjsonschema (draft 7)"] = lambda: compiled(EVENT)
    except ImportError:
        pass
    return found


def main() -> None:
    results = {}
    for name, fn in candidates().items():
        runs = timeit.repeat(fn, number=100_000, repeat=5)
        results[name] = round(min(runs) / 100_000 * 1e6, 3)
    print(
        json.dumps(
            {"python": platform.python_version(), "us_per_event": results}, indent=2
        )
    )


if __name__ == "__main__":
    main()
