"""How a request proves who it is, and what its key may do.

A key is accepted as ``Authorization: Bearer KEY``, as ``X-API-Key: KEY``, or as
the user name of HTTP Basic authentication (how analytics clients send write
keys). ``401`` means no valid key (the answer never says whether a key exists),
``403`` a valid key whose scope does not allow the route.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from fastapi import HTTPException, Request, status

from eventflow.errors import DependencyUnavailable
from eventflow.security.keys import ApiKey, KeyCache, Scope
from eventflow.security.ratelimit import RateLimiter, RedisUnavailable

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="eventflow", Basic realm="eventflow"'}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: a key, ``anonymous`` ingestion, or nobody in
    particular when authentication is off (``name`` is then ``None``)."""

    name: str | None
    key_id: int | None = None
    scope: Scope | None = None
    rate_limit: float | None = None

    @property
    def actor(self) -> str:
        return self.name or "unauthenticated"


ANONYMOUS = Principal("anonymous")
NOBODY = Principal(None)


def presented_key(request: Request) -> str | None:
    """The key a request carries, in any of the accepted forms."""
    header = request.headers.get("x-api-key")
    if header:
        return header.strip()
    authorization = request.headers.get("authorization", "")
    kind, _, value = authorization.partition(" ")
    if kind.lower() == "bearer" and value.strip():
        return value.strip()
    if kind.lower() == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user = decoded.partition(":")[0]
        return user or None
    return None


async def active_key(keys: KeyCache, key: str) -> ApiKey | None:
    """The active key ``key`` is, or ``None`` (a 503 when keys cannot be loaded
    at all)."""
    if not keys.loaded:
        try:
            await keys.refresh(force=True)
        except Exception as exc:
            raise DependencyUnavailable("postgres", "API keys not loaded") from exc
    found = keys.find(key)
    if found is None and not keys.knows_prefix(key):
        try:
            found = await keys.lookup(key)
        except Exception:  # keep answering from the cache
            found = None
    return found


def _unauthorized() -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, "a valid API key is required", CHALLENGE
    )


async def authorize(
    request: Request,
    keys: KeyCache,
    needed: Scope,
    required: bool,
    anonymous_ingest: bool,
) -> Principal:
    """The principal allowed to call a route that needs ``needed``, or a 401/403
    (a 503 when keys cannot be loaded at all)."""
    if not required:
        return NOBODY
    key = presented_key(request)
    if key is None:
        if needed is Scope.ingest and anonymous_ingest:
            return ANONYMOUS
        raise _unauthorized()
    found = await active_key(keys, key)
    if found is None:
        raise _unauthorized()
    if not found.scope.allows(needed):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"this key's scope ({found.scope}) does not allow this request "
            f"(needs {needed})",
        )
    return principal_of(found)


def principal_of(key: ApiKey) -> Principal:
    return Principal(key.name, key.id, key.scope, key.rate_limit)


def limit_rate(
    principal: Principal,
    request: Request,
    limiter: RateLimiter,
    needed: Scope,
    anonymous_rate: float,
) -> None:
    """``429`` with ``Retry-After`` and ``RateLimit-*`` past the key's rate (per
    client address for anonymous ingestion); ``503`` when the rate cannot be
    checked, except for ingestion, which is let through."""
    if principal is ANONYMOUS:
        client = request.client.host if request.client else "unknown"
        subject, rate = f"anon:{client}", anonymous_rate
    elif principal.rate_limit and principal.key_id is not None:
        subject, rate = f"key:{principal.key_id}", principal.rate_limit
    else:
        return
    try:
        decision = limiter.check(subject, rate, fail_open=needed is Scope.ingest)
    except RedisUnavailable as exc:
        raise DependencyUnavailable("redis", "rate limits cannot be checked") from exc
    if not decision.allowed:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit of {decision.limit} requests per second reached",
            decision.headers(),
        )
