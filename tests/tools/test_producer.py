"""``eventflow produce`` against a live API and worker."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import text

from eventflow.tools.producer import ProduceReport
from tests.tools.helpers import Live, free_port, run_tool


async def _processed(live: Live, expected: int, within: float = 15.0) -> int:
    deadline = time.monotonic() + within
    while True:
        async with live.engine.connect() as conn:
            n = int(await conn.scalar(text("SELECT count(*) FROM processed_events")))
        if n >= expected or time.monotonic() > deadline:
            return n
        await asyncio.sleep(0.1)


async def test_producer_sends_a_mix_that_gets_processed(live: Live) -> None:
    result = await run_tool(
        "scripts/producer.py", "--count", "50", "--url", live.url, "--json"
    )
    assert result.returncode == 0, result.stderr
    report = ProduceReport.model_validate_json(result.stdout)
    assert (report.sent, report.accepted, report.duplicates) == (50, 50, 0)
    assert (report.refused, report.failed, report.errors) == (0, 0, [])

    batched = await run_tool(
        "-m", "eventflow", "produce", "--count", "30", "--batch", "10",
        "--rate", "300", "--url", live.url, "--no-progress",
    )  # fmt: skip
    assert batched.returncode == 0, batched.stderr
    assert "accepted        30" in batched.stdout
    assert "refused          0" in batched.stdout

    assert await _processed(live, 80) == 80
    async with live.engine.connect() as conn:
        types = set(
            (await conn.scalars(text("SELECT event_type FROM processed_events"))).all()
        )
    assert types == {"purchase", "user_signup", "page_view", "custom"}

    # Anything not accepted makes it fail, naming the first errors: here every
    # request is refused (404) because the base URL is wrong.
    refused = await run_tool(
        "-m", "eventflow", "produce", "--count", "3", "--type", "purchase",
        "--url", f"{live.url}/wrong", "--no-progress",
    )  # fmt: skip
    assert refused.returncode == 1
    assert "refused          3" in refused.stdout
    assert "HTTP 404: Not Found (x3)" in refused.stdout


async def test_producer_exits_1_when_the_api_is_unreachable() -> None:
    result = await run_tool(
        "scripts/producer.py", "--count", "5", "--url",
        f"http://127.0.0.1:{free_port()}",
    )  # fmt: skip
    assert result.returncode == 1
    assert "cannot reach" in result.stderr
