"""The HTTP ceiling: the least a FastAPI ingest endpoint can do on this machine.

``POST /events`` parses the body into EventFlow's own request model (``EventIn``)
and answers ``202`` with JSON, with no I/O at all. Served like EventFlow's API
(uvicorn, uvloop, httptools, one process, no access log), it shows how many
requests per second the framework alone allows next to the load generator:

    python -m uvicorn ceiling_app:app --app-dir benchmarks --loop uvloop \
        --http httptools --no-access-log --port 8001
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import orjson
from fastapi import FastAPI, Response

from eventflow.models import EventIn

app = FastAPI()


@app.post("/events", status_code=202)
async def ingest(event: EventIn) -> Response:
    body = {
        "event_id": str(event.event_id or uuid4()),
        "status": "accepted",
        "message": "Event accepted for processing",
        "received_at": datetime.now(UTC).isoformat(),
    }
    return Response(orjson.dumps(body), 202, media_type="application/json")


@app.get("/health/ready")
async def ready() -> dict[str, str]:
    return {"status": "ok"}
