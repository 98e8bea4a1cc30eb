"""The built-in event types' version 1 schemas, exactly as the migration installs
them, in a registry that needs no database (for unit tests)."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import create_async_engine

from eventflow.schemas.registry import SchemaRegistry, UnknownTypes

MIGRATION = (
    Path(__file__).parents[1]
    / "src/eventflow/store/migrations/versions/0002_schema_registry.py"
)


def builtin_schemas() -> dict[str, dict[str, Any]]:
    spec = importlib.util.spec_from_file_location("migration_0002", MIGRATION)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    builtin: dict[str, dict[str, Any]] = module.BUILTIN
    return builtin


def offline_registry(
    unknown_types: UnknownTypes = "reject",
    extra: dict[str, list[dict[str, Any]]] | None = None,
) -> SchemaRegistry:
    """The built-in types as version 1, plus ``extra`` versions (2, 3…) per type."""
    engine = create_async_engine("postgresql+asyncpg://unused@127.0.0.1:1/unused")
    registry = SchemaRegistry(engine, unknown_types=unknown_types)
    when = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [(t, 1, s, "none", when) for t, s in builtin_schemas().items()]
    for event_type, versions in (extra or {}).items():
        start = 2 if event_type in builtin_schemas() else 1
        rows += [
            (event_type, start + i, s, "backward", when) for i, s in enumerate(versions)
        ]
    registry.install(rows)
    return registry
