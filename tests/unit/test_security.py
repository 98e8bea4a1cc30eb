"""Keys, how requests present them, and scopes: pure logic."""

from __future__ import annotations

import base64

import pytest
from starlette.requests import Request

from eventflow.security.auth import presented_key
from eventflow.security.keys import Scope, hash_key, new_key, prefix_of


def request(*headers: tuple[str, str]) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        }
    )


def test_new_keys_are_unique_high_entropy_and_carry_their_prefix() -> None:
    keys = {new_key() for _ in range(200)}
    assert len(keys) == 200
    for key, prefix in keys:
        assert prefix_of(key) == prefix
        assert len(key) > 50
        assert hash_key(key) != key and len(hash_key(key)) == 64


@pytest.mark.parametrize("text", ["", "efk", "efk__x", "abc_1234_x", "Bearer efk_1_x"])
def test_malformed_keys_have_no_prefix(text: str) -> None:
    assert prefix_of(text) is None


def test_three_ways_to_present_a_key() -> None:
    key = "efk_0a1b2c3d_s3cr_et"
    basic = base64.b64encode(f"{key}:".encode()).decode()
    assert presented_key(request(("Authorization", f"Bearer {key}"))) == key
    assert presented_key(request(("X-API-Key", key))) == key
    assert presented_key(request(("Authorization", f"Basic {basic}"))) == key
    assert presented_key(request(("Authorization", "Basic %%%"))) is None
    assert presented_key(request(("Authorization", "Bearer "))) is None
    assert presented_key(request()) is None


def test_admin_may_do_everything_the_others_only_their_own() -> None:
    assert Scope.admin.allows(Scope.ingest) and Scope.admin.allows(Scope.read)
    assert Scope.ingest.allows(Scope.ingest) and not Scope.ingest.allows(Scope.read)
    assert Scope.read.allows(Scope.read) and not Scope.read.allows(Scope.admin)
