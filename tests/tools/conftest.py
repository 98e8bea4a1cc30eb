"""A live EventFlow (API and worker as real processes) for the tools to talk to."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from eventflow.local.servers import die_with_parent
from tests.tools.helpers import Live, free_port

STARTUP_S = 30.0


def _wait_live(url: str, processes: list[subprocess.Popen[bytes]], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in processes):
                pytest.fail(f"EventFlow exited during start-up:\n{log.read_text()}")
            try:
                if client.get(f"{url}/health/live").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    pytest.fail(f"EventFlow did not start in {STARTUP_S} s:\n{log.read_text()}")


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def live_env() -> dict[str, str]:
    """Extra environment for the live processes; override it in a test module."""
    return {}


@pytest.fixture
def live(
    settings: Settings, engine: AsyncEngine, tmp_path: Path, live_env: dict[str, str]
) -> Iterator[Live]:
    """``eventflow api`` and ``eventflow worker`` as subprocesses over the session's
    servers, with this test's own stream and group (``engine`` emptied the
    tables)."""
    assert settings.database_dsn and settings.redis_dsn
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_dsn,
        "REDIS_URL": settings.redis_dsn,
        "EVENTFLOW_STREAM_NAME": settings.stream_name,
        "EVENTFLOW_CONSUMER_GROUP": settings.consumer_group,
        "EVENTFLOW_WORKER_BLOCK_MS": "50",
        "EVENTFLOW_WORKER_METRICS_PORT": "0",
        "EVENTFLOW_LOG_FORMAT": "text",
        "EVENTFLOW_LOG_LEVEL": "WARNING",
        "EVENTFLOW_AUTH_REQUIRED": "false",
        **live_env,
    }
    log = tmp_path / "eventflow.log"
    processes: list[subprocess.Popen[bytes]] = []
    with log.open("wb") as out:
        try:
            for args in (
                ["api", "--host", "127.0.0.1", "--port", str(port)],
                ["worker"],
            ):
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "eventflow", *args],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        preexec_fn=die_with_parent(signal.SIGKILL),
                    )
                )
            url = f"http://127.0.0.1:{port}"
            _wait_live(url, processes, log)
            yield Live(url, settings.database_dsn, engine)
        finally:
            _stop(processes)
