"""Realistic random events of every type, with client-generated ids."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

EventKind = Literal["purchase", "user_signup", "page_view", "custom"]
KINDS: tuple[EventKind, ...] = ("purchase", "user_signup", "page_view", "custom")

_CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF")
_PLANS = ("free", "starter", "pro", "enterprise")
_SOURCES = ("organic", "ads", "referral", "newsletter")
_DOMAINS = ("example.com", "example.org", "mail.test", "corp.example")
_PAGES = ("/", "/pricing", "/docs", "/blog/launch", "/cart", "/account")
_REFERRERS = ("https://search.example/", "https://news.example/item", None)
_CUSTOM_NAMES = ("video.played", "feature_flag:toggled", "export-csv", "share")


class EventGenerator:
    """Makes valid events; ``kind`` fixes the type, otherwise types are mixed."""

    def __init__(self, kind: EventKind | None = None, seed: int | None = None) -> None:
        self.kind = kind
        self.rng = random.Random(seed)

    def event(self) -> dict[str, Any]:
        rng = self.rng
        kind = self.kind or rng.choice(KINDS)
        user = f"user-{rng.randrange(1, 100_000)}"
        when = datetime.now(UTC) - timedelta(seconds=rng.uniform(0, 120))
        props: dict[str, Any]
        if kind == "purchase":
            props = {
                "amount": round(rng.uniform(1, 1500), 2),
                "currency": rng.choice(_CURRENCIES),
                "product_id": f"sku-{rng.randrange(1, 5000)}",
                "quantity": rng.randint(1, 4),
            }
        elif kind == "user_signup":
            props = {
                "email": f"{user}@{rng.choice(_DOMAINS)}",
                "plan": rng.choice(_PLANS),
                "source": rng.choice(_SOURCES),
            }
        elif kind == "page_view":
            props = {
                "page": rng.choice(_PAGES),
                "duration_ms": rng.randrange(50, 60_000),
            }
            referrer = rng.choice(_REFERRERS)
            if referrer:
                props["referrer"] = referrer
            if rng.random() < 0.5:
                props["session_id"] = f"s-{rng.getrandbits(48):012x}"
        else:
            props = {"name": rng.choice(_CUSTOM_NAMES), "value": rng.randrange(100)}
        return {
            "event_id": str(uuid.uuid4()),
            "event_type": kind,
            "user_id": user,
            "timestamp": when.isoformat(),
            "properties": props,
        }

    def bodies(self, count: int, batch: int) -> list[tuple[list[str], bytes]]:
        """``count`` events as pre-serialized request bodies of ``batch`` events
        (``batch`` 1 means one event per body, for ``POST /events``), each with
        the ids of the events it carries."""
        out: list[tuple[list[str], bytes]] = []
        for start in range(0, count, batch):
            events = [self.event() for _ in range(min(batch, count - start))]
            ids = [e["event_id"] for e in events]
            payload: Any = events[0] if batch == 1 else {"events": events}
            out.append((ids, orjson.dumps(payload)))
        return out
