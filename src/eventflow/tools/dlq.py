"""``eventflow dlq``: the dead-letter operations from a terminal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from datetime import datetime
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from eventflow.config import Settings
from eventflow.pipeline.streams import Streams
from eventflow.redisconn import connect_redis
from eventflow.store import deadletters as dl
from eventflow.store.tables import engine_for


def add_parser(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="list, show, replay and purge dead letters")
    actions = dlq.add_subparsers(dest="action", required=True)

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--type", dest="event_type", help="event type")
        p.add_argument("--error-type", help="exact error class, e.g. InvalidEvent")
        p.add_argument("--error", help="substring of the error message")
        p.add_argument("--since", type=datetime.fromisoformat, help="ISO time")
        p.add_argument("--until", type=datetime.fromisoformat, help="ISO time")

    ls = actions.add_parser("list", help="list dead letters, oldest first")
    filters(ls)
    ls.add_argument("--include-replayed", action="store_true")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--after-id", type=int)
    ls.add_argument("--json", action="store_true", help="machine-readable output")

    show = actions.add_parser("show", help="one dead letter with its payload")
    show.add_argument("id", type=int)

    rp = actions.add_parser("replay", help="replay by id, or every match of filters")
    rp.add_argument("ids", type=int, nargs="*", help="dead letter ids")
    filters(rp)
    rp.add_argument("--all", action="store_true", help="replay all that match")
    rp.add_argument("--dry-run", action="store_true", help="only count")

    qr = actions.add_parser(
        "quarantine", help="entries whose dead letter could not be stored"
    )
    qr.add_argument("--limit", type=int, default=50)
    qr.add_argument("--json", action="store_true", help="machine-readable output")

    pg = actions.add_parser("purge", help="delete dead letters for good")
    pg.add_argument("ids", type=int, nargs="*", help="dead letter ids")
    filters(pg)
    pg.add_argument("--all", action="store_true", help="purge all that match")
    pg.add_argument("--dry-run", action="store_true", help="only count")


def _filter(
    args: argparse.Namespace, include_replayed: bool = False
) -> dl.DeadLetterFilter:
    return dl.DeadLetterFilter(
        event_type=args.event_type,
        error_type=args.error_type,
        error=args.error,
        since=args.since,
        until=args.until,
        include_replayed=include_replayed,
    )


def _has_filter(args: argparse.Namespace) -> bool:
    return any(
        getattr(args, k)
        for k in ("event_type", "error_type", "error", "since", "until")
    )


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    database_url, redis_url = settings.require_urls()
    engine = engine_for(settings, database_url, pool_size=2)
    redis = await connect_redis(settings, redis_url, settings.redis_socket_timeout_s)
    console = Console()
    try:
        if args.action == "list":
            page = await dl.list_dead_letters(
                engine,
                _filter(args, args.include_replayed),
                args.limit,
                args.after_id,
            )
            if args.json:
                sys.stdout.write(page.model_dump_json(indent=2) + "\n")
                return 0
            table = Table(title=f"Dead letters ({page.total} matching)")
            for col in ("id", "event_id", "type", "error type", "error", "failed at"):
                table.add_column(col)
            for d in page.items:
                table.add_row(
                    str(d.id),
                    str(d.event_id),
                    d.event_type or "-",
                    d.error_type,
                    d.error[:60],
                    d.failed_at.isoformat(timespec="seconds"),
                )
            console.print(table)
            if page.next_after_id:
                console.print(f"more: --after-id {page.next_after_id}")
            return 0
        if args.action == "show":
            found = await dl.get_dead_letter(engine, args.id)
            if found is None:
                console.print(f"dead letter {args.id} not found", style="red")
                return 1
            data = found.model_dump(mode="json")
            if found.payload:
                with contextlib.suppress(orjson.JSONDecodeError):
                    data["payload"] = orjson.loads(found.payload)
            sys.stdout.write(
                orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"
            )
            return 0
        if args.action == "quarantine":
            streams = Streams.from_settings(redis, settings)
            entries = await streams.quarantined(args.limit)
            if args.json:
                sys.stdout.write(orjson.dumps(entries).decode() + "\n")
                return 0
            table = Table(title=f"Quarantined entries (newest {len(entries)})")
            for col in ("quarantined", "stream entry", "error", "payload"):
                table.add_column(col)
            for e in entries:
                table.add_row(
                    e["id"], e.get("entry", ""), e.get("error", "")[:80],
                    e.get("payload", "")[:60],
                )  # fmt: skip
            console.print(table)
            return 0
        if not args.ids and not (args.all or _has_filter(args)):
            console.print("give dead letter ids, filters, or --all", style="red")
            return 2
        ids = list(args.ids) or None
        if args.action == "replay":
            streams = Streams.from_settings(redis, settings)
            result = await dl.replay(
                engine, streams, f=_filter(args), ids=ids, dry_run=args.dry_run
            )
            if args.dry_run:
                done, verb = result.matched - len(result.skipped), "would replay"
            else:
                done, verb = result.replayed, "replayed"
            console.print(f"{verb} {done} of {result.matched} matching")
            for skipped in result.skipped:
                console.print(f"  skipped {skipped['id']}: {skipped['reason']}")
            return 0
        if args.action == "purge":
            count = await dl.purge(
                engine,
                _filter(args, include_replayed=True),
                ids=ids,
                dry_run=args.dry_run,
            )
            console.print(f"{'would purge' if args.dry_run else 'purged'} {count}")
            return 0
        raise AssertionError(args.action)
    finally:
        await redis.aclose()
        await engine.dispose()


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run(args, settings))
