"""Validation and enrichment of one stream entry's event: the worker's pure step."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from eventflow.errors import InvalidEvent
from eventflow.models import Event, event_document
from eventflow.processors import EventView, Processor
from eventflow.schemas.registry import SchemaRegistry


def enrich(
    event: Event,
    now: datetime,
    registry: SchemaRegistry,
    processors: Mapping[str, Processor],
) -> tuple[int | None, dict[str, Any]]:
    """Validate ``event`` again (stream entries may come from anywhere) against the
    schema version the API recorded, and return that version and the enrichment.

    Raises ``InvalidEvent`` for events that can never be stored; whatever a
    processor raises dead-letters the event too.

    Who processed the event and when are columns of ``processed_events``
    (``processed_by``, ``processed_at``); the enrichment holds what the event type's
    processor adds, plus the time from receipt to processing.
    """
    version = registry.validate(
        event.event_type,
        event.schema_version,
        event_document(
            event.event_type, event.user_id, event.timestamp, event.properties
        ),
        loc_prefix=(),
    )
    processor = processors.get(event.event_type)
    extra: dict[str, Any] = {}
    if processor is not None:
        view = EventView(
            event.event_id,
            event.event_type,
            version,
            event.user_id,
            event.timestamp,
            event.received_at,
            event.properties,
        )
        result = processor(view)
        if not isinstance(result, Mapping):
            raise InvalidEvent(
                [
                    {
                        "loc": ["enrichment"],
                        "msg": f"the {event.event_type} processor returned "
                        f"{type(result).__name__}, not an object",
                        "type": "processor",
                    }
                ]
            )
        extra.update(result)
    latency_s = (now - event.received_at).total_seconds()
    extra["ingest_latency_ms"] = round(latency_s * 1000, 3)
    return version, extra
