"""JSON in and out without losing a number.

Bodies are parsed with orjson, which reads every JSON number into a 64-bit int or a
double. That is exact for what almost every client sends; it is not for a number
with more than 15 significant digits (``2345.6789123456789``), an integer beyond
64 bits, or an exponent outside the double's range (``1e309``, ``1e-400``). A body
that may hold such a number (a cheap scan of its bytes says so) is parsed again
with the standard library, and each number that a double cannot carry exactly is
kept as a ``Decimal``; ``dumps`` writes it back digit for digit, and PostgreSQL
stores it exactly in ``jsonb`` (``numeric``).

``NaN`` and ``Infinity`` (not JSON), lone surrogates (not Unicode) and nesting
deeper than the configured limit are refused with ``InvalidJson``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import orjson

# A literal with more than 15 significant digits may not fit a double: a run of
# 16+ digits (dots included) sends the body to the exact parser. Found with one
# byte translation and a substring search (C loops, several times faster than a
# regular expression); a run inside a string only costs the slow path. The other
# inexact literals have a large exponent: orjson refuses an overflow (then the
# exact parser reads it), and an underflow reads as 0.0, which the walk checks.
_CLASSES = {**dict.fromkeys(b"0123456789.", ord("1")), ord("e"): ord("e")}
_CLASSES |= {ord("E"): ord("e"), ord("-"): ord("s")}
_CLASS_TABLE = bytes(_CLASSES.get(b, ord("x")) for b in range(256))
_LONG_RUN = b"1" * 16
_NEGATIVE_EXPONENT = b"1es1"  # a digit, e or E, minus, a digit


_INT64 = (-(2**63), 2**63 - 1)


class InvalidJson(ValueError):
    """The body is not JSON EventFlow can store; ``path`` locates the problem."""

    def __init__(self, message: str, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.path = path


def _exact_float(literal: str) -> float | Decimal:
    value = float(literal)
    if repr(value) == literal:
        return value  # the common case: a double written by a client's repr
    exact = Decimal(literal)
    if value in (float("inf"), float("-inf")) or Decimal(repr(value)) != exact:
        return exact
    return value


def _exact_int(literal: str) -> int | Decimal:
    value = int(literal)
    return value if _INT64[0] <= value <= _INT64[1] else Decimal(literal)


def _no_constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not a JSON number")


def loads(body: bytes | str, max_depth: int = 64) -> Any:
    """Parse ``body`` keeping every number exactly; see the module docstring."""
    raw = body.encode() if isinstance(body, str) else body
    classes = raw.translate(_CLASS_TABLE)
    if _LONG_RUN not in classes:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if "infinity" not in str(exc):  # anything else is not JSON
                raise InvalidJson(f"invalid JSON: {exc}") from exc
        else:
            # Nesting needs brackets: a body with fewer cannot be too deep.
            deep = raw.count(b"{") + raw.count(b"[") > max_depth
            zeros = _NEGATIVE_EXPONENT in classes
            if not (deep or zeros) or _walk(value, max_depth, zeros):
                return value
            check_depth(value, max_depth)  # raises, naming the place
            # else: a 0.0 that may be an underflow (1e-400): read it exactly
    try:
        value = json.loads(
            raw,
            parse_float=_exact_float,
            parse_int=_exact_int,
            parse_constant=_no_constant,
        )
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, InvalidJson):
            raise
        raise InvalidJson(f"invalid JSON: {exc}") from exc
    check_depth(value, max_depth, strings=True)
    return value


def _walk(value: Any, depth_left: int, zeros: bool) -> bool:
    """False if ``value`` nests deeper than ``depth_left`` or (with ``zeros``)
    holds a float 0.0. One pass, no path: the slower ``check_depth`` names it."""
    items: Iterable[Any]
    if type(value) is dict:
        items = value.values()
    elif type(value) is list:
        items = value
    else:  # a bare scalar
        return not (zeros and type(value) is float and value == 0.0)
    for item in items:
        kind = type(item)
        if kind is dict or kind is list:
            if depth_left <= 1 or not _walk(item, depth_left - 1, zeros):
                return False
        elif zeros and kind is float and item == 0.0:
            return False
    return True


def check_depth(
    value: Any,
    max_depth: int,
    strings: bool = False,
    path: tuple[str | int, ...] = (),
) -> None:
    """Refuse nesting deeper than ``max_depth`` (and, with ``strings``, strings
    that are not valid Unicode, which only the slow parser lets through)."""
    if isinstance(value, dict):
        if len(path) >= max_depth:
            raise InvalidJson(f"nested deeper than {max_depth} levels", path)
        for key, item in value.items():
            if strings:
                _check_string(key, (*path, key))
            check_depth(item, max_depth, strings, (*path, key))
    elif isinstance(value, list):
        if len(path) >= max_depth:
            raise InvalidJson(f"nested deeper than {max_depth} levels", path)
        for index, item in enumerate(value):
            check_depth(item, max_depth, strings, (*path, index))
    elif strings and isinstance(value, str):
        _check_string(value, path)


def _check_string(value: str, path: tuple[str | int, ...]) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidJson(
            "lone surrogate: the string is not valid Unicode", path
        ) from exc


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    # e.g. the UUID type of rows read back from asyncpg
    return str(value)


def dumps(value: Any, sort_keys: bool = False) -> bytes:
    """orjson, plus the exact numbers ``loads`` may return."""
    return orjson.dumps(
        value,
        default=_default,
        option=orjson.OPT_SORT_KEYS if sort_keys else None,
    )
