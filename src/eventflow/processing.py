"""Validation and enrichment of one event, pure: models in, dicts out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from eventflow.errors import InvalidEvent
from eventflow.eventtypes import EVENT_TYPES, EnrichContext
from eventflow.models import Event


def enrich(event: Event, now: datetime) -> dict[str, Any]:
    """Validate ``event`` again (stream entries may come from anywhere) and return
    its enrichment. Raises ``InvalidEvent`` for events that can never be stored.

    Who processed the event and when are columns of ``processed_events``
    (``processed_by``, ``processed_at``); the enrichment holds what the event type
    adds, plus the time from receipt to processing.
    """
    spec = EVENT_TYPES.get(event.event_type)
    if spec is None:
        raise InvalidEvent(
            [{"loc": ["event_type"], "msg": "unknown event type", "type": "enum"}]
        )
    if spec.requires_user_id and not event.user_id:
        raise InvalidEvent(
            [{"loc": ["user_id"], "msg": "user_id is required", "type": "missing"}]
        )
    try:
        props = spec.properties.model_validate(event.properties)
    except ValidationError as exc:
        raise InvalidEvent(
            [
                {"loc": ["properties", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False)
            ]
        ) from exc
    extra = spec.enrich(props, EnrichContext(event.user_id, event.timestamp))
    latency_s = (now - event.received_at).total_seconds()
    extra["ingest_latency_ms"] = round(latency_s * 1000, 3)
    return extra
