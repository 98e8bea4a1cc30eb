"""Request size, time and content-type limits, enforced while the body is read.

A body is read chunk by chunk and refused with ``413`` as soon as it passes the
limit of its route (``Content-Length`` above the limit is refused before a byte
is read), so an oversized request is never buffered whole. A body that arrives
too slowly is cut with ``408``. A request body must be JSON (``415``
otherwise): a page in a browser cannot post a form or ``text/plain`` to
EventFlow without a CORS preflight. The one exception is the operator console
(``/console/...``), whose own forms are URL-encoded and carry a CSRF token.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON_TYPES = (b"application/json",)
FORM_TYPE = b"application/x-www-form-urlencoded"
FORM_PATHS = "/console/"


@dataclass(frozen=True)
class Limits:
    single_event_bytes: int
    batch_bytes: int
    other_bytes: int
    body_timeout_s: float

    def for_path(self, path: str) -> tuple[int, str]:
        if path == "/events":
            return self.single_event_bytes, "EVENTFLOW_MAX_EVENT_BYTES"
        if path == "/events/batch":
            return self.batch_bytes, "EVENTFLOW_MAX_BATCH_BYTES"
        return self.other_bytes, "EVENTFLOW_MAX_REQUEST_BYTES"


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = orjson.dumps({"detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class LimitsMiddleware:
    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit, setting = self.limits.for_path(scope["path"])
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        has_body = (length not in (None, b"0")) or b"transfer-encoding" in headers
        if has_body:
            kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            form = kind == FORM_TYPE and scope["path"].startswith(FORM_PATHS)
            if kind not in JSON_TYPES and not form:
                await _refuse(
                    send, 415, "the body must be JSON (content-type: application/json)"
                )
                return
        too_large = f"the body is larger than {limit} bytes ({setting})"
        if length is not None and length.isdigit() and int(length) > limit:
            await _refuse(send, 413, too_large)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            try:
                # asyncio.timeout, not wait_for: no task per request.
                async with asyncio.timeout(self.limits.body_timeout_s):
                    message = await receive()
            except TimeoutError:
                await _refuse(
                    send, 408, "the body did not arrive in time "
                    "(EVENTFLOW_BODY_TIMEOUT_S)",
                )  # fmt: skip
                return
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _refuse(send, 413, too_large)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # a disconnect, later

        await self.app(scope, replay, send)
