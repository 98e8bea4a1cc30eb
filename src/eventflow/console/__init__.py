"""The operator console: server-rendered pages at ``/console`` over the same
stores, registry, keys and audit trail as the API."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, HTTPException, Response

from eventflow.console import admin, deadletters, pages
from eventflow.console.web import HEADERS, PREFIX

STATIC = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


def _static_router() -> APIRouter:
    static = APIRouter(prefix=f"{PREFIX}/static", include_in_schema=False)

    @static.get("/{name}")
    async def asset(name: str) -> Response:
        """The console's own files (nothing from elsewhere)."""
        kind = STATIC.get(name)
        if kind is None:
            raise HTTPException(404, "no such file")
        body = (files("eventflow.console") / "static" / name).read_bytes()
        headers = {**HEADERS, "cache-control": "public, max-age=3600"}
        return Response(body, media_type=kind, headers=headers)

    return static


def console_router() -> APIRouter:
    """Every console route; the app includes it."""
    router = APIRouter()
    router.include_router(pages.router)
    router.include_router(deadletters.router)
    router.include_router(deadletters.jobs_router)
    router.include_router(admin.router)
    router.include_router(_static_router())
    return router


__all__ = ["console_router"]
