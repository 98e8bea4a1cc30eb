"""``eventflow keys`` and ``eventflow audit``: straight on the database, so that the
first admin key can be made before any key exists (uses ``DATABASE_URL``)."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from eventflow.config import Settings
from eventflow.security import audit
from eventflow.security.keys import KeyExists, Scope, create_key, list_keys, revoke_key
from eventflow.store.tables import engine_for

CLI_ACTOR = "cli"


def rate(text: str) -> float:
    """``100/s`` or ``100``: requests per second."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:/s)?\s*", text)
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError("expected a positive rate such as 100/s")
    return float(match.group(1))


def add_parsers(sub: Any) -> None:
    keys = sub.add_parser("keys", help="create, list and revoke API keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a key; prints it once")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", required=True, choices=[s.value for s in Scope])
    create.add_argument("--rate-limit", type=rate, default=None, help="e.g. 100/s")
    actions.add_parser("list", help="every key (never the secret)")
    revoke = actions.add_parser("revoke", help="revoke a key by name or id")
    revoke.add_argument("key", metavar="NAME|ID")

    log = sub.add_parser("audit", help="the record of admin actions")
    log.add_argument("--limit", type=int, default=50)
    log.add_argument("--json", action="store_true", help="machine-readable output")


def _database(settings: Settings) -> str:
    if not settings.database_dsn:
        raise SystemExit("DATABASE_URL is not set")
    return settings.database_dsn


async def _keys(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    database_url = _database(settings)
    engine = engine_for(settings, database_url, pool_size=1)
    try:
        if args.action == "create":
            try:
                key, secret = await create_key(
                    engine, args.name, Scope(args.scope), args.rate_limit
                )
            except KeyExists as exc:
                out.print(str(exc), style="red")
                return 1
            await audit.record(
                engine, CLI_ACTOR, "key.create", target=f"key {key.name}", rows=1,
                details={"scope": key.scope.value, "rate_limit": key.rate_limit},
            )  # fmt: skip
            out.print(
                f"Created key {key.name!r} (id {key.id}, scope {key.scope}"
                + (f", {key.rate_limit:g}/s" if key.rate_limit else "")
                + "). It is shown once; store it now:"
            )
            sys.stdout.flush()
            print(secret, flush=True)  # alone on the last line
            return 0
        if args.action == "list":
            table = Table(
                "id", "name", "prefix", "scope", "rate limit", "created", "state"
            )
            for k in await list_keys(engine):
                table.add_row(
                    str(k.id), k.name, k.prefix, k.scope.value,
                    f"{k.rate_limit:g}/s" if k.rate_limit else "-",
                    k.created_at.isoformat(timespec="seconds"),
                    "revoked" if k.revoked_at else "active",
                )  # fmt: skip
            out.print(table)
            return 0
        revoked = await revoke_key(engine, args.key)
        if revoked is None:
            out.print(f"no active key {args.key!r}", style="red")
            return 1
        await audit.record(
            engine, CLI_ACTOR, "key.revoke", target=f"key {revoked.name}", rows=1
        )
        out.print(f"Revoked key {revoked.name!r} (id {revoked.id})")
        return 0
    finally:
        await engine.dispose()


async def _audit(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    database_url = _database(settings)
    engine = engine_for(settings, database_url, pool_size=1)
    try:
        page = await audit.list_entries(engine, args.limit)
    finally:
        await engine.dispose()
    if args.json:
        sys.stdout.write(page.model_dump_json(indent=2) + "\n")
        return 0
    table = Table("id", "at", "actor", "action", "target", "rows")
    for e in page.items:
        table.add_row(
            str(e.id), e.at.isoformat(timespec="seconds"), e.actor, e.action,
            e.target or "-", "-" if e.rows is None else str(e.rows),
        )  # fmt: skip
    out.print(table)
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    out = Console()
    if args.command == "keys":
        return asyncio.run(_keys(args, settings, out))
    return asyncio.run(_audit(args, settings, out))
