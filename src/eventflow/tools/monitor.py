"""``eventflow monitor``: a live view of ``GET /metrics/summary``."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import uvloop
from pydantic import BaseModel, ConfigDict, Field
from rich.live import Live
from rich.table import Table

from eventflow.tools.sending import describe_exception, key_headers, quiet_http_logs


class MonitorOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: str = "http://localhost:8000"
    api_key: str | None = Field(default=None, repr=False)
    interval: float = Field(default=1.0, gt=0)
    once: bool = False
    as_json: bool = False


class Unreachable(Exception):
    """The API did not answer, or answered something other than a summary."""


async def fetch_summary(client: httpx.AsyncClient) -> dict[str, Any]:
    try:
        response = await client.get("/metrics/summary")
    except httpx.HTTPError as exc:
        raise Unreachable(describe_exception(exc)) from exc
    if response.status_code != 200:
        raise Unreachable(f"HTTP {response.status_code}: {response.text[:200]}")
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise Unreachable("the answer is not JSON") from exc
    if not isinstance(body, dict) or "received" not in body:
        raise Unreachable("the answer is not an EventFlow summary")
    return body


@dataclass(slots=True)
class Sample:
    at: float  # time.monotonic()
    summary: dict[str, Any]


def rates(
    previous: Sample | None, current: Sample
) -> tuple[float | None, float | None]:
    """Events per second in (received) and out (processed) between two polls."""
    if previous is None or current.at <= previous.at:
        return None, None
    span = current.at - previous.at
    now, before = current.summary, previous.summary
    return (
        (now["received"] - before["received"]) / span,
        (now["processed"] - before["processed"]) / span,
    )


def _num(value: Any, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) or digits:
        return f"{float(value):,.{digits}f}{unit}"
    return f"{value:,}{unit}"


def rows(previous: Sample | None, current: Sample) -> list[tuple[str, str]]:
    s = current.summary
    rate_in, rate_out = rates(previous, current)
    return [
        ("Rate in", _num(rate_in, " /s", 1)),
        ("Rate out", _num(rate_out, " /s", 1)),
        ("Received", _num(s["received"])),
        ("Processed", _num(s["processed"])),
        ("Unsettled", _num(s.get("unsettled"))),
        ("Queue length", _num(s.get("queue_length"))),
        ("Consumer lag", _num(s.get("consumer_lag"))),
        ("Pending", _num(s.get("pending_messages"))),
        ("Oldest pending", _num(s.get("oldest_pending_age_seconds"), " s", 1)),
        ("Consumers", _num(s.get("consumers"))),
        ("Failed (dead letters)", _num(s.get("failed"))),
        ("Duplicates", _num(s.get("duplicates"))),
        ("Processed /s (1 min)", _num(s.get("processing_rate_per_second"), "", 1)),
        ("Avg processing", _num(s.get("avg_processing_time_ms"), " ms", 1)),
        ("p95 processing", _num(s.get("p95_processing_time_ms"), " ms", 1)),
    ]


def table(url: str, previous: Sample | None, current: Sample, note: str) -> Table:
    at = str(current.summary.get("timestamp", ""))[11:19]
    caption = f"{at} UTC · {note}" if at else note
    view = Table(title=f"EventFlow {url}", caption=caption, show_header=False)
    view.add_column("metric", style="bold")
    view.add_column("value", justify="right")
    for name, value in rows(previous, current):
        style = "red" if name.startswith("Failed") and value not in ("0", "n/a") else ""
        view.add_row(name, value, style=style)
    return view


async def _live(opts: MonitorOptions, client: httpx.AsyncClient) -> int:
    current = Sample(time.monotonic(), await fetch_summary(client))
    previous: Sample | None = None
    note = "Ctrl-C to stop"
    with Live(table(opts.url, None, current, note), auto_refresh=False) as live:
        while True:
            await asyncio.sleep(opts.interval)
            try:
                sample = Sample(time.monotonic(), await fetch_summary(client))
            except Unreachable as exc:
                note = f"API unreachable: {exc} (retrying)"
            else:
                previous, current, note = current, sample, "Ctrl-C to stop"
            if opts.as_json:
                sys.stdout.write(orjson.dumps(current.summary).decode() + "\n")
            live.update(table(opts.url, previous, current, note), refresh=True)


async def monitor(opts: MonitorOptions) -> int:
    async with httpx.AsyncClient(
        base_url=opts.url.rstrip("/"),
        timeout=httpx.Timeout(5.0),
        headers=key_headers(opts.api_key),
    ) as client:
        if opts.once:
            summary = await fetch_summary(client)
            if opts.as_json:
                sys.stdout.write(orjson.dumps(summary).decode() + "\n")
            else:
                for name, value in rows(None, Sample(time.monotonic(), summary))[2:]:
                    print(f"{name:<24}{value:>14}")
            return 0
        if opts.as_json:  # one JSON line per poll, no live view
            while True:
                sys.stdout.write(orjson.dumps(await fetch_summary(client)).decode())
                sys.stdout.write("\n")
                sys.stdout.flush()
                await asyncio.sleep(opts.interval)
        return await _live(opts, client)


def run(opts: MonitorOptions) -> int:
    """Entry point of ``eventflow monitor``; 1 when the API cannot be reached."""
    quiet_http_logs()
    try:
        return uvloop.run(monitor(opts))
    except Unreachable as exc:
        print(
            f"error: cannot read {opts.url.rstrip('/')}/metrics/summary: {exc}\n"
            "Is EventFlow running (eventflow dev / eventflow api)?",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 0
