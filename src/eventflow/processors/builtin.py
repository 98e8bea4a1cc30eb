"""The processors of the four built-in event types.

They enrich as the original EventFlow did, and read properties defensively: the
schemas that validate these types can be changed at run time, so a processor never
assumes more than "a JSON object".
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from eventflow.processors import EventView, Processor

HIGH_VALUE_ABOVE = 1000


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def purchase(event: EventView) -> Mapping[str, Any]:
    """``category``: ``high_value`` above 1000, else ``standard``."""
    amount = event.properties.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int | float | Decimal):
        return {"category": None}
    return {"category": "high_value" if amount > HIGH_VALUE_ABOVE else "standard"}


def user_signup(event: EventView) -> Mapping[str, Any]:
    """The e-mail domain and the sign-up source."""
    email = _text(event.properties.get("email"))
    domain = (
        email.rpartition("@")[2].lower() or None if email and "@" in email else None
    )
    return {"email_domain": domain, "source": _text(event.properties.get("source"))}


def _host(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return urlsplit(value).hostname
    except ValueError:  # e.g. "http://[" : not a URL, kept as sent
        return None


def page_view(event: EventView) -> Mapping[str, Any]:
    """Session data: the page (``url`` or ``page``), its path, the referrer, and the
    session start (the event's timestamp)."""
    props = event.properties
    page = _text(props.get("url")) or _text(props.get("page"))
    path = None
    if page is not None:
        try:
            path = urlsplit(page).path or "/"
        except ValueError:
            path = None
    referrer = _text(props.get("referrer"))
    return {
        "session": {
            "start": event.timestamp.isoformat(),
            "id": _text(props.get("session_id")),
            "page": page,
            "path": path,
            "referrer": referrer,
            "referrer_host": _host(referrer),
        }
    }


def custom(event: EventView) -> Mapping[str, Any]:
    """What the event is called (``name``, else ``action``) and its size."""
    props = event.properties
    name = _text(props.get("name")) or _text(props.get("action"))
    return {"name": name, "field_count": len(props)}


BUILTIN: Mapping[str, Processor] = {
    "purchase": purchase,
    "user_signup": user_signup,
    "page_view": page_view,
    "custom": custom,
}
