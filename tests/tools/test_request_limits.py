"""Size, time and content-type limits against a real uvicorn server: an
oversized or slow body is cut while it is read, and nothing is stored."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest
from sqlalchemy import text

from tests.tools.helpers import Live


@pytest.fixture
def live_env() -> dict[str, str]:
    return {"EVENTFLOW_BODY_TIMEOUT_S": "1", "EVENTFLOW_HEADER_TIMEOUT_S": "1"}


async def _raw(live: Live, head: bytes, body: bytes, wait_s: float = 10) -> bytes:
    """Send ``head`` and ``body`` on a fresh connection; the whole answer (head
    and body, as announced by its content-length) without sending anything more."""
    host, port = live.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + body)
        await writer.drain()
        return await asyncio.wait_for(_read_answer(reader), wait_s)
    finally:
        writer.close()


async def _read_answer(reader: asyncio.StreamReader) -> bytes:
    answer = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"content-length: *(\d+)", answer, re.IGNORECASE)
    if length is not None:
        answer += await reader.readexactly(int(length.group(1)))
    return answer


def _head(path: str, length: int, kind: str = "application/json") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {kind}\r\n"
        f"content-length: {length}\r\n\r\n"
    ).encode()


async def test_oversized_bodies_are_refused_before_they_are_read(live: Live) -> None:
    start = time.monotonic()
    # 2 MB announced, 1 KB sent: the answer comes without the rest of the body.
    answer = await _raw(live, _head("/events", 2_000_000), b"{" + b" " * 1000)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"EVENTFLOW_MAX_EVENT_BYTES" in answer
    assert time.monotonic() - start < 5
    # Chunked, no length announced: cut once the limit is passed.
    chunk = b" " * 60_000
    chunked = (
        b"POST /events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
        + (b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        * 2
    )
    answer = await _raw(live, chunked, b"")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    async with httpx.AsyncClient(base_url=live.url) as client:
        big = {"event_type": "custom", "properties": {"x": "y" * 70_000}}
        assert (await client.post("/events", json=big)).status_code == 413
        batch = {"events": [big, {"event_type": "custom"}]}
        answer_ = (await client.post("/events/batch", json=batch)).json()
        assert [r["status"] for r in answer_["results"]] == ["invalid", "accepted"]
        assert answer_["results"][0]["errors"][0]["type"] == "too_large"
    async with live.engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM raw_events")) == 1


async def test_a_slow_body_is_cut(live: Live) -> None:
    answer = await _raw(live, _head("/events", 100), b'{"event_type": ', wait_s=10)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


async def test_only_json_bodies(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url) as client:
        for kind in ("text/plain", "application/x-www-form-urlencoded", ""):
            answer = await client.post(
                "/events/batch",
                content=b'{"events": [{"event_type": "custom"}]}',
                headers={"content-type": kind},
            )
            assert answer.status_code == 415, kind
        ok = await client.post(
            "/events",
            content=b'{"event_type": "custom"}',
            headers={"content-type": "application/json; charset=utf-8"},
        )
        assert ok.status_code == 202
    async with live.engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM raw_events")) == 1


async def test_header_floods_and_slow_headers_are_cut(live: Live) -> None:
    flood = b"GET /health HTTP/1.1\r\nhost: x\r\n" + b"".join(
        b"x-h%d: v\r\n" % n for n in range(10_000)
    )
    answer = await _raw(live, flood + b"\r\n", b"")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    big = b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20_000 + b"\r\n\r\n"
    answer = await _raw(live, big, b"")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    # One header line, then silence: cut after EVENTFLOW_HEADER_TIMEOUT_S.
    start = time.monotonic()
    answer = await _raw(live, b"GET /health HTTP/1.1\r\nhost: x\r\n", b"", wait_s=10)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - start < 5
    async with httpx.AsyncClient(base_url=live.url) as client:
        assert (await client.get("/health")).status_code == 200  # still serving
