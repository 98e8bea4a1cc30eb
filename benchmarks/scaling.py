"""Scaling benchmark: how drain throughput grows with workers and partitions, and
what each component costs per event. One command, a stack of its own.

    make bench-scaling                                  # the committed run
    .venv/bin/python benchmarks/scaling.py              # the same
    .venv/bin/python benchmarks/scaling.py --quick      # small: checks the harness
    .venv/bin/python benchmarks/scaling.py --repeat 1 --workers 1,2 --partitions 1,4

Every round (3 by default; the configurations alternate, so a busy moment on the
machine does not land on one configuration alone) measures:

- the COPY ceiling, measured as ``benchmarks/run.py`` does (``ceiling_postgres``:
  rows like ``processed_events``' COPYed into a copy of it, 1,000 per commit);
- drain: for 1, 2 and 4 worker processes and 1, 4 and 16 partitions, the events
  stored per second when the workers find N events waiting (in ``raw_events`` and
  in the partition streams, as the API leaves them), with the CPU time per event of
  the workers, PostgreSQL and Redis, and a check of per-key order;
- CPU per event in the standard configuration (1 API + 1 worker, 8 partitions):
  single events (``POST /events``) and batches of 100 and of 1,000, end to end.

CPU time is ``utime + stime`` (and ``cutime + cstime``, for exited children such as
PostgreSQL backends) from ``/proc/<pid>/stat``, read before and after, for each
component's processes and their descendants. The machine information, the CPU
meter, the COPY ceiling and the drain are ``benchmarks/measure.py``'s, shared with
``benchmarks/run.py``. Results go to
``benchmarks/records/scaling-<UTC date-time>.json`` (every round's figures, the
machine, the versions, the command); a Markdown summary is printed. See
docs/scaling.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import uvloop
from harness import (
    REPO,
    Stack,
    closed_loop,
    send_batches,
    wrk_path,
    wrk_version,
)
from measure import (
    USERS,
    copy_ceiling,
    git_info,
    load_average,
    machine_info,
    owned_deployment,
    per_event_us,
    stack_meter,
    staged_drain,
    wait_drained,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from eventflow.store.tables import engine_for
from eventflow.tools.events import EventGenerator

RECORDS = REPO / "benchmarks" / "records"
STANDARD_PARTITIONS = 8  # EventFlow's default
# Workers renew leases every third of this and hand partitions over at that pace:
# 3 s instead of the default 10 s lets 4 workers settle their partitions in a few
# seconds instead of ~12 before each measurement. It costs a few Redis commands
# per second, nothing measurable next to thousands of events per second.
LEASE_TTL_MS = 3000
DASH = "\u2013"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the stack -------------------------------------------------------------------


@dataclass
class ScalingStack(Stack):
    """The benchmark stack, with a shorter lease (``LEASE_TTL_MS``) for the
    processes it starts; ``harness.Stack.env`` sets ``EVENTFLOW_PARTITIONS``."""

    partitions: int = STANDARD_PARTITIONS

    def env(self, stream: str) -> dict[str, str]:
        env = super().env(stream)
        env["EVENTFLOW_LEASE_TTL_MS"] = str(LEASE_TTL_MS)
        return env


# --- CPU per event, standard configuration -----------------------------------------


async def standard(
    stack: ScalingStack, generator: str, single_s: float, batch_events: int
) -> dict[str, Any]:
    """1 API + 1 worker on 8 partitions: single events for ``single_s`` seconds
    (closed loop, 32 connections), then batches of 100 and of 1,000; CPU per
    event of every component, from the start of the load until every event is
    stored."""
    out: dict[str, Any] = {}
    loads: list[tuple[str, int]] = [("single", 1), ("batch100", 100)]
    loads.append(("batch1000", 1000))
    for tag, size in loads:
        bodies = [
            (len(ids), body)
            for ids, body in EventGenerator(seed=7).bodies(batch_events, size)
        ]
        async with owned_deployment(
            stack, f"cpu-{tag}", STANDARD_PARTITIONS, 1, 1, LEASE_TTL_MS, log
        ) as (dep, _):
            meter = stack_meter(stack, dep)
            load = os.getloadavg()[0]
            meter.start()
            started = time.time()
            if size == 1:
                result = await closed_loop(generator, dep.api_urls, 32, single_s)
                sent, failed = result.ok, result.non_2xx + result.errors
                ingest_s = result.duration_s
            else:
                run = await send_batches(dep.api_urls[0], bodies, 4)
                sent, failed = run.accepted, run.failed_requests + run.rejected
                ingest_s = run.duration_s
            counts, _ = await wait_drained(stack, dep.stream, 120.0, settle_s=0.3)
            cpu = meter.stop()
            _, last = await stack.processed_span()
        processed = counts["processed"]
        out[tag] = {
            "cpu_us_per_event": per_event_us(cpu, processed),
            "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
            "ingest_per_s": round(sent / ingest_s, 1),
            "e2e_per_s": round(processed / (last - started), 1) if last else None,
            "accepted": sent,
            "processed": processed,
            "not_accepted": failed,
            "lost": counts["raw"] - processed - counts["failed"],
            "load_average_before": round(load, 2),
        }
    return out


# --- rounds, summary, output -------------------------------------------------------


def stats(values: Sequence[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    return {
        "median": statistics.median(present) if present else None,
        "min": min(present) if present else None,
        "max": max(present) if present else None,
        "values": list(values),
    }


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    copy = [r["ceiling"]["copy_rows_per_s"] for r in rounds]
    drains: dict[str, Any] = {}
    for key in rounds[0]["drain"]:
        reps = [r["drain"][key] for r in rounds]
        rates = [d["events_per_s"] for d in reps]
        drains[key] = {
            "events_per_s": stats(rates),
            "share_of_copy": stats(
                [
                    round(rate / c, 3) if rate and c else None
                    for rate, c in zip(rates, copy, strict=True)
                ]
            ),
            "cpu_us_per_event": {
                name: stats([d["cpu_us_per_event"][name] for d in reps])
                for name in reps[0]["cpu_us_per_event"]
            },
            "order_violations": max(d["order_violations"] for d in reps),
            "republished": max(d["republished"] for d in reps),
        }
    cpu: dict[str, Any] = {}
    for tag in rounds[0]["standard"]:
        reps = [r["standard"][tag] for r in rounds]
        cpu[tag] = {
            "cpu_us_per_event": {
                name: stats([d["cpu_us_per_event"][name] for d in reps])
                for name in reps[0]["cpu_us_per_event"]
            },
            "ingest_per_s": stats([d["ingest_per_s"] for d in reps]),
            "e2e_per_s": stats([d["e2e_per_s"] for d in reps]),
            "lost": max(d["lost"] for d in reps),
        }
    return {
        "copy_rows_per_s": stats(copy),
        "drain": drains,
        "standard": cpu,
    }


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def spread(stat: dict[str, Any], digits: int = 0) -> str:
    if len(stat["values"]) < 2:
        return fmt(stat["median"], digits)
    return (
        f"{fmt(stat['median'], digits)} ({fmt(stat['min'], digits)}{DASH}"
        f"{fmt(stat['max'], digits)})"
    )


def render(results: dict[str, Any]) -> str:
    s = results["summary"]
    m = results["machine"]
    workers, partitions = results["workers"], results["partitions"]
    lines = [
        f"- {results['date']}; `{results['command']}`; commit "
        f"`{(results['git']['commit'] or '?')[:12]}`"
        + (" (uncommitted changes)" if results["git"]["dirty"] else ""),
        f"- {m['cores']} cores, {m['cpu_model']}; load average "
        f"{m['load_average_at_start']} at start, {m['load_average_at_end']} at end",
        f"- {results['repeat']} round(s): median (min{DASH}max); "
        f"{results['sizes']['drain_events']:,} events per drain",
        "",
        f"COPY ceiling: {spread(s['copy_rows_per_s'])} rows/s",
        "",
        "Drain, events/s (share of the COPY ceiling):",
        "",
        "| workers \\ partitions | " + " | ".join(str(p) for p in partitions) + " |",
        "| --- |" + " ---: |" * len(partitions),
    ]
    for w in workers:
        cells = []
        for p in partitions:
            d = s["drain"][f"p{p}-w{w}"]
            cells.append(
                f"{spread(d['events_per_s'])} ({fmt(d['share_of_copy']['median'], 2)})"
            )
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    lines += ["", "Drain, CPU µs per event (median): workers / PostgreSQL / Redis", ""]
    lines += [
        "| workers \\ partitions | " + " | ".join(str(p) for p in partitions) + " |",
        "| --- |" + " ---: |" * len(partitions),
    ]
    for w in workers:
        cells = []
        for p in partitions:
            c = s["drain"][f"p{p}-w{w}"]["cpu_us_per_event"]
            cells.append(
                " / ".join(
                    fmt(c[k]["median"]) for k in ("workers", "postgresql", "redis")
                )
            )
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    tags = list(s["standard"])
    names = list(s["standard"][tags[0]]["cpu_us_per_event"])
    lines += [
        "",
        f"CPU µs per event, 1 API + 1 worker, {STANDARD_PARTITIONS} partitions:",
        "",
        "| component | " + " | ".join(tags) + " |",
        "| --- |" + " ---: |" * len(tags),
    ]
    for name in names:
        cells = [spread(s["standard"][t]["cpu_us_per_event"][name]) for t in tags]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for field in ("ingest_per_s", "e2e_per_s"):
        cells = [spread(s["standard"][t][field]) for t in tags]
        lines.append(
            f"| {field.replace('_per_s', '')}, events/s | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def check(results: dict[str, Any]) -> list[str]:
    """What must hold in every round: nothing lost, nothing stored twice or out
    of order, nothing republished."""
    problems = []
    for index, rnd in enumerate(results["rounds"]):
        for key, d in rnd["drain"].items():
            for field in (
                "order_violations",
                "republished",
                "unsettled",
                "dead_lettered",
            ):
                if d[field]:
                    problems.append(f"round {index + 1} {key}: {field} = {d[field]}")
            if d["processed"] != d["events"] or d["left_in_streams"]:
                problems.append(
                    f"round {index + 1} {key}: {d['processed']} of {d['events']} "
                    f"stored, {d['left_in_streams']} left in the streams"
                )
        for tag, d in rnd["standard"].items():
            if d["lost"]:
                problems.append(f"round {index + 1} {tag}: {d['lost']} lost")
    return problems


async def run(args: argparse.Namespace) -> dict[str, Any]:
    generator = "wrk" if wrk_path() else "python"
    results: dict[str, Any] = {
        "schema": 1,
        "benchmark": "scaling",
        "command": shlex.join(sys.orig_argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "repeat": args.repeat,
        "workers": args.workers,
        "partitions": args.partitions,
        "machine": machine_info(),
        "git": git_info(),
        "software": {"python": sys.version.split()[0]},
        "generator": f"wrk ({wrk_version()})" if generator == "wrk" else "python",
        "sizes": {
            "drain_events": args.events,
            "single_s": args.single_s,
            "batch_events": args.batch_events,
            "copy_rows": args.copy_rows,
            "drain_keys": USERS,
        },
        "configuration": "EventFlow defaults (INFO logs in JSON, worker batches of "
        "500, two batches in flight per partition) except: EVENTFLOW_PARTITIONS as "
        f"listed, EVENTFLOW_LEASE_TTL_MS={LEASE_TTL_MS} (partitions settle faster "
        "between measurements), EVENTFLOW_WORKER_METRICS_PORT=0, authentication off",
        "rounds": [],
    }
    configs = [(p, w) for p in args.partitions for w in args.workers]
    with tempfile.TemporaryDirectory(prefix="eventflow-scaling-") as tmp:
        os.chmod(tmp, 0o755)  # PostgreSQL may run as another user (we are root)
        stack = ScalingStack(Path(tmp))
        engine: AsyncEngine | None = None
        try:
            log(f"starting PostgreSQL and Valkey in {tmp}")
            stack.start_servers()
            results["software"].update(await stack.versions())
            engine = engine_for(Settings(), stack.database_url, 2)
            for index in range(args.repeat):
                # Alternate: each round walks the configurations from another start.
                shift = index * len(configs) // max(1, args.repeat)
                order = configs[shift:] + configs[:shift]
                if index % 2:
                    order.reverse()
                rnd: dict[str, Any] = {"drain": {}, "order": []}
                log(f"round {index + 1}/{args.repeat}: COPY ceiling")
                copy = await copy_ceiling(stack, args.copy_rows)
                rnd["ceiling"] = {"copy_rows_per_s": copy}
                for p, w in order:
                    log(f"round {index + 1}/{args.repeat}: drain, P={p}, {w} worker(s)")
                    d = await staged_drain(
                        stack, engine, p, w, args.events, LEASE_TTL_MS, log
                    )
                    log(
                        f"  {d['events_per_s']:,.0f} events/s; CPU µs/event "
                        f"{d['cpu_us_per_event']}"
                    )
                    rnd["drain"][f"p{p}-w{w}"] = d
                    rnd["order"].append(f"p{p}-w{w}")
                log(f"round {index + 1}/{args.repeat}: CPU per event, 1 API + 1 worker")
                rnd["standard"] = await standard(
                    stack, generator, args.single_s, args.batch_events
                )
                # Keys in the same order in every round, for the summary.
                rnd["drain"] = {
                    f"p{p}-w{w}": rnd["drain"][f"p{p}-w{w}"] for p, w in configs
                }
                results["rounds"].append(rnd)
        finally:
            if engine is not None:
                await engine.dispose()
            await stack.close()
            stack.stop_servers()
    results["machine"]["load_average_at_end"] = load_average()
    results["summary"] = summarize(results["rounds"])
    results["problems"] = check(results)
    return results


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Drain throughput by workers and partitions, CPU per event, "
        "on a stack of its own (docs/scaling.md)."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round")
    parser.add_argument("--repeat", type=int, default=None, help="rounds (default 3)")
    parser.add_argument("--workers", type=int_list, default=[1, 2, 4])
    parser.add_argument("--partitions", type=int_list, default=[1, 4, 16])
    parser.add_argument("--events", type=int, default=None, help="events per drain")
    parser.add_argument("--single-s", type=float, default=None)
    parser.add_argument("--batch-events", type=int, default=None)
    parser.add_argument("--copy-rows", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="the JSON record")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "repeat": 1 if quick else 3,
        "events": 5_000 if quick else 20_000,
        "single_s": 3.0 if quick else 6.0,
        "batch_events": 5_000 if quick else 20_000,
        "copy_rows": 20_000 if quick else 100_000,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H%M%S")
    out: Path = (
        args.out or RECORDS / f"scaling-{stamp}{'-quick' if args.quick else ''}.json"
    )
    started = time.perf_counter()
    try:
        results = uvloop.run(run(args))
    except KeyboardInterrupt:
        log("interrupted; every process started was stopped, nothing recorded")
        return 130
    results["duration_s"] = round(time.perf_counter() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    print(render(results))
    for problem in results["problems"]:
        log(f"PROBLEM: {problem}")
    log(f"results in {out} ({results['duration_s']} s)")
    return 1 if results["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
