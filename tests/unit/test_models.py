"""Validation rules of the request models, without any server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from eventflow.errors import InvalidEvent, UndecodableMessage
from eventflow.models import EventIn, decode_message, validate_event

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def check(data: dict[str, Any]) -> Any:
    return validate_event(
        EventIn.model_validate(data),
        received_at=NOW,
        correlation_id="cid",
        max_future_skew=timedelta(minutes=5),
    )


def error_fields(data: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidEvent) as caught:
        check(data)
    return [str(e["loc"][-1]) for e in caught.value.errors]


def test_valid_purchase_is_normalised() -> None:
    event = check({"event_type": "purchase", "properties": {"amount": "12.50"}})
    assert event.properties == {"amount": 12.5, "currency": "USD", "quantity": 1}
    assert event.timestamp == NOW  # defaults to the time of receipt
    assert isinstance(event.event_id, uuid.UUID)
    assert event.correlation_id == "cid"


@pytest.mark.parametrize("amount", [0, -1, "abc", None])
def test_purchase_needs_positive_amount(amount: object) -> None:
    assert error_fields(
        {"event_type": "purchase", "properties": {"amount": amount}}
    ) == ["amount"]


def test_signup_needs_user_id() -> None:
    assert error_fields({"event_type": "user_signup"}) == ["user_id"]


def test_several_errors_are_reported_together() -> None:
    fields = error_fields(
        {
            "event_type": "user_signup",
            "timestamp": "2099-01-01T00:00:00Z",
            "properties": {"email": "nope"},
        }
    )
    assert sorted(fields) == ["email", "timestamp", "user_id"]


def test_offsets_become_utc_and_naive_is_utc() -> None:
    aware = check(
        {
            "event_type": "custom",
            "timestamp": "2026-06-01T15:30:00+05:30",
            "properties": {"name": "x"},
        }
    )
    assert aware.timestamp == datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    naive = check(
        {
            "event_type": "custom",
            "timestamp": "2026-06-01T10:00:00",
            "properties": {"name": "x"},
        }
    )
    assert naive.timestamp == aware.timestamp


def test_future_within_skew_is_fine_beyond_is_not() -> None:
    soon = (NOW + timedelta(minutes=4)).isoformat()
    check({"event_type": "custom", "timestamp": soon, "properties": {"name": "x"}})
    late = (NOW + timedelta(minutes=6)).isoformat()
    assert error_fields(
        {"event_type": "custom", "timestamp": late, "properties": {"name": "x"}}
    ) == ["timestamp"]


def test_unknown_type_names_event_type() -> None:
    assert error_fields({"event_type": "teleport"}) == ["event_type"]


def test_unknown_top_level_field_is_refused() -> None:
    with pytest.raises(ValidationError):
        EventIn.model_validate({"event_type": "custom", "surprise": 1})


def test_body_hash_tells_resend_from_change() -> None:
    base = {"event_type": "purchase", "user_id": "u", "properties": {"amount": 5}}
    a = check(base)
    b = check({**base, "properties": {"amount": 5, "currency": "USD"}})
    c = check({**base, "properties": {"amount": 6}})
    assert a.body_hash == b.body_hash  # same event once defaults are applied
    assert a.body_hash != c.body_hash


def test_message_round_trip() -> None:
    event = check(
        {"event_type": "page_view", "user_id": "u", "properties": {"page": "/"}}
    )
    assert decode_message(event.to_message()) == event


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b'{"id": "x"}', b"\xff\xfe"])
def test_garbage_is_undecodable(raw: bytes) -> None:
    with pytest.raises(UndecodableMessage):
        decode_message(raw)


def test_nul_characters_are_refused_naming_the_field() -> None:
    assert error_fields(
        {"event_type": "custom", "properties": {"name": "x", "note": "a\x00b"}}
    ) == ["properties"]
    assert error_fields(
        {"event_type": "custom", "user_id": "u\x00", "properties": {"name": "x"}}
    ) == ["user_id"]
    # The six characters backslash-u-0-0-0-0 are ordinary text.
    check({"event_type": "custom", "properties": {"name": "x", "note": "\\u0000"}})
