"""The event types EventFlow knows: their validation and their enrichment.

This module is the one place to extend. To add an event type, write a pydantic model
for its ``properties`` and an ``enrich`` function, and register an ``EventType`` in
``EVENT_TYPES`` below. The API validates requests with it (a bad field is a ``422``
naming the field) and workers enrich events with it before storing them. The
``custom`` type at the end is the worked example.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_serializer

JSON = dict[str, Any]


class Properties(BaseModel):
    """Base of every properties model: unknown keys are kept, not dropped."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)


@dataclass(frozen=True)
class EnrichContext:
    """What an enrichment may read besides the event itself."""

    user_id: str | None
    timestamp: datetime


@dataclass(frozen=True)
class EventType:
    """One event type: how to validate its properties and how to enrich it."""

    name: str
    properties: type[Properties]
    enrich: Callable[[Properties, EnrichContext], JSON]
    requires_user_id: bool = False
    description: str = ""


# --- purchase ---------------------------------------------------------------------


class PurchaseProperties(Properties):
    amount: Decimal = Field(gt=0, max_digits=14, decimal_places=4)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    product_id: str | None = Field(default=None, max_length=255)
    quantity: int = Field(default=1, ge=1)

    @field_serializer("amount")
    def _amount_as_number(self, value: Decimal) -> float:
        return float(value)


PURCHASE_TIERS: tuple[tuple[Decimal, str], ...] = (
    (Decimal("20"), "small"),
    (Decimal("100"), "medium"),
    (Decimal("1000"), "large"),
)


def purchase_category(amount: Decimal) -> str:
    for limit, name in PURCHASE_TIERS:
        if amount < limit:
            return name
    return "premium"


def enrich_purchase(props: Properties, ctx: EnrichContext) -> JSON:
    assert isinstance(props, PurchaseProperties)
    return {
        "category": purchase_category(props.amount),
        "total": float(props.amount * props.quantity),
    }


# --- user_signup -------------------------------------------------------------------


class SignupProperties(Properties):
    email: str | None = Field(
        default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
    )
    plan: str | None = Field(default=None, max_length=64)
    source: str | None = Field(default=None, max_length=128)


def enrich_signup(props: Properties, ctx: EnrichContext) -> JSON:
    assert isinstance(props, SignupProperties)
    domain = props.email.rsplit("@", 1)[1].lower() if props.email else None
    return {"email_domain": domain, "plan": props.plan or "free"}


# --- page_view ---------------------------------------------------------------------


class PageViewProperties(Properties):
    page: str = Field(min_length=1, max_length=2048)
    referrer: str | None = Field(default=None, max_length=2048)
    session_id: str | None = Field(default=None, max_length=128)
    duration_ms: int | None = Field(default=None, ge=0)


def enrich_page_view(props: Properties, ctx: EnrichContext) -> JSON:
    assert isinstance(props, PageViewProperties)
    session = props.session_id
    if session is None:
        # Without a client session, group a user's views per day.
        basis = f"{ctx.user_id or 'anonymous'}:{ctx.timestamp.date().isoformat()}"
        session = hashlib.sha1(basis.encode()).hexdigest()[:16]
    referrer_host = urlsplit(props.referrer).hostname if props.referrer else None
    return {
        "session": {
            "id": session,
            "derived": props.session_id is None,
            "path": urlsplit(props.page).path or "/",
            "referrer_host": referrer_host,
            "duration_ms": props.duration_ms,
        }
    }


# --- custom: the example to copy ---------------------------------------------------


class CustomProperties(Properties):
    """A user-defined event: needs a ``name``; every other key is kept as sent."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")


def enrich_custom(props: Properties, ctx: EnrichContext) -> JSON:
    assert isinstance(props, CustomProperties)
    return {"name": props.name.lower(), "field_count": len(props.model_extra or {})}


EVENT_TYPES: Mapping[str, EventType] = {
    t.name: t
    for t in (
        EventType(
            "purchase",
            PurchaseProperties,
            enrich_purchase,
            description="A completed purchase; `amount` must be positive.",
        ),
        EventType(
            "user_signup",
            SignupProperties,
            enrich_signup,
            requires_user_id=True,
            description="A new account; `user_id` is required.",
        ),
        EventType(
            "page_view",
            PageViewProperties,
            enrich_page_view,
            description="A page view; `page` is required, sessions are derived.",
        ),
        EventType(
            "custom",
            CustomProperties,
            enrich_custom,
            description="Your own event; `properties.name` names it.",
        ),
    )
}
