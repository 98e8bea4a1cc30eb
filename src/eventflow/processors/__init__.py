"""Processors: the enrichment of each event type, built in or installed.

A processor is a function that takes an ``EventView`` (a validated event, read-only)
and returns a JSON object, stored as the event's ``enrichment``. EventFlow ships
one for each built-in type (``eventflow.processors.builtin``); any installed
package can add or replace one through the ``eventflow.processors`` entry point
group, the entry point's name being the event type::

    [project.entry-points."eventflow.processors"]
    invoice = "acme_eventflow:enrich_invoice"

Processors run in the worker, after validation against the event's schema. An
exception raised by a processor dead-letters that event (with its message), so a
fixed processor can be deployed and the event replayed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from importlib.metadata import entry_points
from typing import Any, NamedTuple
from uuid import UUID

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "eventflow.processors"


class EventView(NamedTuple):
    """What a processor sees of an event (read-only).

    Numbers in ``properties`` are ``int`` or ``float``, or ``decimal.Decimal`` for a
    number a double cannot hold exactly (more than 15 significant digits, integers
    beyond 64 bits).
    """

    event_id: UUID
    event_type: str
    schema_version: int | None
    user_id: str | None
    timestamp: datetime
    received_at: datetime
    properties: Mapping[str, Any]


Processor = Callable[[EventView], Mapping[str, Any]]


def load_processors() -> dict[str, Processor]:
    """The built-in processors, then every installed plug-in (which may replace a
    built-in one; the replacement is logged)."""
    from eventflow.processors.builtin import BUILTIN

    processors: dict[str, Processor] = dict(BUILTIN)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            fn = ep.load()
        except Exception:
            log.exception(
                "processor plug-in failed to load", extra={"entry_point": ep.value}
            )
            continue
        if not callable(fn):
            log.error(
                "processor plug-in is not callable", extra={"entry_point": ep.value}
            )
            continue
        if ep.name in processors:
            log.warning(
                "processor plug-in replaces an earlier one",
                extra={"event_type": ep.name, "entry_point": ep.value},
            )
        processors[ep.name] = fn
        log.info(
            "processor plug-in registered",
            extra={"event_type": ep.name, "entry_point": ep.value},
        )
    return processors
