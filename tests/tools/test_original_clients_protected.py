"""The original clients send no key: against a deployment that requires keys,
EVENTFLOW_ANONYMOUS_INGEST=true lets their events in, and nothing else."""

from __future__ import annotations

import httpx
import pytest

from tests.tools.helpers import Live, run_tool


@pytest.fixture
def live_env() -> dict[str, str]:
    return {"EVENTFLOW_AUTH_REQUIRED": "true", "EVENTFLOW_ANONYMOUS_INGEST": "true"}


async def test_the_original_producer_works_against_a_protected_deployment(
    live: Live,
) -> None:
    produced = await run_tool(
        "scripts/producer.py", "--api-url", live.url, "--count", "12"
    )
    assert produced.returncode == 0, produced.stderr + produced.stdout
    async with httpx.AsyncClient(base_url=live.url) as client:
        assert (await client.get("/health")).json()["status"] == "healthy"
        assert (await client.get("/dead-letters")).status_code == 401
        assert (await client.get("/metrics/summary")).status_code == 401
