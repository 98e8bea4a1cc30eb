"""The load-test report: pydantic models (its JSON form) and the text rendering."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class LatencyStats(BaseModel):
    count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


def latency_stats(seconds: Sequence[float]) -> LatencyStats | None:
    """Percentiles by nearest rank over durations given in seconds."""
    if not seconds:
        return None
    ordered = sorted(seconds)

    def rank(p: float) -> float:
        index = max(0, math.ceil(p / 100 * len(ordered)) - 1)
        return round(ordered[index] * 1000, 3)

    return LatencyStats(
        count=len(ordered),
        mean_ms=round(sum(ordered) / len(ordered) * 1000, 3),
        p50_ms=rank(50),
        p95_ms=rank(95),
        p99_ms=rank(99),
        max_ms=round(ordered[-1] * 1000, 3),
    )


class ScheduleReport(BaseModel):
    """How well the generator kept to its timetable (open loop)."""

    requested_rate: float | None = Field(description="events/s; None = unlimited")
    achieved_send_rate: float = Field(description="events/s actually sent")
    fell_behind: bool
    late_sends: int = Field(description="requests started > 10 ms after their slot")
    concurrency_waits: int = Field(description="sends due while every slot was busy")
    max_behind_ms: float
    p99_behind_ms: float


class IngestReport(BaseModel):
    """What the API answered."""

    requests: int
    events: int
    accepted: int
    duplicates: int
    rejected: int = Field(description="batch items refused inside a 2xx answer")
    failures: int = Field(description="events in non-2xx answers or transport errors")
    failed_requests: int
    status_counts: dict[str, int]
    errors: list[str]
    duration_s: float
    throughput_per_second: float = Field(description="accepted events per second")
    latency: LatencyStats | None


class EndToEndReport(BaseModel):
    """Accepted events followed until their processed row exists."""

    source: Literal["database", "api"]
    followed: int
    processed: int
    dead_lettered: int
    lost: int = Field(description="accepted, neither processed nor dead-lettered")
    duplicated: int | None = Field(description="events with more than one row")
    throughput_per_second: float | None
    latency: LatencyStats | None
    waited_s: float


class LoadTestReport(BaseModel):
    url: str
    started_at: datetime
    concurrency: int
    batch: int
    schedule: ScheduleReport
    ingest: IngestReport
    end_to_end: EndToEndReport | None
    ok: bool


def _latency_line(label: str, stats: LatencyStats | None) -> str:
    if stats is None:
        return f"  {label:<12} n/a"
    return (
        f"  {label:<12} p50 {stats.p50_ms:.1f} ms  p95 {stats.p95_ms:.1f} ms  "
        f"p99 {stats.p99_ms:.1f} ms  max {stats.max_ms:.1f} ms"
    )


def render(report: LoadTestReport) -> str:
    s, i, e = report.schedule, report.ingest, report.end_to_end
    lines = [
        f"Load test against {report.url}: {i.events} events in {i.requests} requests "
        f"(batch {report.batch}, concurrency {report.concurrency})",
        "Schedule",
    ]
    if s.requested_rate is None:
        lines.append(
            f"  rate         unlimited (closed loop), achieved "
            f"{s.achieved_send_rate:.1f}/s"
        )
    else:
        lines += [
            f"  rate         requested {s.requested_rate:g}/s, achieved "
            f"{s.achieved_send_rate:.1f}/s"
            + ("  (FELL BEHIND)" if s.fell_behind else ""),
            f"  behind       max {s.max_behind_ms:.1f} ms, p99 {s.p99_behind_ms:.1f} "
            f"ms, {s.late_sends} late sends, {s.concurrency_waits} waits for a "
            "free slot",
        ]
    lines += [
        "Ingest",
        f"  answers      accepted {i.accepted}, duplicates {i.duplicates}, "
        f"rejected {i.rejected}, failures {i.failures} "
        f"({i.failed_requests} failed requests)",
        "  statuses     "
        + ", ".join(f"{k}: {v}" for k, v in sorted(i.status_counts.items())),
        f"  throughput   {i.throughput_per_second:.1f} events/s "
        f"over {i.duration_s:.2f} s",
        _latency_line("latency", i.latency),
    ]
    lines += [f"  error        {text}" for text in i.errors]
    if e is None:
        lines.append("End to end   not followed")
    else:
        rate = f"{e.throughput_per_second:.1f}/s" if e.throughput_per_second else "n/a"
        dup = "n/a" if e.duplicated is None else str(e.duplicated)
        lines += [
            f"End to end (from the {e.source})",
            f"  events       followed {e.followed}, processed {e.processed}, "
            f"dead-lettered {e.dead_lettered}, lost {e.lost}, duplicated {dup}",
            f"  throughput   {rate} (waited {e.waited_s:.2f} s after the last send)",
            _latency_line("latency", e.latency),
        ]
    result = "OK" if report.ok else "PROBLEMS (see above)"
    if s.fell_behind:
        result += "; the requested rate was not reached"
    lines.append(f"Result: {result}")
    return "\n".join(lines)
