"""Backward compatibility between two versions of an event type's schema."""

from __future__ import annotations

from typing import Any

import pytest

from eventflow.schemas.compat import incompatibilities
from tests.schemas_fixture import builtin_schemas


def props(properties: dict[str, Any], **rules: Any) -> dict[str, Any]:
    """An event schema constraining ``properties`` only."""
    return {
        "type": "object",
        "properties": {
            "properties": {"type": "object", "properties": properties, **rules}
        },
    }


BASE = props({"amount": {"type": "number", "exclusiveMinimum": 0}}, required=["amount"])


@pytest.mark.parametrize(
    ("name", "new"),
    [
        ("identical", BASE),
        (
            "adds an optional property",
            props(
                {
                    "amount": {"type": "number", "exclusiveMinimum": 0},
                    "coupon": {"type": "string", "maxLength": 20},
                },
                required=["amount"],
            ),
        ),
        ("drops a required property", props({"amount": {"type": "number"}})),
        (
            "relaxes a bound",
            props({"amount": {"type": "number", "minimum": -5}}, required=["amount"]),
        ),
        ("widens a type", props({"amount": {"type": ["number", "string"]}})),
        ("removes every rule", {"type": "object"}),
        ("accepts everything", True),
        ("only annotations change", {**BASE, "title": "Purchase", "description": "x"}),
    ],
)
def test_compatible_changes(name: str, new: Any) -> None:
    assert incompatibilities(BASE, new) == [], name


@pytest.mark.parametrize(
    ("new", "reason"),
    [
        (
            props(
                {"amount": {"type": "number", "exclusiveMinimum": 0}},
                required=["amount", "currency"],
            ),
            "$.properties.currency: becomes required",
        ),
        (
            props({"amount": {"type": "integer", "exclusiveMinimum": 0}}),
            "$.properties.amount: type no longer allows number",
        ),
        (
            props({"amount": {"type": "number", "exclusiveMinimum": 10}}),
            "$.properties.amount: lower bound tightened to 10",
        ),
        (
            props({"amount": {"type": "number", "minimum": 0}}, required=["amount"]),
            None,  # minimum 0 accepts 0, which exclusiveMinimum 0 refused: wider
        ),
        (
            props(
                {"amount": {"type": "number", "exclusiveMinimum": 0, "maximum": 5}},
            ),
            "$.properties.amount: adds an upper bound of 5",
        ),
        (
            props(
                {"amount": {"type": "number", "exclusiveMinimum": 0}},
                additionalProperties=False,
            ),
            "$.properties: no longer allows properties it does not list",
        ),
        (
            props(
                {"amount": {"type": "number", "exclusiveMinimum": 0, "pattern": "x"}}
            ),
            "$.properties.amount: adds the rule 'pattern'",
        ),
        (False, "$: now refuses every value"),
    ],
)
def test_incompatible_changes_are_named(new: Any, reason: str | None) -> None:
    found = incompatibilities(BASE, new)
    if reason is None:
        assert found == []
    else:
        assert reason in found, found


def test_enums_may_grow_but_not_shrink() -> None:
    old = props({"currency": {"enum": ["USD", "EUR"]}})
    assert (
        incompatibilities(old, props({"currency": {"enum": ["USD", "EUR", "GBP"]}}))
        == []
    )
    assert incompatibilities(old, props({"currency": {"enum": ["USD"]}})) == [
        "$.properties.currency: enum no longer allows ['EUR']"
    ]
    assert incompatibilities(props({}), old) == []  # a new, optional property


def test_lengths_and_items() -> None:
    old = props({"tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5}})
    wider = props({"tags": {"type": "array", "items": {}, "maxItems": 9}})
    narrower = props(
        {"tags": {"type": "array", "items": {"type": "string", "maxLength": 3}}}
    )
    assert incompatibilities(old, wider) == []
    assert incompatibilities(old, narrower) == [
        "$.properties.tags[*]: maxLength lowered to 3"
    ]


def test_unknown_keywords_must_stay_the_same() -> None:
    old = props({"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}})
    assert incompatibilities(old, old) == []
    assert incompatibilities(old, props({"a": {}})) == []  # removed: relaxed
    changed = props({"a": {"anyOf": [{"type": "string"}]}})
    assert incompatibilities(old, changed) == [
        "$.properties.a: changes the rule 'anyOf'"
    ]


def test_the_builtin_types_can_evolve_compatibly() -> None:
    purchase = builtin_schemas()["purchase"]
    v2 = {
        **purchase,
        "properties": {
            "properties": {
                **purchase["properties"]["properties"],
                "properties": {
                    **purchase["properties"]["properties"]["properties"],
                    "currency": {"enum": ["USD", "EUR", "GBP"]},
                },
            }
        },
    }
    assert incompatibilities(purchase, v2) == []
    signup = builtin_schemas()["user_signup"]
    assert incompatibilities(signup, {**signup, "required": ["user_id", "email"]}) == [
        "$.email: becomes required"
    ]
