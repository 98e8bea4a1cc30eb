"""Enrichment and failure classification, pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import DBAPIError

from eventflow.errors import DependencyUnavailable, InvalidEvent
from eventflow.eventtypes import EVENT_TYPES, purchase_category
from eventflow.models import Event
from eventflow.processing import enrich
from eventflow.retry import is_transient

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


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


@pytest.mark.parametrize(
    ("amount", "category"),
    [("0.01", "small"), ("19.99", "small"), ("20", "medium"), ("999", "large")],
)
def test_purchase_categories(amount: str, category: str) -> None:
    assert purchase_category(Decimal(amount)) == category
    assert purchase_category(Decimal("1000")) == "premium"


def test_purchase_enrichment() -> None:
    out = enrich(event("purchase", {"amount": 30, "quantity": 2}), NOW)
    assert out == {"category": "medium", "total": 60.0, "ingest_latency_ms": 250.0}


def test_page_view_sessions_are_stable_per_user_and_day() -> None:
    a = enrich(event("page_view", {"page": "/a"}), NOW)["session"]
    b = enrich(event("page_view", {"page": "/b?q=1"}), NOW)["session"]
    other = enrich(event("page_view", {"page": "/a"}, user="v"), NOW)["session"]
    assert a["id"] == b["id"] != other["id"]
    assert b["path"] == "/b"
    given = enrich(event("page_view", {"page": "/", "session_id": "s1"}), NOW)
    assert given["session"]["id"] == "s1" and given["session"]["derived"] is False


def test_worker_revalidates_stream_entries() -> None:
    with pytest.raises(InvalidEvent):
        enrich(event("purchase", {"amount": -5}), NOW)
    with pytest.raises(InvalidEvent):
        enrich(event("user_signup", {}, user=None), NOW)
    with pytest.raises(InvalidEvent):
        enrich(event("unknown", {}), NOW)


def test_every_type_has_a_description() -> None:
    assert set(EVENT_TYPES) == {"purchase", "user_signup", "page_view", "custom"}
    assert all(t.description for t in EVENT_TYPES.values())


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
        (InvalidEvent([]), False),
        (ValueError(), False),
    ],
)
def test_transient_classification(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient
