"""Correlation ids, request metrics and the request log line (pure ASGI, cheap)."""

from __future__ import annotations

import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventflow.logs import correlation_id
from eventflow.metrics import Metrics

log = logging.getLogger("eventflow.http")

HEADER = b"x-correlation-id"


class CorrelationMiddleware:
    """Takes ``X-Correlation-ID`` from the request or makes one, returns it, and
    makes it the context of every log line written while handling the request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = ""
        for name, value in scope["headers"]:
            if name == HEADER:
                cid = value.decode("latin-1")[:128]
                break
        if not cid:
            cid = uuid.uuid4().hex
        scope.setdefault("state", {})["correlation_id"] = cid
        token = correlation_id.set(cid)
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (HEADER, cid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.http_requests.labels(method, path, str(status)).inc()
            self.metrics.http_duration.labels(method, path).observe(elapsed)
            if path not in ("/metrics", "/health/live", "/health/ready"):
                log.info(
                    "request",
                    extra={
                        "method": method,
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            correlation_id.reset(token)
