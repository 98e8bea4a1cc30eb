"""Backward compatibility of two JSON Schemas: does ``new`` accept all ``old`` did?

Producers that were valid under the previous version must stay valid, so a new
version may add optional properties and relax rules, but not add a required
property, narrow a type, a range, a length or an enum, close an object, or add a
pattern. The check is structural and conservative: a keyword it cannot compare
(``$ref``, ``allOf``, ``if``…) must be unchanged, or only removed.

The one deliberate exception, as schema registries treat it: a property that the
old version did not mention may be declared with any rule, as long as it is not
required (producers did not send it, so they keep working).
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any] | bool

# Keywords that only describe: changing them never changes what is accepted.
ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$anchor",
        "$comment",
        "$defs",
        "definitions",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "contentMediaType",
        "contentEncoding",
        "contentSchema",
    }
)
LOWER_BOUNDS = ("minLength", "minItems", "minProperties", "minContains")
UPPER_BOUNDS = ("maxLength", "maxItems", "maxProperties", "maxContains")
HANDLED = frozenset(
    {
        "type",
        "enum",
        "const",
        "minimum",
        "exclusiveMinimum",
        "maximum",
        "exclusiveMaximum",
        "multipleOf",
        "required",
        "properties",
        "additionalProperties",
        "items",
        "uniqueItems",
        *LOWER_BOUNDS,
        *UPPER_BOUNDS,
    }
)
JSON_TYPES = ("null", "boolean", "object", "array", "number", "string", "integer")


def incompatibilities(old: Schema, new: Schema) -> list[str]:
    """Each reason why ``new`` may refuse an instance ``old`` accepted, as
    ``"<location>: <what changed>"``; empty when ``new`` is backward compatible."""
    problems: list[str] = []
    _compare(old, new, "$", problems)
    return problems


def _constraints(schema: Schema) -> dict[str, Any] | bool:
    if isinstance(schema, bool):
        return schema
    rules = {k: v for k, v in schema.items() if k not in ANNOTATIONS}
    return rules if rules else True


def _types(schema: dict[str, Any]) -> set[str] | None:
    declared = schema.get("type")
    if declared is None:
        return None
    return {declared} if isinstance(declared, str) else set(declared)


def _compare(old: Schema, new: Schema, where: str, out: list[str]) -> None:
    o, n = _constraints(old), _constraints(new)
    if n is True or o is False:
        return
    if n is False:
        out.append(f"{where}: now refuses every value")
        return
    if o is True:
        o = {}
    assert isinstance(o, dict) and isinstance(n, dict)
    _compare_types(o, n, where, out)
    _compare_values(o, n, where, out)
    _compare_numbers(o, n, where, out)
    for key in LOWER_BOUNDS:
        if key in n and n[key] > o.get(key, 0):
            out.append(f"{where}: {key} raised to {n[key]}")
    for key in UPPER_BOUNDS:
        if key in n and (key not in o or n[key] < o[key]):
            out.append(f"{where}: {key} lowered to {n[key]}")
    if n.get("uniqueItems") and not o.get("uniqueItems"):
        out.append(f"{where}: items must now be unique")
    _compare_objects(o, n, where, out)
    if "items" in n:
        _compare(o.get("items", True), n["items"], f"{where}[*]", out)
    for key in sorted(set(n) - HANDLED):
        if key not in o:
            out.append(f"{where}: adds the rule {key!r}")
        elif o[key] != n[key]:
            out.append(f"{where}: changes the rule {key!r}")


def _compare_types(
    o: dict[str, Any], n: dict[str, Any], where: str, out: list[str]
) -> None:
    new_types = _types(n)
    if new_types is None:
        return
    old_types = _types(o) or set(JSON_TYPES)
    allowed = set(new_types)
    if "number" in allowed:
        allowed.add("integer")
    lost = sorted(old_types - allowed)
    if lost:
        out.append(f"{where}: type no longer allows {', '.join(lost)}")


def _compare_values(
    o: dict[str, Any], n: dict[str, Any], where: str, out: list[str]
) -> None:
    if "const" in n and ("const" not in o or o["const"] != n["const"]):
        if "enum" in o and all(v == n["const"] for v in o["enum"]):
            pass
        else:
            out.append(f"{where}: const {n['const']!r} refuses values allowed before")
    if "enum" in n:
        before = o["enum"] if "enum" in o else [o["const"]] if "const" in o else None
        if before is None:
            out.append(f"{where}: adds an enum of {len(n['enum'])} values")
        else:
            removed = [v for v in before if v not in n["enum"]]
            if removed:
                out.append(f"{where}: enum no longer allows {removed!r}")


def _bound(schema: dict[str, Any], inclusive: str, exclusive: str) -> tuple[Any, bool]:
    """(value, strict) of the tighter of an inclusive and an exclusive bound."""
    candidates = []
    if isinstance(schema.get(inclusive), int | float):
        candidates.append((schema[inclusive], False))
    if isinstance(schema.get(exclusive), int | float):
        candidates.append((schema[exclusive], True))
    if not candidates:
        return None, False
    lower = inclusive == "minimum"
    return (max if lower else min)(candidates, key=lambda c: (c[0], c[1] == lower))


def _compare_numbers(
    o: dict[str, Any], n: dict[str, Any], where: str, out: list[str]
) -> None:
    for inclusive, exclusive, lower in (
        ("minimum", "exclusiveMinimum", True),
        ("maximum", "exclusiveMaximum", False),
    ):
        new_value, new_strict = _bound(n, inclusive, exclusive)
        if new_value is None:
            continue
        old_value, old_strict = _bound(o, inclusive, exclusive)
        name = "lower" if lower else "upper"
        if old_value is None:
            article = "a" if lower else "an"
            out.append(f"{where}: adds {article} {name} bound of {new_value}")
            continue
        tighter = new_value > old_value if lower else new_value < old_value
        if tighter or (new_value == old_value and new_strict and not old_strict):
            out.append(f"{where}: {name} bound tightened to {new_value}")
    if "multipleOf" in n:
        step, before = n["multipleOf"], o.get("multipleOf")
        if before is None or (before / step) != int(before / step):
            out.append(f"{where}: multipleOf {step} refuses values allowed before")


def _compare_objects(
    o: dict[str, Any], n: dict[str, Any], where: str, out: list[str]
) -> None:
    added = sorted(set(n.get("required", [])) - set(o.get("required", [])))
    for name in added:
        out.append(f"{where}.{name}: becomes required")
    old_props: dict[str, Schema] = o.get("properties", {})
    new_props: dict[str, Schema] = n.get("properties", {})
    old_extra: Schema = o.get("additionalProperties", True)
    new_extra: Schema = n.get("additionalProperties", True)
    for name, new_sub in new_props.items():
        if name in old_props:
            _compare(old_props[name], new_sub, f"{where}.{name}", out)
        elif old_extra is not True and _constraints(old_extra) is not True:
            # The old version constrained unlisted properties: compare with that.
            _compare(old_extra, new_sub, f"{where}.{name}", out)
        # else: a property the old version did not mention (see the docstring).
    for name, old_sub in old_props.items():
        if name not in new_props:
            _compare(old_sub, new_extra, f"{where}.{name}", out)
    if "additionalProperties" in n:
        if _constraints(new_extra) is False and _constraints(old_extra) is not False:
            out.append(f"{where}: no longer allows properties it does not list")
        elif _constraints(new_extra) is not True:
            _compare(old_extra, new_extra, f"{where}.*", out)
