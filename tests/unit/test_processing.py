"""Enrichment and failure classification, pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import asyncpg
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import DBAPIError

from eventflow.errors import DependencyUnavailable, InvalidEvent
from eventflow.models import Event
from eventflow.pipeline.processing import enrich
from eventflow.pipeline.retry import is_transient
from eventflow.processors import EventView, load_processors
from tests.schemas_fixture import offline_registry

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
REGISTRY = offline_registry()
PROCESSORS = load_processors()


def event(event_type: str, props: dict[str, object], user: str | None = "u") -> Event:
    return Event(
        event_id=UUID("00000000-0000-4000-8000-000000000001"),
        event_type=event_type,
        user_id=user,
        timestamp=NOW,
        properties=props,
        received_at=NOW - timedelta(milliseconds=250),
        correlation_id="c",
        body_hash="h",
    )


def run(e: Event) -> dict[str, object]:
    version, out = enrich(e, NOW, REGISTRY, PROCESSORS)
    assert version == 1
    return out


@pytest.mark.parametrize(
    ("amount", "category"),
    [
        (1000, "standard"),
        (10.5, "standard"),
        (1000.01, "high_value"),
        (Decimal("2345.6789123456789"), "high_value"),
    ],
)
def test_purchase_category(amount: object, category: str) -> None:
    out = run(event("purchase", {"amount": amount}))
    assert out == {"category": category, "ingest_latency_ms": 250.0}


def test_page_view_session_from_url_or_page() -> None:
    from_url = run(event("page_view", {"url": "/page/17?x=1", "referrer": "google"}))
    assert from_url["session"] == {
        "start": NOW.isoformat(),
        "id": None,
        "page": "/page/17?x=1",
        "path": "/page/17",
        "referrer": "google",
        "referrer_host": None,
    }
    from_page = run(event("page_view", {"page": "/a", "referrer": "https://x.org/"}))
    session = from_page["session"]
    assert isinstance(session, dict)
    assert session["page"] == "/a" and session["referrer_host"] == "x.org"


def test_unparsable_referrer_is_kept_not_fatal() -> None:
    out = run(event("page_view", {"url": "http://[", "referrer": "http://["}))
    session = out["session"]
    assert isinstance(session, dict)
    assert session["referrer"] == "http://[" and session["referrer_host"] is None


def test_signup_and_custom() -> None:
    signup = run(event("user_signup", {"email": "A@Example.COM", "source": "web"}))
    assert signup["email_domain"] == "example.com" and signup["source"] == "web"
    custom = run(event("custom", {"action": "click", "value": 3}))
    assert custom["name"] == "click" and custom["field_count"] == 2


def test_worker_revalidates_stream_entries() -> None:
    with pytest.raises(InvalidEvent):
        enrich(event("purchase", {"amount": -5}), NOW, REGISTRY, PROCESSORS)
    with pytest.raises(InvalidEvent):
        enrich(event("user_signup", {}, user=None), NOW, REGISTRY, PROCESSORS)
    with pytest.raises(InvalidEvent):
        enrich(event("unknown", {}), NOW, REGISTRY, PROCESSORS)


def test_unknown_type_accepted_gets_no_type_enrichment() -> None:
    registry = offline_registry("accept")
    version, out = enrich(event("teleport", {"a": 1}), NOW, registry, PROCESSORS)
    assert version is None and out == {"ingest_latency_ms": 250.0}


def test_a_processor_that_returns_no_object_is_refused() -> None:
    def broken(view: EventView) -> object:
        return [view.event_type]

    with pytest.raises(InvalidEvent, match="not an object"):
        enrich(event("custom", {}), NOW, REGISTRY, {"custom": broken})  # type: ignore[dict-item]


def test_builtin_processors_cover_the_builtin_types() -> None:
    assert {"purchase", "user_signup", "page_view", "custom"} <= set(PROCESSORS)


class _Orig(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (DependencyUnavailable("postgres"), True),
        (ConnectionRefusedError(), True),
        (RedisConnectionError(), True),
        (DBAPIError("x", {}, _Orig("57P01")), True),  # admin shutdown
        (DBAPIError("x", {}, _Orig("08006")), True),  # connection failure
        (DBAPIError("x", {}, _Orig("40P01")), True),  # deadlock
        (DBAPIError("x", {}, _Orig("22P02")), False),  # invalid text
        # asyncpg's own, unwrapped at connect time: starting up / shutting down.
        (asyncpg.exceptions.CannotConnectNowError("shutting down"), True),
        (asyncpg.exceptions.UniqueViolationError("dup"), False),
        (InvalidEvent([]), False),
        (ValueError(), False),
    ],
)
def test_transient_classification(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient
