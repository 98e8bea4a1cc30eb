"""Who is using the console: a signed session cookie and CSRF tokens.

The session cookie holds a key's id (never the key) and an expiry, signed with
HMAC-SHA256 under ``EVENTFLOW_CONSOLE_SECRET``. Every request checks it against
the key cache: a revoked key's session ends within ``EVENTFLOW_KEY_REFRESH_S``.
Every form carries a CSRF token that must equal the (signed) CSRF cookie's.
Cookies are ``HttpOnly``, ``SameSite=Strict`` and ``Secure`` over TLS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request, Response

from eventflow.config import Settings
from eventflow.security.auth import NOBODY, Principal, principal_of
from eventflow.security.keys import KeyCache, Scope

SESSION_COOKIE = "eventflow_session"
CSRF_COOKIE = "eventflow_csrf"
CSRF_FIELD = "csrf"
PATH = "/console"


class Signer:
    """Signs and checks small JSON values (``<payload>.<mac>``, URL-safe)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, payload: bytes) -> str:
        digest = hmac.new(self._secret, payload, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, value: Any) -> str:
        payload = base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=")
        return f"{payload.decode()}.{self._mac(payload)}"

    def unsign(self, token: str | None) -> Any:
        """The value, or ``None`` when the token is missing, forged or garbled."""
        if not token or token.count(".") != 1:
            return None
        payload, mac = token.split(".")
        if not hmac.compare_digest(mac, self._mac(payload.encode())):
            return None
        try:
            return orjson.loads(
                base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            )
        except (ValueError, orjson.JSONDecodeError):
            return None


def signer_for(settings: Settings) -> Signer:
    """Under ``EVENTFLOW_CONSOLE_SECRET``, or a secret of this process's own."""
    secret = settings.console_secret
    if secret is not None and secret.get_secret_value():
        return Signer(secret.get_secret_value().encode())
    return Signer(secrets.token_bytes(32))


@dataclass(frozen=True, slots=True)
class Viewer:
    """The principal behind a console request and what it may do."""

    principal: Principal
    auth_on: bool

    @property
    def can_act(self) -> bool:
        """Admin keys act (replay, purge, keys); with authentication off, anyone
        who reaches the console (local mode) may."""
        return not self.auth_on or self.principal.scope is Scope.admin

    @property
    def name(self) -> str:
        return self.principal.actor


def _cookie(
    response: Response, request: Request, name: str, value: str, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PATH,
        httponly=True,
        secure=request.url.scheme == "https",
        samesite="strict",
    )


def start_session(
    response: Response, request: Request, signer: Signer, key_id: int, hours: float
) -> None:
    expires = int(time.time() + hours * 3600)
    _cookie(
        response,
        request,
        SESSION_COOKIE,
        signer.sign({"k": key_id, "e": expires}),
        int(hours * 3600),
    )


def end_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=PATH, httponly=True, samesite="strict")


def viewer_of(
    request: Request, signer: Signer, keys: KeyCache, auth_on: bool
) -> Viewer | None:
    """Who the session is, or ``None`` (no session, expired, forged, or its key
    revoked or only allowed to ingest)."""
    if not auth_on:
        return Viewer(NOBODY, auth_on=False)
    value = signer.unsign(request.cookies.get(SESSION_COOKIE))
    if not isinstance(value, dict):
        return None
    key_id, expires = value.get("k"), value.get("e")
    if not isinstance(key_id, int) or not isinstance(expires, int):
        return None
    if expires < time.time():
        return None
    key = keys.active_by_id(key_id)
    if key is None or key.scope is Scope.ingest:
        return None
    return Viewer(principal_of(key), auth_on=True)


def csrf_token(request: Request, signer: Signer) -> str:
    """The request's CSRF token (from its cookie, or a new one for this
    response: ``ensure_csrf_cookie`` sets it)."""
    token = signer.unsign(request.cookies.get(CSRF_COOKIE))
    if isinstance(token, str):
        return token
    fresh: str | None = getattr(request.state, "csrf", None)
    if fresh is None:
        fresh = secrets.token_urlsafe(24)
        request.state.csrf = fresh
    return fresh


def ensure_csrf_cookie(response: Response, request: Request, signer: Signer) -> None:
    fresh: str | None = getattr(request.state, "csrf", None)
    if fresh is not None:
        _cookie(response, request, CSRF_COOKIE, signer.sign(fresh), 7 * 86400)


def csrf_ok(request: Request, signer: Signer, sent: str | None) -> bool:
    token = signer.unsign(request.cookies.get(CSRF_COOKIE))
    return (
        isinstance(token, str)
        and isinstance(sent, str)
        and hmac.compare_digest(token, sent)
    )
