"""Reading and registering schema versions in PostgreSQL.

Versions are immutable and numbered from 1 per event type. Registering takes a
per-type advisory lock, so two concurrent registrations get consecutive versions
and each is checked against the one before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventflow.schemas.compat import incompatibilities
from eventflow.schemas.registry import compile_schema
from eventflow.store.tables import event_schemas

Compatibility = Literal["backward", "none"]


class InvalidSchema(ValueError):
    """The document is not a JSON Schema (draft 2020-12) EventFlow can compile."""


@dataclass
class Check:
    """What registering ``schema`` as the next version of a type would do."""

    event_type: str
    next_version: int
    latest_version: int | None
    compatibility: Compatibility
    compatible: bool
    incompatibilities: list[str] = field(default_factory=list)
    unchanged: bool = False


class Incompatible(Exception):
    def __init__(self, check: Check) -> None:
        super().__init__("; ".join(check.incompatibilities))
        self.check = check


@dataclass(frozen=True)
class StoredVersion:
    event_type: str
    version: int
    schema: Any
    compatibility: str
    created_at: datetime


def _stored(row: Any) -> StoredVersion:
    return StoredVersion(
        row.event_type, row.version, row.schema, row.compatibility, row.created_at
    )


async def list_types(engine: AsyncEngine) -> list[dict[str, Any]]:
    """Each type with its latest version, number of versions and last change."""
    query = (
        select(
            event_schemas.c.event_type,
            func.max(event_schemas.c.version).label("latest_version"),
            func.count().label("versions"),
            func.max(event_schemas.c.created_at).label("updated_at"),
        )
        .group_by(event_schemas.c.event_type)
        .order_by(event_schemas.c.event_type)
    )
    async with engine.connect() as conn:
        # Labels are quoted_name, a str subclass that orjson refuses as a key.
        return [
            {str(k): v for k, v in r._mapping.items()}
            for r in await conn.execute(query)
        ]


async def list_versions(engine: AsyncEngine, event_type: str) -> list[StoredVersion]:
    query = (
        select(event_schemas)
        .where(event_schemas.c.event_type == event_type)
        .order_by(event_schemas.c.version)
    )
    async with engine.connect() as conn:
        return [_stored(r) for r in await conn.execute(query)]


async def get_version(
    engine: AsyncEngine, event_type: str, version: int | None = None
) -> StoredVersion | None:
    """One version, or the latest with ``version=None``."""
    async with engine.connect() as conn:
        return await _get(conn, event_type, version)


async def _get(
    conn: AsyncConnection, event_type: str, version: int | None
) -> StoredVersion | None:
    query = select(event_schemas).where(event_schemas.c.event_type == event_type)
    if version is None:
        query = query.order_by(event_schemas.c.version.desc()).limit(1)
    else:
        query = query.where(event_schemas.c.version == version)
    row = (await conn.execute(query)).first()
    return None if row is None else _stored(row)


def _judge(
    event_type: str,
    latest: StoredVersion | None,
    schema: Any,
    compatibility: Compatibility,
) -> Check:
    try:
        compile_schema(schema)
    except ValueError as exc:
        raise InvalidSchema(str(exc)) from exc
    if latest is None:
        return Check(event_type, 1, None, compatibility, True)
    check = Check(event_type, latest.version + 1, latest.version, compatibility, True)
    if latest.schema == schema:
        check.unchanged = True
        return check
    check.incompatibilities = incompatibilities(latest.schema, schema)
    check.compatible = not check.incompatibilities
    return check


async def check(
    engine: AsyncEngine, event_type: str, schema: Any, compatibility: Compatibility
) -> Check:
    """Would ``schema`` be accepted as the next version, and if not, why not."""
    async with engine.connect() as conn:
        latest = await _get(conn, event_type, None)
    return _judge(event_type, latest, schema, compatibility)


async def register(
    engine: AsyncEngine, event_type: str, schema: Any, compatibility: Compatibility
) -> tuple[StoredVersion, bool]:
    """Store ``schema`` as the next version; ``(version, created)``.

    The same document as the latest version registers nothing and returns that
    version. ``Incompatible`` (with reasons) when ``compatibility`` is
    ``backward`` and the schema would refuse events the latest version accepted.
    """
    async with engine.begin() as conn:
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
            {"key": f"eventflow.schema:{event_type}"},
        )
        latest = await _get(conn, event_type, None)
        verdict = _judge(event_type, latest, schema, compatibility)
        if verdict.unchanged and latest is not None:
            return latest, False
        if compatibility == "backward" and not verdict.compatible:
            raise Incompatible(verdict)
        row = (
            await conn.execute(
                insert(event_schemas)
                .values(
                    event_type=event_type,
                    version=verdict.next_version,
                    schema=schema,
                    compatibility=compatibility,
                )
                .returning(event_schemas)
            )
        ).one()
    return _stored(row), True
