"""Posting pre-serialized bodies to the API and reading the answer event by event."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx
import orjson

MAX_ERROR_CHARS = 240


class Outcome(StrEnum):
    accepted = "accepted"
    duplicate = "duplicate"
    refused = "refused"  # the API judged the event: 409, 422, batch conflict/invalid
    failed = "failed"  # no judgement: transport error, 429, 5xx


@dataclass(slots=True)
class Answer:
    """What one request came back with: an HTTP status (or ``"transport"``), an
    outcome per event it carried, and error texts for what was not accepted."""

    status: str
    outcomes: list[Outcome]
    errors: list[str] = field(default_factory=list)
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        """A 2xx answer (batch items may still be refused inside it)."""
        return self.status.startswith("2")

    @property
    def retryable(self) -> bool:
        return (
            self.status == "transport"
            or self.status in ("429", "503")
            or (self.status.startswith("5"))
        )


def quiet_http_logs() -> None:
    """httpx logs every request at INFO; the tools report results themselves."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


# httpcore's pool does work quadratic in its number of connections on every request;
# with dozens of connections that costs the generator more CPU than the requests.
# Several small pools (one client each) keep it linear.
CONNECTIONS_PER_CLIENT = 8


def key_headers(api_key: str | None) -> dict[str, str]:
    """The header that carries an API key, when there is one."""
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


def make_client(
    url: str, concurrency: int, timeout: float = 30.0, api_key: str | None = None
) -> httpx.AsyncClient:
    """One keep-alive HTTP/1.1 client whose pool fits ``concurrency`` requests."""
    return httpx.AsyncClient(
        base_url=url.rstrip("/"),
        limits=httpx.Limits(
            max_connections=concurrency,
            max_keepalive_connections=concurrency,
            keepalive_expiry=60,
        ),
        timeout=httpx.Timeout(timeout, connect=5.0),
        headers={"content-type": "application/json", **key_headers(api_key)},
    )


class Clients:
    """``concurrency`` request slots spread over keep-alive clients of at most
    ``CONNECTIONS_PER_CLIENT`` connections: a request in slot ``k`` uses client
    ``k // CONNECTIONS_PER_CLIENT``, so no client ever queues requests."""

    def __init__(
        self,
        url: str,
        concurrency: int,
        timeout: float = 30.0,
        api_key: str | None = None,
    ) -> None:
        per = CONNECTIONS_PER_CLIENT
        self.clients = [
            make_client(url, min(per, concurrency - start), timeout, api_key)
            for start in range(0, concurrency, per)
        ]

    def for_slot(self, slot: int) -> httpx.AsyncClient:
        return self.clients[slot // CONNECTIONS_PER_CLIENT]

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients:
            await client.aclose()


def describe_exception(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _format_errors(detail: Any) -> str:
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = [str(p) for p in item.get("loc", []) if p != "body"]
                parts.append(f"{'.'.join(loc) or 'body'}: {item.get('msg', item)}")
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def read_answer(
    status: int, content: bytes, retry_after: str | None, count: int, batch: bool
) -> Answer:
    """Classify an HTTP answer to a request that carried ``count`` events."""
    code = str(status)
    try:
        body: Any = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        body = None
    if batch and status == 200 and isinstance(body, dict) and "results" in body:
        outcomes: list[Outcome] = []
        errors: list[str] = []
        for item in body["results"]:
            state = item.get("status")
            if state in ("accepted", "duplicate"):
                outcomes.append(Outcome(state))
                continue
            outcomes.append(Outcome.refused)
            why = _format_errors(item.get("errors")) if item.get("errors") else ""
            errors.append(_short(f"{state} {item.get('event_id') or ''} {why}"))
        return Answer(code, outcomes, errors)
    if 200 <= status < 300:
        duplicate = status == 200 and not batch
        return Answer(
            code, [Outcome.duplicate if duplicate else Outcome.accepted] * count
        )
    detail = body.get("detail") if isinstance(body, dict) else None
    message = _short(
        f"HTTP {status}: {_format_errors(detail or content.decode(errors='replace'))}"
    )
    kind = Outcome.failed if status == 429 or status >= 500 else Outcome.refused
    return Answer(code, [kind] * count, [message], _retry_after(retry_after))


async def send(
    client: httpx.AsyncClient, body: bytes, count: int, batch: bool
) -> Answer:
    """POST one body to ``/events`` (or ``/events/batch``); never raises for HTTP
    or transport trouble, which becomes a failed ``Answer``."""
    try:
        response = await client.post(
            "/events/batch" if batch else "/events", content=body
        )
    except httpx.HTTPError as exc:
        return Answer(
            "transport",
            [Outcome.failed] * count,
            [_short(f"transport error: {describe_exception(exc)}")],
        )
    return read_answer(
        response.status_code,
        response.content,
        response.headers.get("retry-after"),
        count,
        batch,
    )


class ErrorLog:
    """Distinct error texts with how often each was seen, in order of first sight."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, errors: list[str]) -> None:
        for error in errors:
            self.counts[error] = self.counts.get(error, 0) + 1

    def first(self, n: int) -> list[str]:
        return [
            f"{text} (x{count})" if count > 1 else text
            for text, count in list(self.counts.items())[:n]
        ]
