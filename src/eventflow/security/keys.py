"""API keys: created once, stored only as a hash, cached in every process.

A key looks like ``efk_<prefix>_<secret>``: the prefix (public, unique) finds the
row, and the SHA-256 of the whole key must match the stored hash. The secret has
256 bits of entropy, so a plain hash is enough (no password stretching needed).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.store.tables import api_keys

log = logging.getLogger(__name__)

KEY_MARK = "efk"
MISS_LOOKUPS_PER_S = 20


class Scope(StrEnum):
    """``ingest`` sends events; ``read`` reads; ``admin`` may do everything."""

    ingest = "ingest"
    read = "read"
    admin = "admin"

    def allows(self, needed: Scope) -> bool:
        return self is Scope.admin or self is needed


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    name: str
    prefix: str
    scope: Scope
    rate_limit: float | None
    created_at: datetime
    revoked_at: datetime | None
    key_hash: str = ""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh key and its public prefix."""
    prefix = secrets.token_hex(4)
    return f"{KEY_MARK}_{prefix}_{secrets.token_urlsafe(32)}", prefix


def prefix_of(key: str) -> str | None:
    parts = key.split("_", 2)  # the secret itself may hold "_"
    if len(parts) != 3 or parts[0] != KEY_MARK or not parts[1]:
        return None
    return parts[1]


def _key(row: object) -> ApiKey:
    return ApiKey(
        id=row.id,  # type: ignore[attr-defined]
        name=row.name,  # type: ignore[attr-defined]
        prefix=row.prefix,  # type: ignore[attr-defined]
        scope=Scope(row.scope),  # type: ignore[attr-defined]
        rate_limit=row.rate_limit,  # type: ignore[attr-defined]
        created_at=row.created_at,  # type: ignore[attr-defined]
        revoked_at=row.revoked_at,  # type: ignore[attr-defined]
        key_hash=row.key_hash,  # type: ignore[attr-defined]
    )


class KeyExists(ValueError):
    """A key with this name exists already."""


async def create_key(
    engine: AsyncEngine, name: str, scope: Scope, rate_limit: float | None = None
) -> tuple[ApiKey, str]:
    """Store a new key; returns it and the secret key, which is never stored."""
    key, prefix = new_key()
    async with engine.begin() as conn:
        taken = await conn.scalar(select(api_keys.c.id).where(api_keys.c.name == name))
        if taken is not None:
            raise KeyExists(f"a key named {name!r} exists already")
        row = (
            await conn.execute(
                insert(api_keys)
                .values(
                    name=name,
                    prefix=prefix,
                    key_hash=hash_key(key),
                    scope=scope.value,
                    rate_limit=rate_limit,
                )
                .returning(api_keys)
            )
        ).one()
    return _key(row), key


async def list_keys(engine: AsyncEngine) -> list[ApiKey]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(api_keys).order_by(api_keys.c.id))
        return [_key(r) for r in rows]


async def revoke_key(engine: AsyncEngine, name_or_id: str) -> ApiKey | None:
    """Revoke by name or id; ``None`` if no such active key."""
    match = api_keys.c.name == name_or_id
    if name_or_id.isdigit() and int(name_or_id) < 2**63:
        match = or_(match, api_keys.c.id == int(name_or_id))
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                update(api_keys)
                .where(match, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=func.now(), updated_at=func.now())
                .returning(api_keys)
            )
        ).first()
    return None if row is None else _key(row)


class KeyCache:
    """Every key of the deployment, in memory; refreshed when the table changed
    (at most every ``refresh_s``), so a revocation takes effect within that time
    and checking a key costs no database round trip."""

    def __init__(self, engine: AsyncEngine, refresh_s: float = 2.0) -> None:
        self.engine = engine
        self.refresh_s = refresh_s
        self._by_prefix: dict[str, ApiKey] = {}
        self._mark: tuple[int, datetime | None] | None = None
        self._checked = 0.0
        self._misses: deque[float] = deque()
        self._miss_lock = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        return self._mark is not None

    async def refresh(self, force: bool = False) -> bool:
        now = time.monotonic()
        if not force and self.loaded and now - self._checked < self.refresh_s:
            return False
        self._checked = now
        async with self.engine.connect() as conn:
            count, changed = (
                await conn.execute(
                    select(func.count(), func.max(api_keys.c.updated_at))
                )
            ).one()
            mark = (int(count), changed)
            if mark == self._mark:
                return False
            rows = await conn.execute(select(api_keys))
            self._by_prefix = {r.prefix: _key(r) for r in rows}
        self._mark = mark
        return True

    async def lookup(self, key: str) -> ApiKey | None:
        """A key whose prefix the cache does not know may have been created a
        moment ago: read that one row (by its unique prefix), at most
        ``MISS_LOOKUPS_PER_S`` times a second per process, so made-up keys cannot
        turn into a database query each."""
        prefix = prefix_of(key)
        if prefix is None:
            return None
        async with self._miss_lock:
            if prefix not in self._by_prefix:
                now = time.monotonic()
                while self._misses and now - self._misses[0] > 1.0:
                    self._misses.popleft()
                if len(self._misses) >= MISS_LOOKUPS_PER_S:
                    return None
                self._misses.append(now)
                async with self.engine.connect() as conn:
                    row = (
                        await conn.execute(
                            select(api_keys).where(api_keys.c.prefix == prefix)
                        )
                    ).first()
                if row is not None:
                    self._by_prefix[prefix] = _key(row)
        return self.find(key)

    def find(self, key: str) -> ApiKey | None:
        """The active key matching ``key`` exactly, or ``None``."""
        prefix = prefix_of(key)
        found = self._by_prefix.get(prefix) if prefix else None
        if found is None or found.revoked_at is not None:
            return None
        if not hmac.compare_digest(found.key_hash, hash_key(key)):
            return None
        return found

    def active_by_id(self, key_id: int) -> ApiKey | None:
        """The active key with this id (a console session holds only the id)."""
        for found in self._by_prefix.values():
            if found.id == key_id:
                return None if found.revoked_at is not None else found
        return None

    def knows_prefix(self, key: str) -> bool:
        prefix = prefix_of(key)
        return prefix is not None and prefix in self._by_prefix
