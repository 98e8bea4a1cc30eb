"""uvicorn's HTTP/1.1 protocol (httptools) with limits on request heads.

uvicorn bounds neither how many headers a request has, nor how large they are,
nor how long a client may take to send them: a client that sends one header line
every few seconds holds a connection for ever. This protocol answers ``431`` past
``EVENTFLOW_MAX_HEADERS`` headers or ``EVENTFLOW_MAX_HEADER_BYTES`` bytes of
request line and headers, and ``408`` when they have not all arrived within
``EVENTFLOW_HEADER_TIMEOUT_S`` of the request's first byte (or of the connection,
for its first request); then it closes the connection. Slow bodies are cut by
``api.limits``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

STATUS = {
    408: b"HTTP/1.1 408 Request Timeout\r\n",
    431: b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
}


class _Refused(Exception):
    pass


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    max_headers = 100
    max_header_bytes = 16 * 1024
    header_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._head_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str] | None = None

    @classmethod
    def configured(
        cls, max_headers: int, max_header_bytes: int, header_timeout_s: float
    ) -> type[GuardedHttpToolsProtocol]:
        return type(
            "EventFlowHttpProtocol",
            (cls,),
            {
                "max_headers": max_headers,
                "max_header_bytes": max_header_bytes,
                "header_timeout_s": header_timeout_s,
            },
        )

    # --- the head's deadline ---------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        self._head_bytes = self._head_count = 0
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        self._answer(408, "the request headers did not arrive in time")

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # --- counting --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._head_timer is None:
            self._arm()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url), headers=0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4, headers=1)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _count(self, size: int, headers: int) -> None:
        self._head_bytes += size
        self._head_count += headers
        if self._head_count > self.max_headers:
            self._refusal = (431, f"more than {self.max_headers} headers")
            raise _Refused
        if self._head_bytes > self.max_header_bytes:
            self._refusal = (431, f"headers larger than {self.max_header_bytes} bytes")
            raise _Refused

    def send_400_response(self, msg: str) -> None:
        # httptools reports an exception raised in a callback as a parse error.
        if self._refusal is not None:
            status, detail = self._refusal
            self._answer(status, detail)
            return
        super().send_400_response(msg)

    def _answer(self, status: int, detail: str) -> None:
        if self.transport.is_closing():
            return
        body = detail.encode()
        self.transport.write(
            STATUS[status]
            + b"content-type: text/plain; charset=utf-8\r\n"
            + b"content-length: "
            + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n"
            + body
        )
        self.transport.close()
