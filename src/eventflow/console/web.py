"""The console's plumbing: its state, who is asking, forms, pages and headers.

Every console response carries a strict Content-Security-Policy (scripts and
styles only from EventFlow itself, no inline code), and errors are pages, not
JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from eventflow import __version__
from eventflow.api.context import ApiContext
from eventflow.console.jobs import Jobs
from eventflow.console.session import (
    CSRF_FIELD,
    Signer,
    Viewer,
    csrf_ok,
    csrf_token,
    ensure_csrf_cookie,
    signer_for,
    viewer_of,
)
from eventflow.errors import errors_text

log = logging.getLogger(__name__)

PREFIX = "/console"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


class NeedLogin(Exception):
    """No valid session: the login page, then back here."""


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Console:
    """What console routes share: built on the first console request of an
    app (nothing at import time), kept in ``app.state``."""

    ctx: ApiContext
    signer: Signer
    templates: Jinja2Templates
    jobs: Jobs

    @property
    def auth_on(self) -> bool:
        return self.ctx.settings.auth_required


def _templates() -> Jinja2Templates:
    folder = files("eventflow.console") / "templates"
    templates = Jinja2Templates(directory=str(folder))
    templates.env.globals["version"] = __version__
    return templates


def console_of(request: Request) -> Console:
    state = request.app.state
    found: Console | None = getattr(state, "console", None)
    if found is None:
        ctx: ApiContext = state.ctx
        found = Console(
            ctx=ctx,
            signer=signer_for(ctx.settings),
            templates=_templates(),
            jobs=Jobs(ctx.engine, ctx.redis, ctx.streams, ctx.streams.name),
        )
        state.console = found
    return found


async def _console(request: Request) -> Console:
    return console_of(request)


async def _viewer(request: Request) -> Viewer:
    c = console_of(request)
    if c.auth_on:
        await c.ctx.refresh_keys()
    found = viewer_of(request, c.signer, c.ctx.keys, c.auth_on)
    if found is None:
        raise NeedLogin()
    request.state.viewer = found
    return found


async def _actor(request: Request) -> Viewer:
    found = await _viewer(request)
    if not found.can_act:
        raise Refused(403, "This needs an admin key; yours may only read.")
    return found


ConsoleDep = Annotated[Console, Depends(_console)]
Reader = Annotated[Viewer, Depends(_viewer)]
Actor = Annotated[Viewer, Depends(_actor)]


class Form:
    """A posted URL-encoded form whose CSRF token matched."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self.fields = fields

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else default

    def text(self, name: str) -> str | None:
        """A field's text, ``None`` when absent or blank."""
        value = (self.get(name) or "").strip()
        return value or None

    def all(self, name: str) -> list[str]:
        return self.fields.get(name, [])


async def _form(request: Request) -> Form:
    body = (await request.body()).decode("utf-8", errors="replace")
    fields = parse_qs(body, keep_blank_values=True, max_num_fields=10_000)
    sent = fields.get(CSRF_FIELD, [None])[0]
    if not csrf_ok(request, console_of(request).signer, sent):
        raise Refused(
            403, "The form's CSRF token is missing or wrong: reload the page."
        )
    return Form(fields)


Posted = Annotated[Form, Depends(_form)]


def render(
    request: Request,
    name: str,
    values: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    c = console_of(request)
    viewer: Viewer | None = getattr(request.state, "viewer", None)
    response = c.templates.TemplateResponse(
        request,
        name,
        {
            "viewer": viewer,
            "auth_on": c.auth_on,
            "csrf": csrf_token(request, c.signer),
            "path": request.url.path,
            **(values or {}),
        },
        status_code=status,
    )
    ensure_csrf_cookie(response, request, c.signer)
    return response


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _harden(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


class ConsoleRoute(APIRoute):
    """Console routes answer with pages: the login page when there is no
    session, an error page otherwise, and always the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except NeedLogin:
                target = request.url.path
                if request.url.query:
                    target += "?" + request.url.query
                if request.method != "GET":
                    target = PREFIX
                response = redirect(f"{PREFIX}/login?next={quote(target, safe='')}")
            except Refused as exc:
                response = render(
                    request, "error.html", {"message": exc.message}, exc.status
                )
            except RequestValidationError as exc:
                message = errors_text(exc.errors())
                response = render(request, "error.html", {"message": message}, 422)
            except HTTPException as exc:
                response = render(
                    request, "error.html", {"message": str(exc.detail)}, exc.status_code
                )
            return _harden(response)

        return route
