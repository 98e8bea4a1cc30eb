"""A JSON response rendered with orjson (fast, handles UUID and datetime)."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse

from eventflow.jsoncodec import dumps


class Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return dumps(content)
        except TypeError:
            # orjson stops at 64-bit integers (a registered schema may hold a
            # larger bound): the standard library writes any integer.
            return json.dumps(content, default=str, separators=(",", ":")).encode()


# Answers any route may give besides its own (documented once, for every route).
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "The body could not be read (not UTF-8, not JSON)"},
    401: {"description": "No valid API key"},
    403: {"description": "The key's scope does not allow this request"},
    408: {"description": "The body did not arrive within EVENTFLOW_BODY_TIMEOUT_S"},
    413: {"description": "The body is larger than the route's limit"},
    415: {"description": "The body is not JSON"},
    429: {"description": "Rate limit reached; retry after `Retry-After`"},
    503: {"description": "PostgreSQL or Redis unavailable; retry after `Retry-After`"},
}
