"""``eventflow retention``: the time partitions of the event tables (on the
database, ``DATABASE_URL``)."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from eventflow.config import Settings
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


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run(args, settings, Console()))
