"""The event envelope and the built-in types' rules, without any server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from eventflow import jsoncodec
from eventflow.errors import InvalidEvent, UndecodableMessage
from eventflow.models import Event, decode_message, parse_event, validate_event
from eventflow.schemas.registry import SchemaRegistry
from tests.schemas_fixture import offline_registry

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
REGISTRY = offline_registry()


def check(data: dict[str, Any], registry: SchemaRegistry = REGISTRY) -> Event:
    return validate_event(
        parse_event(data),
        registry=registry,
        received_at=NOW,
        correlation_id="cid",
        max_future_skew=timedelta(minutes=5),
    )


def errors(data: dict[str, Any], registry: SchemaRegistry = REGISTRY) -> list[Any]:
    with pytest.raises(InvalidEvent) as caught:
        check(data, registry)
    return caught.value.errors


def error_fields(data: dict[str, Any]) -> list[str]:
    return [str(e["loc"][-1]) for e in errors(data)]


def test_valid_purchase_is_stored_as_sent() -> None:
    event = check({"event_type": "purchase", "properties": {"amount": 12.5}})
    assert event.properties == {"amount": 12.5}
    assert event.timestamp == NOW  # defaults to the time of receipt
    assert isinstance(event.event_id, uuid.UUID)
    assert event.correlation_id == "cid"
    assert event.schema_version == 1


def test_full_precision_amount_is_kept_digit_for_digit() -> None:
    body = b'{"event_type": "purchase", "properties": {"amount": 2345.6789123456789}}'
    event = check(jsoncodec.loads(body))
    assert event.properties["amount"] == Decimal("2345.6789123456789")
    assert b"2345.6789123456789" in event.to_message()
    assert decode_message(event.to_message()).properties == event.properties


@pytest.mark.parametrize("amount", [0, -1, "abc", None, True])
def test_purchase_needs_positive_amount(amount: object) -> None:
    found = errors({"event_type": "purchase", "properties": {"amount": amount}})
    assert [e["loc"] for e in found] == [["body", "properties", "amount"]]
    assert found[0]["schema"] == "purchase" and found[0]["schema_version"] == 1
    assert found[0]["path"] == "$.properties.amount"


def test_purchase_without_amount_names_it() -> None:
    (found,) = errors({"event_type": "purchase", "properties": {"price": 3}})
    assert "amount" in found["msg"] and found["path"] == "$.properties.amount"
    assert found["loc"] == ["body", "properties", "amount"]


def test_signup_needs_user_id() -> None:
    (found,) = errors({"event_type": "user_signup"})
    assert "user_id" in found["msg"]
    check({"event_type": "user_signup", "user_id": "user_1"})


def test_only_the_original_rules_apply() -> None:
    check({"event_type": "page_view", "properties": {"url": "/page/17"}})
    check({"event_type": "page_view", "properties": {"page": "/"}})
    check({"event_type": "custom", "properties": {"action": "click", "value": 7}})
    check({"event_type": "custom"})
    check(
        {"event_type": "user_signup", "user_id": "u", "properties": {"email": "nope"}}
    )


def test_offsets_become_utc_and_naive_is_utc() -> None:
    aware = check({"event_type": "custom", "timestamp": "2026-06-01T15:30:00+05:30"})
    assert aware.timestamp == datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    naive = check({"event_type": "custom", "timestamp": "2026-06-01T10:00:00"})
    assert naive.timestamp == aware.timestamp


@pytest.mark.parametrize(
    "ts", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]
)
def test_timestamps_out_of_range_in_utc_are_refused(ts: str) -> None:
    assert error_fields({"event_type": "custom", "timestamp": ts}) == ["timestamp"]


def test_future_within_skew_is_fine_beyond_is_not() -> None:
    soon = (NOW + timedelta(minutes=4)).isoformat()
    check({"event_type": "custom", "timestamp": soon})
    late = (NOW + timedelta(minutes=6)).isoformat()
    assert error_fields({"event_type": "custom", "timestamp": late}) == ["timestamp"]


def test_unknown_type_names_event_type_and_the_known_ones() -> None:
    (found,) = errors({"event_type": "teleport"})
    assert found["loc"] == ["body", "event_type"]
    assert "purchase" in found["msg"] and "page_view" in found["msg"]


def test_unknown_types_can_be_accepted() -> None:
    event = check({"event_type": "teleport"}, offline_registry("accept"))
    assert event.schema_version is None


def test_schema_version_is_chosen_by_the_event() -> None:
    v2 = {
        "type": "object",
        "properties": {"properties": {"required": ["sku"]}},
    }
    registry = offline_registry(extra={"purchase": [v2]})
    body = {"event_type": "purchase", "properties": {"amount": 1}}
    (found,) = errors(body, registry)
    assert found["schema_version"] == 2
    assert check({**body, "schema_version": 1}, registry).schema_version == 1
    (missing,) = errors({**body, "schema_version": 7}, registry)
    assert missing["loc"] == ["body", "schema_version"] and "1, 2" in missing["msg"]


def test_unknown_top_level_field_is_refused() -> None:
    assert error_fields({"event_type": "custom", "surprise": 1}) == ["surprise"]


def test_body_hash_tells_resend_from_change() -> None:
    base = {"event_type": "purchase", "user_id": "u", "properties": {"amount": 5}}
    a = check(base)
    b = check({**base, "properties": {"amount": 5}})
    c = check({**base, "properties": {"amount": 6}})
    assert a.body_hash == b.body_hash
    assert a.body_hash != c.body_hash


def test_message_round_trip() -> None:
    event = check({"event_type": "page_view", "user_id": "u", "properties": {}})
    assert decode_message(event.to_message()) == event


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"[]", b'{"id": "x"}', b"\xff\xfe", b'{"ver": "1"}'],
)
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
