"""Exact numbers in and out; what JSON cannot carry is refused."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from eventflow import jsoncodec


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (b"2345.6789123456789", Decimal("2345.6789123456789")),
        (b"2345.678912345679", 2345.678912345679),
        (b"99.99", 99.99),
        (b"123456789012345678901234567890", Decimal("123456789012345678901234567890")),
        (b"9223372036854775807", 9223372036854775807),
        (b"1e309", Decimal("1e309")),
        (b"1e-400", Decimal("1e-400")),
        (b"1.5e300", 1.5e300),
    ],
)
def test_numbers_are_exact(text: bytes, value: Any) -> None:
    parsed = jsoncodec.loads(b'{"n": ' + text + b"}")
    assert parsed["n"] == value and type(parsed["n"]) is type(value)
    assert jsoncodec.dumps(parsed) == b'{"n":' + jsoncodec.dumps(value) + b"}"
    assert jsoncodec.loads(jsoncodec.dumps(parsed)) == parsed


def test_decimal_is_written_digit_for_digit() -> None:
    assert jsoncodec.dumps([Decimal("2345.6789123456789")]) == b"[2345.6789123456789]"


@pytest.mark.parametrize(
    "body",
    [b"NaN", b"[Infinity]", b'{"a": -Infinity, "b": 12345678901234567}', b"{", b""],
)
def test_not_json_is_refused(body: bytes) -> None:
    with pytest.raises(jsoncodec.InvalidJson):
        jsoncodec.loads(body)


@pytest.mark.parametrize("slow", [False, True])
def test_lone_surrogates_are_refused(slow: bool) -> None:
    extra = b', "n": 12345678901234567' if slow else b""
    with pytest.raises(jsoncodec.InvalidJson) as caught:
        jsoncodec.loads(b'{"s": "\\ud800"' + extra + b"}")
    assert caught.value.path in ((), ("s",))


@pytest.mark.parametrize("slow", [False, True])
def test_depth_limit_names_the_place(slow: bool) -> None:
    extra = b', "n": 12345678901234567' if slow else b""
    deep = b'{"a": ' * 5 + b"1" + b"}" * 5
    assert jsoncodec.loads(deep, max_depth=5)
    with pytest.raises(jsoncodec.InvalidJson, match="deeper than 4") as caught:
        jsoncodec.loads(b'{"x": 1' + extra + b', "a": ' + deep + b"}", max_depth=4)
    assert caught.value.path == ("a", "a", "a", "a")


@pytest.mark.parametrize("body", [b"1e-5", b"0.0", b'"x"', b"[0.0, 1e-3]"])
def test_bare_values_parse(body: bytes) -> None:
    assert jsoncodec.loads(body) == orjson.loads(body)


def test_underflow_is_read_exactly() -> None:
    assert jsoncodec.loads(b"[0.0, 1e-400]") == [0.0, Decimal("1e-400")]
