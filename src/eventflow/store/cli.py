"""``eventflow retention`` (the time partitions of the event tables) and
``eventflow reprocess`` (run stored events through processing again): straight on
the database (``DATABASE_URL``)."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from eventflow.pipeline import reprocess as rp
from eventflow.security import audit
from eventflow.store import lifecycle
from eventflow.store.tables import engine_for


def add_parsers(sub: Any) -> None:
    retention = sub.add_parser(
        "retention", help="time partitions of the event tables, and their retention"
    )
    actions = retention.add_subparsers(dest="action", required=True)
    show = actions.add_parser("status", help="partitions, span and size per table")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    actions.add_parser(
        "run", help="create partitions ahead and drop those past retention, now"
    )

    again = sub.add_parser(
        "reprocess",
        help="run the stored events of a time range through processing again",
    )
    again.add_argument("--from", dest="from_", type=_time, help="ISO 8601, inclusive")
    again.add_argument("--to", type=_time, help="ISO 8601, exclusive")
    again.add_argument("--type", dest="event_type", default=None)
    again.add_argument("--dry-run", action="store_true", help="count, change nothing")
    again.add_argument("--rate", type=float, default=None, help="events/s at most")
    again.add_argument(
        "--no-wait", action="store_true", help="start the run and return its id"
    )
    again.add_argument(
        "--follow", type=int, default=None, metavar="ID", help="follow a run"
    )


def _time(value: str) -> datetime:
    """ISO 8601; a date or a time without an offset is UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError


def _day(value: datetime | None) -> str:
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


async def _run(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    if not settings.database_dsn:
        raise SystemExit("DATABASE_URL is not set")
    engine = engine_for(settings, settings.database_dsn, pool_size=1)
    try:
        if args.command == "reprocess":
            return await _reprocess(args, engine, out)
        if args.action == "run":
            report = await lifecycle.maintain(engine, settings)
            for table in lifecycle.TABLES:
                dropped = report.dropped.get(table, [])
                names = f": {', '.join(dropped)}" if dropped else ""
                out.print(
                    f"{table}: {report.created[table]} partitions created, "
                    f"{len(dropped)} dropped{names}"
                )
            return 0
        tables = await lifecycle.status(engine, settings)
        if args.json:
            print(json.dumps([t.model_dump(mode="json") for t in tables], indent=2))
            return 0
        grid = Table("table", "partitions", "from", "to", "size", "retention")
        for t in tables:
            grid.add_row(
                t.table,
                str(t.partitions),
                _day(t.oldest),
                _day(t.newest),
                _size(t.bytes),
                f"{t.retention_days} days" if t.retention_days else "kept for ever",
            )
        out.print(grid)
        return 0
    finally:
        await engine.dispose()


async def _reprocess(
    args: argparse.Namespace, engine: AsyncEngine, out: Console
) -> int:
    if args.follow is not None:
        run_id = args.follow
    elif args.from_ is None or args.to is None:
        out.print("[red]--from and --to are required (or --follow ID)[/red]")
        return 2
    else:
        try:
            request = rp.ReprocessIn.model_validate(
                {
                    "from": args.from_,
                    "to": args.to,
                    "event_type": args.event_type,
                    "dry_run": args.dry_run,
                    "rate_limit": args.rate,
                }
            )
        except ValidationError as exc:
            out.print(f"[red]{exc.errors()[0]['msg']}[/red]")
            return 2
        started = await rp.create_run(engine, request, "cli")
        await audit.record(
            engine, "cli", "reprocess.start", target=f"reprocess run {started.id}"
        )
        run_id = started.id
        out.print(
            f"reprocess run {run_id}: {started.total} events"
            f"{' (dry run)' if request.dry_run else ''}"
        )
        if args.no_wait:
            print(run_id)
            return 0
    # Executed by the worker that owns stream partition 0; Ctrl-C stops following,
    # not the run.
    with Progress(console=out, transient=False) as bar:
        task = bar.add_task(f"run {run_id}", total=None)
        while True:
            run = await rp.get_run(engine, run_id)
            if run is None:
                out.print(f"[red]no reprocess run {run_id}[/red]")
                return 2
            bar.update(task, total=run.total or None, completed=run.done)
            if run.state in (rp.RunState.done, rp.RunState.cancelled):
                break
            await asyncio.sleep(0.5)
    out.print(
        f"run {run.id} {run.state}: {run.done} events, {run.changed} changed, "
        f"{run.failed} refused by their schema"
        + (f" (first: {run.last_error})" if run.last_error else "")
    )
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run(args, settings, Console()))
