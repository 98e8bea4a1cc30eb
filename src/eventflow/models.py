"""Pydantic models at the boundaries: API requests and answers, stream messages.

The event envelope (id, type, user, time) is checked here; what an event type
requires of it is its JSON Schema, checked by ``eventflow.schemas.registry``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eventflow import jsoncodec
from eventflow.errors import InvalidEvent, UndecodableMessage
from eventflow.schemas.registry import SchemaRegistry

# Stream messages are written by EventFlow (properties nested at most as deep as
# the API allows, which is less than this), or are undecodable.
MESSAGE_MAX_DEPTH = 250
# Column widths of raw_events/processed_events (and the API's limits).
EVENT_TYPE_MAX, USER_ID_MAX, CORRELATION_ID_MAX = 64, 255, 128

EXAMPLE_EVENT: dict[str, Any] = {
    "event_id": "0b8f3c2e-7d4a-4c1e-9f57-3a2b1c0d9e8f",
    "event_type": "purchase",
    "user_id": "user_42",
    "timestamp": "2026-11-26T10:15:00.123456",
    "properties": {"amount": 2345.6789123456789, "currency": "EUR"},
}


class EventIn(BaseModel):
    """An event as a client sends it."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [EXAMPLE_EVENT]}
    )

    event_id: UUID | None = Field(
        default=None,
        description="Client-chosen id; re-sending it is safe. Generated when absent.",
    )
    event_type: str = Field(
        min_length=1,
        max_length=EVENT_TYPE_MAX,
        description="A registered event type (`GET /schemas`).",
        examples=["purchase"],
    )
    schema_version: int | None = Field(
        default=None,
        ge=1,
        le=2**31 - 1,
        description="Validate against this version of the type's schema; "
        "default: the latest.",
    )
    user_id: str | None = Field(default=None, min_length=1, max_length=USER_ID_MAX)
    partition_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=USER_ID_MAX,
        pattern=r"^[^\x00]*$",
        description="Events with the same key are processed in the order they were "
        "accepted. Default: `user_id`, else the event id.",
    )
    timestamp: datetime | None = Field(
        default=None,
        description="When it happened; offsets are converted to UTC, times without "
        "an offset are UTC. Defaults to the time of receipt.",
    )
    properties: dict[str, Any] = Field(default_factory=dict)


@dataclass(slots=True)
class Event:
    """A validated event, as stored in ``raw_events`` and carried in the stream.

    Built only from validated input (``validate_event``, ``decode_message``), so it
    is a plain dataclass: it is created once per event on the hot path.
    """

    event_id: UUID
    event_type: str
    user_id: str | None
    timestamp: datetime
    properties: dict[str, Any]
    received_at: datetime
    correlation_id: str
    body_hash: str
    schema_version: int | None = None
    source: str | None = None  # who sent it (raw_events only, not in the stream)
    partition_key: str | None = None

    def to_message(self) -> bytes:
        # orjson writes UUIDs and datetimes itself (RFC 4122, ISO 8601).
        return jsoncodec.dumps(
            {
                "id": self.event_id,
                "type": self.event_type,
                "ver": self.schema_version,
                "user": self.user_id,
                "ts": self.timestamp,
                "props": self.properties,
                "recv": self.received_at,
                "cid": self.correlation_id,
                "hash": self.body_hash,
                "pk": self.partition_key,
            }
        )


def _loc_error(loc: tuple[str | int, ...], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


def canonical_body(
    event_type: str, user_id: str | None, ts: datetime | None, props: dict[str, Any]
) -> bytes:
    return jsoncodec.dumps(
        [event_type, user_id, ts.isoformat() if ts else None, props], sort_keys=True
    )


def event_document(
    event_type: str, user_id: str | None, ts: datetime, props: dict[str, Any]
) -> dict[str, Any]:
    """What an event type's JSON Schema validates: the event, without its id."""
    document: dict[str, Any] = {
        "event_type": event_type,
        "timestamp": ts.isoformat(),
        "properties": props,
    }
    if user_id is not None:
        document["user_id"] = user_id
    return document


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def parse_event(item: Any, loc_prefix: tuple[str | int, ...] = ("body",)) -> EventIn:
    """The envelope of one event, or ``InvalidEvent`` naming each bad field."""
    try:
        return EventIn.model_validate(item)
    except ValidationError as exc:
        raise InvalidEvent(
            [
                _loc_error((*loc_prefix, *e["loc"]), e["msg"], e["type"])
                for e in exc.errors(include_url=False)
            ]
        ) from exc


def _utc(ts: datetime, loc: tuple[str | int, ...]) -> datetime:
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    try:
        return ts.astimezone(UTC)
    except OverflowError as exc:
        raise InvalidEvent(
            [
                _loc_error(
                    loc, "timestamp is out of range once converted to UTC", "range"
                )
            ]
        ) from exc


def validate_event(
    data: EventIn,
    *,
    registry: SchemaRegistry,
    received_at: datetime,
    correlation_id: str,
    max_future_skew: timedelta,
    loc_prefix: tuple[str | int, ...] = ("body",),
) -> Event:
    """Check the timestamp and the event type's schema. Raises ``InvalidEvent``
    naming each bad field (and the schema and version that refused it)."""
    ts = received_at
    if data.timestamp is not None:
        ts = _utc(data.timestamp, (*loc_prefix, "timestamp"))
        if ts > received_at + max_future_skew:
            raise InvalidEvent(
                [
                    _loc_error(
                        (*loc_prefix, "timestamp"),
                        "timestamp is in the future "
                        f"(more than {int(max_future_skew.total_seconds())} s ahead)",
                        "future",
                    )
                ]
            )
    props = data.properties
    version = registry.validate(
        data.event_type,
        data.schema_version,
        event_document(data.event_type, data.user_id, ts, props),
        loc_prefix,
    )
    canonical = canonical_body(
        data.event_type, data.user_id, data.timestamp and ts, props
    )
    # Cheap test first: orjson writes a NUL character as the escape \u0000.
    if b"\\u0000" in canonical and _has_nul([data.user_id, props]):
        # PostgreSQL text and jsonb cannot store NUL: refuse it here, alone,
        # rather than fail the group commit this event would share.
        field = "user_id" if data.user_id and "\x00" in data.user_id else "properties"
        raise InvalidEvent(
            [
                _loc_error(
                    (*loc_prefix, field),
                    "NUL characters (\\u0000) cannot be stored",
                    "string_nul",
                )
            ]
        )
    # Every value is validated above: construct without validating again. The
    # hash is the fingerprint of what the client sent (a re-send or a conflict).
    return Event(
        event_id=data.event_id or uuid4(),
        event_type=data.event_type,
        user_id=data.user_id,
        timestamp=ts,
        properties=props,
        received_at=received_at,
        correlation_id=correlation_id,
        body_hash=hashlib.sha256(canonical).hexdigest()[:32],
        schema_version=version,
        partition_key=data.partition_key,
    )


def _aware(value: object) -> datetime:
    if not isinstance(value, str):
        raise TypeError("timestamps must be ISO 8601 strings")
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _optional_str(value: object, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("expected a string")
    if len(value) > limit:
        raise ValueError(f"a field is longer than {limit} characters")
    return value


def _optional_version(value: object) -> int | None:
    if value is None or (type(value) is int and value >= 1):
        return value
    raise TypeError("ver must be a positive integer")


def decode_message(raw: bytes) -> Event:
    """Decode a stream entry written by EventFlow; anything else is undecodable.

    Checks every field's type by hand (this runs once per event in the worker's
    hot loop); the event's own rules are checked afterwards by its schema.
    """
    try:
        d = jsoncodec.loads(raw, max_depth=MESSAGE_MAX_DEPTH)
        if not isinstance(d, dict):
            raise TypeError("the message is not an object")
        event_type, props, event_id = d["type"], d["props"], d["id"]
        if not isinstance(event_type, str) or not isinstance(props, dict):
            raise TypeError("type must be a string and props an object")
        if not 0 < len(event_type) <= EVENT_TYPE_MAX:
            raise ValueError(f"type must have 1 to {EVENT_TYPE_MAX} characters")
        if not isinstance(event_id, str):
            raise TypeError("id must be a UUID string")
        return Event(
            event_id=UUID(event_id),
            event_type=event_type,
            user_id=_optional_str(d.get("user"), USER_ID_MAX),
            timestamp=_aware(d["ts"]),
            properties=props,
            received_at=_aware(d["recv"]),
            correlation_id=_optional_str(d.get("cid"), CORRELATION_ID_MAX) or "",
            body_hash=_optional_str(d.get("hash"), 64) or "",
            schema_version=_optional_version(d.get("ver")),
            partition_key=_optional_str(d.get("pk"), USER_ID_MAX),
        )
    except Exception as exc:  # any shape but EventFlow's own is undecodable
        raise UndecodableMessage(
            f"undecodable stream entry: {type(exc).__name__}: {exc}"[:500]
        ) from exc


# --- API answers -------------------------------------------------------------------


class EventStatus(StrEnum):
    accepted = "accepted"
    duplicate = "duplicate"
    processed = "processed"
    failed = "failed"
    quarantined = "quarantined"


class EventAccepted(BaseModel):
    event_id: UUID
    status: Literal["accepted", "duplicate"]
    message: str
    received_at: datetime


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[dict[str, Any]] = Field(
        min_length=1,
        description="Up to `EVENTFLOW_MAX_BATCH_REQUEST` (1,000) events, each "
        "shaped like the body of POST /events.",
        json_schema_extra={"examples": [[EXAMPLE_EVENT]]},
    )


class BatchItemResult(BaseModel):
    index: int
    status: Literal["accepted", "duplicate", "conflict", "invalid"]
    event_id: UUID | None = None
    errors: list[dict[str, Any]] | None = None


class BatchResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    received_at: datetime
    results: list[BatchItemResult]


class EventStatusOut(BaseModel):
    event_id: UUID
    event_type: str
    schema_version: int | None = None
    status: EventStatus
    correlation_id: str | None
    received_at: datetime
    processed_at: datetime | None = None
    failed_at: datetime | None = None
    attempts: int = 0
    error: str | None = None
    enrichment: dict[str, Any] | None = None


class DependencyState(BaseModel):
    status: Literal["ok", "down"]
    detail: str | None = None


Health = Literal["healthy", "unhealthy"]


class ServicesOut(BaseModel):
    database: Health
    redis: Health


class HealthOut(BaseModel):
    """``status`` and ``services`` as the original EventFlow answered; ``postgres``
    and ``redis`` add the reason when one is down."""

    status: Health
    timestamp: datetime
    version: str
    services: ServicesOut
    postgres: DependencyState
    redis: DependencyState


class ServiceInfo(BaseModel):
    service: str
    version: str
    status: Literal["running"]
    docs: str
