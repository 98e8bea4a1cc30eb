"""``POST /events`` served below FastAPI's routing.

A single event is the API's most frequent request, and more of its CPU went to
the layers between the server and the route (Starlette's and FastAPI's own
middlewares, matching the path against every route, resolving dependencies)
than to the event. This ASGI application serves that one request with the same
parts as the route: the app's middlewares (correlation id, metrics and the
request log line; body limits; CORS when configured), the same caller check
(``deps.principal_for``), the same handler (``events.accept_one``) and the
app's own exception handlers, so answers and errors are the route's, byte for
byte. Every other request goes to FastAPI, where ``POST /events`` stays
registered and documented in OpenAPI.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from eventflow.api.deps import principal_for
from eventflow.api.events import accept_one
from eventflow.security.keys import Scope as KeyScope

if TYPE_CHECKING:
    from fastapi import FastAPI

PATH = "/events"


class IngestFastPath:
    def __init__(
        self, app: FastAPI, route: BaseRoute, middleware: Sequence[Middleware]
    ) -> None:
        self.app = app
        self.route = route
        stack: ASGIApp = self._serve
        for cls, args, kwargs in reversed(middleware):
            stack = cls(stack, *args, **kwargs)
        self.stack = stack

    @staticmethod
    def matches(scope: Scope) -> bool:
        return (
            scope["type"] == "http"
            and scope["path"] == PATH
            and scope["method"] == "POST"
            and not scope.get("root_path")
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self.app
        # The route's path labels the request's metrics, as FastAPI's would.
        scope["route"] = self.route
        await self.stack(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        ctx = self.app.state.ctx
        try:
            principal = await principal_for(request, ctx, KeyScope.ingest)
            response = await accept_one(
                ctx, await request.body(), scope["state"]["correlation_id"], principal
            )
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                # As Starlette's ServerErrorMiddleware: a bare 500 (nothing was
                # sent yet), then the server logs the exception.
                await PlainTextResponse("Internal Server Error", 500)(
                    scope, receive, send
                )
                raise
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Any:
        handlers = self.app.exception_handlers
        for cls in type(exc).__mro__:
            if cls in handlers:
                return handlers[cls]
        return None
