from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from tests.conftest import Services
from tests.faults.harness import RECOVERY_TIMES, REPORTS, Stack


@pytest.fixture(params=[1, 8], ids=["1-partition", "8-partitions"])
def partitions(request: pytest.FixtureRequest) -> int:
    """Every fault test runs with one stream partition and with eight."""
    return int(request.param)


@pytest.fixture
def local_servers(services: Services) -> Services:
    """Fault tests stop and start the servers, so they must own them."""
    if services.postgres is None or services.redis is None:
        pytest.fail(
            "fault tests restart PostgreSQL and Redis: unset DATABASE_URL/REDIS_URL "
            "so the test session starts its own servers"
        )
    return services


@pytest.fixture
def stack(
    settings: Settings, engine: AsyncEngine, tmp_path: Path, local_servers: Services
) -> Iterator[Stack]:
    s = Stack(settings, tmp_path)
    yield s
    s.stop()
    # Make sure the servers are up for whatever runs next.
    for server in (local_servers.postgres, local_servers.redis):
        if server is not None and server.proc is None:
            server.start()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RECOVERY_TIMES:
        terminalreporter.section("fault recovery times")
        for what, seconds in RECOVERY_TIMES.items():
            terminalreporter.write_line(f"{what:<28} {seconds:6.2f} s")
    if REPORTS:
        terminalreporter.section("fault test figures")
        for what, value in REPORTS.items():
            terminalreporter.write_line(f"{what:<40} {value}")
