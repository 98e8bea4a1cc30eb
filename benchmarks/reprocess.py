"""Reprocessing next to live traffic: the live end-to-end p99 with and without a
reprocessing run of ``--events`` stored events going on.

    .venv/bin/python benchmarks/reprocess.py [--events 100000] [--rate 100]
        [--seconds 20] [--record FILE]

On a stack it starts itself (local PostgreSQL and Valkey, 1 API, 1 worker, the
default settings): stores ``--events`` events, measures live single events at
``--rate`` events/s for ``--seconds`` (``eventflow load-test``, which follows
every event to its stored row), then starts a reprocessing run of everything
stored and measures the same live load while it runs, and once more after it.
It checks that the run re-processed every event exactly once, and reports the
p99s, the ratio of the p99 during the run to the one before it (goal <= 2), and
the run's own speed, with the machine and the command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from harness import BenchError, Stack, deployment, run_command
from measure import emit, machine_info


async def load(stack: Stack, url: str, stream: str, rate: int, seconds: int) -> Any:
    argv = [
        sys.executable, "-m", "eventflow", "load-test",
        "--events", str(rate * seconds), "--rate", str(rate), "--json",
        "--url", url, "--database-url", stack.database_url, "--timeout", "60",
    ]  # fmt: skip
    code, out, err = await run_command(argv, stack.env(stream))
    try:
        return orjson.loads(out)
    except orjson.JSONDecodeError as exc:
        raise BenchError(f"load-test failed ({code}):\n{out}\n{err}") from exc


def p99(report: Any) -> float:
    return float(report["end_to_end"]["latency"]["p99_ms"])


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        stack = Stack(Path(folder))
        stack.start_servers()
        try:
            async with deployment(stack, "reprocess", 1, 1) as dep:
                url = dep.api_urls[0]
                start = datetime.now(UTC) - timedelta(seconds=1)
                async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                    for first in range(0, args.events, 1000):
                        batch = [
                            {
                                "event_type": "custom",
                                "user_id": f"user-{n % 5000}",
                                "properties": {"name": "stored", "n": n},
                            }
                            for n in range(first, min(args.events, first + 1000))
                        ]
                        answer = await client.post(
                            "/events/batch", json={"events": batch}
                        )
                        answer.raise_for_status()
                    await stack.wait_settled(600, expected=args.events)
                    baseline = await load(
                        stack, url, dep.stream, args.rate, args.seconds
                    )
                    end = datetime.now(UTC)
                    run = (
                        await client.post(
                            "/reprocess",
                            json={
                                "from": start.isoformat(),
                                "to": end.isoformat(),
                                "rate_limit": args.run_rate,
                            },
                        )
                    ).json()
                    started = time.monotonic()
                    during = await load(stack, url, dep.stream, args.rate, args.seconds)
                    while True:
                        state = (await client.get(f"/reprocess/{run['id']}")).json()
                        if state["state"] == "done":
                            break
                        await asyncio.sleep(0.5)
                    took = time.monotonic() - started
                    # The same live load again after the run: the machine's own
                    # drift shows as a difference between the two baselines.
                    after = await load(stack, url, dep.stream, args.rate, args.seconds)
                db = await stack.db()
                redone = await db.fetchval(
                    "SELECT count(*) FROM processed_events WHERE reprocess_run_id = $1",
                    run["id"],
                )
        finally:
            await stack.close()
            stack.stop_servers()
    total = run["total"]
    return {
        "what": "live end-to-end p99 with and without a reprocessing run",
        "stored_events": args.events,
        "run": {
            "total": total,
            "done": state["done"],
            "reprocessed_rows": redone,
            "every_event_once": redone == total == state["done"],
            "seconds": round(took, 1),
            "events_per_s": round(total / took),
        },
        "live_rate": args.rate,
        "live_seconds": args.seconds,
        "p99_ms_without": p99(baseline),
        "p99_ms_without_after_run": p99(after),
        "p99_ms_during": p99(during),
        # Against the baseline before the run: the one after it may still carry
        # the run's own aftermath (autovacuum of the rows it rewrote).
        "p99_ratio": round(p99(during) / p99(baseline), 2),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "goal": "p99 ratio <= 2",
        "machine": machine_info(),
        "run_rate_limit": args.run_rate,
        "command": f"python benchmarks/reprocess.py --events {args.events} "
        f"--rate {args.rate} --seconds {args.seconds}"
        + (f" --run-rate {args.run_rate:g}" if args.run_rate else ""),
        "date": datetime.now(UTC).date().isoformat(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument(
        "--run-rate", type=float, default=None, help="the run's rate_limit (events/s)"
    )
    parser.add_argument("--record", type=Path, default=None)
    arguments = parser.parse_args()
    result = asyncio.run(main(arguments))
    emit(result, arguments.record)
    if result["run"]["every_event_once"] is not True:
        raise SystemExit("the run did not re-process every event exactly once")
