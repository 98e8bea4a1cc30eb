"""An example EventFlow processor plug-in.

EventFlow calls ``enrich_checkout`` for every valid ``checkout`` event and stores
what it returns as the event's ``enrichment``. Install it next to EventFlow
(``pip install ./examples/processor-plugin``) and restart the workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REGIONS = {"DE": "eu", "FR": "eu", "GB": "eu", "US": "na", "CA": "na", "JP": "apac"}


def enrich_checkout(event: Any) -> Mapping[str, Any]:
    """``event`` is an ``eventflow.processors.EventView``."""
    country = str(event.properties.get("country", "")).upper()
    items = event.properties.get("items", [])
    return {
        "region": REGIONS.get(country, "other"),
        "item_count": len(items) if isinstance(items, list) else 0,
        "schema_version": event.schema_version,
    }
