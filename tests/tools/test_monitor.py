"""``eventflow monitor`` against a live API, and against nothing."""

from __future__ import annotations

import orjson

from tests.tools.helpers import Live, free_port, run_tool

SUMMARY_FIELDS = {
    "received",
    "processed",
    "failed",
    "duplicates",
    "unsettled",
    "queue_length",
    "pending_messages",
    "consumer_lag",
    "consumers",
    "oldest_pending_age_seconds",
    "processing_rate_per_second",
    "avg_processing_time_ms",
    "p95_processing_time_ms",
    "timestamp",
}


async def test_monitor_once(live: Live) -> None:
    raw = await run_tool("scripts/monitor.py", "--once", "--json", "--url", live.url)
    assert raw.returncode == 0, raw.stderr
    summary = orjson.loads(raw.stdout)
    assert set(summary) >= SUMMARY_FIELDS
    assert summary["received"] == 0
    assert summary["consumers"] >= 0

    plain = await run_tool("-m", "eventflow", "monitor", "--once", "--url", live.url)
    assert plain.returncode == 0, plain.stderr
    for label in ("Received", "Queue length", "Consumer lag", "p95 processing"):
        assert label in plain.stdout


async def test_monitor_exits_1_when_the_api_is_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = await run_tool("scripts/monitor.py", "--once", "--url", url)
    assert result.returncode == 1
    assert f"cannot read {url}/metrics/summary" in result.stderr
    assert "Traceback" not in result.stderr
