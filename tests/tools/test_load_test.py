"""``eventflow load-test`` against a live API and worker, and against nothing."""

from __future__ import annotations

from eventflow.tools.report import LatencyStats, LoadTestReport
from tests.tools.helpers import Live, free_port, run_tool


def _ordered(stats: LatencyStats | None) -> bool:
    assert stats is not None
    return 0 < stats.p50_ms <= stats.p95_ms <= stats.p99_ms <= stats.max_ms


async def test_load_test_follows_every_event_to_the_database(live: Live) -> None:
    result = await run_tool(
        "scripts/load_test.py", "--events", "400", "--rate", "200",
        "--concurrency", "32", "--url", live.url, "--json",
        "--database-url", live.database_url, "--timeout", "20",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = LoadTestReport.model_validate_json(result.stdout)
    assert report.ok
    ingest, e2e = report.ingest, report.end_to_end
    assert (ingest.requests, ingest.events, ingest.accepted) == (400, 400, 400)
    assert (ingest.failures, ingest.rejected, ingest.duplicates) == (0, 0, 0)
    assert ingest.status_counts == {"202": 400}
    assert _ordered(ingest.latency)
    # The timetable spans 2 s; the generator keeps to it on a quiet machine.
    assert report.schedule.requested_rate == 200
    assert 120 <= report.schedule.achieved_send_rate <= 220
    assert e2e is not None and e2e.source == "database"
    assert (e2e.followed, e2e.processed) == (400, 400)
    assert (e2e.lost, e2e.duplicated, e2e.dead_lettered) == (0, 0, 0)
    assert _ordered(e2e.latency)
    assert e2e.throughput_per_second and e2e.throughput_per_second > 50


async def test_load_test_follows_through_the_api_without_a_database(
    live: Live,
) -> None:
    result = await run_tool(
        "-m", "eventflow", "load-test", "--events", "60", "--rate", "0",
        "--concurrency", "4", "--batch", "20", "--url", live.url,
        "--database-url", "", "--timeout", "20",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "End to end (from the api)" in result.stdout
    assert "followed 60, processed 60, dead-lettered 0, lost 0" in result.stdout
    assert "Result: OK" in result.stdout


async def test_load_test_counts_every_send_to_a_closed_port_as_failed() -> None:
    result = await run_tool(
        "scripts/load_test.py", "--events", "20", "--rate", "200", "--url",
        f"http://127.0.0.1:{free_port()}", "--json", "--database-url", "",
    )  # fmt: skip
    assert result.returncode == 1
    report = LoadTestReport.model_validate_json(result.stdout)
    assert not report.ok
    assert (report.ingest.failures, report.ingest.failed_requests) == (20, 20)
    assert report.ingest.accepted == 0
    assert report.ingest.status_counts == {"transport": 20}
    assert report.ingest.errors and "ConnectError" in report.ingest.errors[0]
    assert report.end_to_end is None
