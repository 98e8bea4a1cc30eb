"""The event types a process knows: compiled validators, cached, kept fresh.

Every API and worker process holds a ``SchemaRegistry``. It loads all versions of
all event types from ``event_schemas`` once, compiles each with jsonschema-rs
(draft 2020-12), and afterwards asks PostgreSQL only for the highest row id, at
most every ``schema_refresh_s`` (a new version is a new row): validation itself
never touches the database.

This module is the one home of the event rules. The API validates requests with it
(a ``422`` names the schema, its version and each failing JSON path) and workers
validate stream entries with it, against the version the API recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import jsonschema_rs
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.errors import DependencyUnavailable, InvalidEvent, UnknownSchema
from eventflow.store.tables import event_schemas

log = logging.getLogger(__name__)

UnknownTypes = Literal["reject", "accept"]


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One stored version of one event type."""

    event_type: str
    version: int
    schema: dict[str, Any]
    compatibility: str
    created_at: datetime
    validator: Any = field(repr=False, compare=False)


def compile_schema(schema: Any) -> Any:
    """A draft 2020-12 validator, or ``ValueError`` saying what is wrong."""
    if not isinstance(schema, dict | bool):
        raise ValueError("a JSON Schema is an object (or true/false)")
    try:
        jsonschema_rs.meta.validate(schema)
    except jsonschema_rs.ValidationError as exc:
        where = "/".join(str(p) for p in exc.instance_path)
        raise ValueError(f"not a valid JSON Schema at /{where}: {exc.message}") from exc
    try:
        return jsonschema_rs.Draft202012Validator(schema)
    except (ValueError, jsonschema_rs.ReferencingError) as exc:
        raise ValueError(f"the schema cannot be compiled: {exc}") from exc


def json_path(parts: Iterable[str | int]) -> str:
    """``$.properties.amount``, ``$.items[0]``: a JSONPath for an error's place."""
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def schema_errors(
    found: SchemaVersion, document: Any, loc_prefix: tuple[str | int, ...]
) -> list[dict[str, Any]]:
    """Every violation of ``found`` by ``document``, in the API's error shape."""
    errors = []
    for error in found.validator.iter_errors(document):
        path = list(error.instance_path)
        if isinstance(error.kind, jsonschema_rs.ValidationErrorKind.Required):
            path.append(str(error.kind.property))  # name the missing field itself
        errors.append(
            {
                "loc": [*loc_prefix, *path],
                "msg": error.message,
                "type": "schema",
                "schema": found.event_type,
                "schema_version": found.version,
                "path": json_path(path),
            }
        )
    return errors


class SchemaRegistry:
    """Cached validators of every registered event type (all versions)."""

    def __init__(
        self,
        engine: AsyncEngine,
        refresh_s: float = 2.0,
        unknown_types: UnknownTypes = "reject",
    ) -> None:
        self.engine = engine
        self.refresh_s = refresh_s
        self.unknown_types = unknown_types
        self._versions: dict[str, dict[int, SchemaVersion]] = {}
        self._latest: dict[str, SchemaVersion] = {}
        self._mark: int | None = None
        self._checked = 0.0
        self._last_miss_refresh = 0.0

    # --- loading ---------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._mark is not None

    async def refresh(self, force: bool = False) -> bool:
        """Reload if a version was added since the last load; ``True`` if it did.

        Costs one ``SELECT max(id)`` when nothing changed; at most one per
        ``refresh_s`` unless ``force``.
        """
        now = time.monotonic()
        if not force and self.loaded and now - self._checked < self.refresh_s:
            return False
        self._checked = now
        async with self.engine.connect() as conn:
            mark = await conn.scalar(
                select(func.coalesce(func.max(event_schemas.c.id), 0))
            )
            if mark == self._mark:
                return False
            rows = (
                await conn.execute(
                    select(event_schemas).order_by(
                        event_schemas.c.event_type, event_schemas.c.version
                    )
                )
            ).all()
        self.install(
            (r.event_type, r.version, r.schema, r.compatibility, r.created_at)
            for r in rows
        )
        self._mark = int(mark or 0)
        log.info(
            "event schemas loaded",
            extra={"types": len(self._latest), "versions": len(rows)},
        )
        return True

    async def refresh_after_miss(self, min_interval_s: float = 1.0) -> bool:
        """After an unknown type or version: reload now rather than at the next
        refresh, at most once per ``min_interval_s`` (unknown types cost no more
        than that, however many arrive). ``True`` if anything changed."""
        now = time.monotonic()
        if now - self._last_miss_refresh < min_interval_s:
            return False
        self._last_miss_refresh = now
        return await self.refresh(force=True)

    async def ensure_loaded(self) -> None:
        """Load once; ``DependencyUnavailable`` if PostgreSQL cannot be asked."""
        if self.loaded:
            return
        try:
            await self.refresh(force=True)
        except Exception as exc:
            log.warning(
                "event schemas could not be loaded",
                extra={"error": f"{type(exc).__name__}: {exc}"[:300]},
            )
            raise DependencyUnavailable("postgres", "event schemas not loaded") from exc

    def install(self, rows: Iterable[tuple[str, int, Any, str, datetime]]) -> None:
        """Replace the cache with these versions (a version that does not compile
        is logged and left out: events naming it are refused)."""
        versions: dict[str, dict[int, SchemaVersion]] = {}
        for event_type, version, schema, compatibility, created_at in rows:
            try:
                validator = compile_schema(schema)
            except ValueError as exc:
                log.error(
                    "stored schema does not compile",
                    extra={
                        "event_type": event_type,
                        "version": version,
                        "error": str(exc),
                    },
                )
                continue
            versions.setdefault(event_type, {})[version] = SchemaVersion(
                event_type, version, schema, compatibility, created_at, validator
            )
        self._versions = versions
        self._latest = {t: v[max(v)] for t, v in versions.items()}
        if self._mark is None:
            self._mark = -1  # installed by hand: a refresh reloads from the database

    # --- reading ---------------------------------------------------------------------

    @property
    def types(self) -> Mapping[str, SchemaVersion]:
        """The latest version of each known type."""
        return self._latest

    def label(self, event_type: str | None) -> str:
        """A metrics label: the type if registered, else ``unknown`` (bounded)."""
        return event_type if event_type in self._latest else "unknown"

    def get(self, event_type: str, version: int | None = None) -> SchemaVersion | None:
        if version is None:
            return self._latest.get(event_type)
        return self._versions.get(event_type, {}).get(version)

    def validate(
        self,
        event_type: str,
        version: int | None,
        document: Any,
        loc_prefix: tuple[str | int, ...] = ("body",),
    ) -> int | None:
        """Check ``document`` against ``version`` (default: the latest) of its type.

        Returns the version it was checked against, or ``None`` for an unknown type
        that settings say to accept. Raises ``InvalidEvent`` naming the schema, its
        version and each failing JSON path.
        """
        found = self.get(event_type, version)
        if found is None:
            self._refuse_missing(event_type, version, loc_prefix)
            return None
        if found.validator.is_valid(document):
            return found.version
        raise InvalidEvent(schema_errors(found, document, loc_prefix))

    def _refuse_missing(
        self, event_type: str, version: int | None, loc_prefix: tuple[str | int, ...]
    ) -> None:
        if not self.loaded:
            raise DependencyUnavailable("postgres", "event schemas not loaded")
        known = self._versions.get(event_type)
        if known is not None:
            raise UnknownSchema(
                [
                    {
                        "loc": [*loc_prefix, "schema_version"],
                        "msg": f"{event_type} has no version {version}; known: "
                        + ", ".join(str(v) for v in sorted(known)),
                        "type": "schema_version",
                    }
                ]
            )
        if self.unknown_types == "accept" and version is None:
            return
        raise UnknownSchema(
            [
                {
                    "loc": [*loc_prefix, "event_type"],
                    "msg": f"unknown event type {event_type!r}; known types: "
                    + ", ".join(sorted(self._latest)),
                    "type": "enum",
                }
            ]
        )
