"""FastAPI dependencies as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from eventflow.api.context import ApiContext
from eventflow.security.auth import Principal, authorize, limit_rate
from eventflow.security.keys import Scope


async def get_context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Context = Annotated[ApiContext, Depends(get_context)]


async def principal_for(request: Request, ctx: ApiContext, scope: Scope) -> Principal:
    """Who may make ``request``, which needs ``scope``: its key checked, then its
    rate limit (401, 403, 429 or 503 otherwise)."""
    s = ctx.settings
    principal = await authorize(
        request, ctx.keys, scope, s.auth_required, s.anonymous_ingest
    )
    limit_rate(principal, request, ctx.limiter, scope, s.anonymous_rate_limit)
    return principal


def _needs(scope: Scope) -> Callable[[Request], Awaitable[Principal]]:
    async def check(request: Request) -> Principal:
        # The context straight from the app: no nested dependency per request.
        return await principal_for(request, request.app.state.ctx, scope)

    return check


# The key a route needs: ingest < read < admin (admin may do everything).
Ingest = Annotated[Principal, Depends(_needs(Scope.ingest))]
Read = Annotated[Principal, Depends(_needs(Scope.read))]
Admin = Annotated[Principal, Depends(_needs(Scope.admin))]
