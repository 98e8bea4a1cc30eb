"""Browser tests: the real console in Debian's headless Chromium (Playwright
drives the system browser; it never downloads one), served by a real uvicorn
server in this process, with a real worker, PostgreSQL and Redis.

Each page fails its test on a JavaScript error, a console error, a failed request
or an answer >= 400 that the test did not say it expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    Response,
    async_playwright,
)
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.api import create_app
from eventflow.config import Settings
from eventflow.local.servers import free_port
from eventflow.metrics import Metrics
from eventflow.pipeline.worker import Worker

SCREENSHOTS = Path(__file__).parents[2] / "docs" / "console"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def chromium() -> str:
    """Debian's Chromium, installed by scripts/install-system-deps.sh."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "Chromium is missing: run `make system-deps` (scripts/"
            "install-system-deps.sh installs Debian's chromium package)"
        )
    return found


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One browser per module."""
    # Never fetch a browser build: only the system's Chromium is used.
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    async with async_playwright() as p:
        launched = await _launch(p)
        yield launched
        await launched.close()


async def _launch(p: Playwright) -> Browser:
    return await p.chromium.launch(
        executable_path=chromium(),
        headless=True,
        args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
    )


@dataclass
class Watched:
    """A page whose errors are collected; ``expect(status)`` allows answers
    with that status for the duration of a block."""

    page: Page
    context: BrowserContext
    errors: list[str] = field(default_factory=list)
    allowed: set[int] = field(default_factory=set)

    @contextlib.contextmanager
    def expect(self, *statuses: int) -> Iterator[None]:
        self.allowed.update(statuses)
        try:
            yield
        finally:
            self.allowed.difference_update(statuses)

    def check(self) -> None:
        assert not self.errors, "\n".join(self.errors)

    def screenshot_path(self, name: str) -> str:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return str(SCREENSHOTS / f"{name}.png")

    async def screenshot(self, name: str, full_page: bool = True) -> None:
        await self.page.screenshot(path=self.screenshot_path(name), full_page=full_page)


async def watch(browser: Browser, base_url: str, viewport: dict[str, int]) -> Watched:
    context = await browser.new_context(
        base_url=base_url, viewport=viewport, device_scale_factor=1
    )
    page = await context.new_page()
    watched = Watched(page, context)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            # A refused answer the test expects shows up here too.
            text = message.text
            if any(f"status of {s}" in text for s in watched.allowed):
                return
            watched.errors.append(f"console error on {page.url}: {text}")

    def on_page_error(error: Exception) -> None:
        watched.errors.append(f"JavaScript error on {page.url}: {error}")

    def on_request_failed(request: Request) -> None:
        # The browser's own favicon fetch is cancelled when the page navigates
        # away before it ends: nothing failed on the server.
        if request.url.endswith("/favicon.svg") and "ERR_ABORTED" in (
            request.failure or ""
        ):
            return
        watched.errors.append(f"request failed: {request.url} ({request.failure})")

    def on_response(response: Response) -> None:
        if response.status >= 400 and response.status not in watched.allowed:
            watched.errors.append(f"{response.status} from {response.url}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    page.on("requestfailed", on_request_failed)
    page.on("response", on_response)
    return watched


@dataclass
class Served:
    url: str
    settings: Settings


@pytest.fixture
async def console_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "auth_required": True,
            "key_refresh_s": 0.5,
            "console_secret": SecretStr("browser-test-secret"),
        }
    )


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[Served]:
    """The API (console included) on a real port, in this event loop."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, Metrics()),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", settings)
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, engine: AsyncEngine, redis: Redis
) -> AsyncIterator[Worker]:
    """A worker consuming in this event loop until the block ends."""
    worker = Worker(settings, engine, redis)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
