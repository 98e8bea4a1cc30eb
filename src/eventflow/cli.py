"""The ``eventflow`` command: parses arguments and calls library functions."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from eventflow import logs
from eventflow.config import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventflow", description="Durable event ingestion and processing."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    api = sub.add_parser("api", help="run the HTTP API")
    api.add_argument("--host", default=None, help="default: EVENTFLOW_API_HOST")
    api.add_argument(
        "--port", type=int, default=None, help="default: EVENTFLOW_API_PORT"
    )

    worker = sub.add_parser("worker", help="run one worker process")
    worker.add_argument(
        "--until-empty",
        action="store_true",
        help="exit once the stream is drained and nothing is pending",
    )

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument(
        "--sql", action="store_true", help="print the schema as SQL instead"
    )

    dev = sub.add_parser(
        "dev", help="run everything locally (starts PostgreSQL and Redis if needed)"
    )
    dev.add_argument("--workers", type=int, default=1)
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument(
        "--cluster",
        action="store_true",
        help="start a local Redis Cluster (3 masters with a replica each) instead "
        "of a single Redis",
    )
    _tool_parsers(sub)
    _schema_parsers(sub)
    from eventflow.tools import dlq as dlqcli

    dlqcli.add_parser(sub)
    from eventflow.tools import export as exportcli

    exportcli.add_parser(sub)
    from eventflow.security import cli as security_cli

    security_cli.add_parsers(sub)
    from eventflow.store import cli as store_cli

    store_cli.add_parsers(sub)
    return parser


def _tool_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    produce = sub.add_parser("produce", help="send realistic events to the API")
    produce.add_argument("--count", type=int, default=10, help="events to send")
    produce.add_argument("--rate", type=float, default=0.0, help="events/s (0: max)")
    produce.add_argument(
        "--type",
        dest="kind",
        choices=["purchase", "user_signup", "page_view", "custom"],
        help="only this event type (default: a random mix)",
    )
    produce.add_argument("--batch", type=int, default=1, help="events per request")
    produce.add_argument("--concurrency", type=int, default=8)
    produce.add_argument("--retries", type=int, default=3, help="for 429/5xx/errors")
    produce.add_argument("--json", dest="as_json", action="store_true")
    produce.add_argument("--no-progress", dest="progress", action="store_false")

    load = sub.add_parser("load-test", help="open-loop load test, end to end")
    load.add_argument("--events", type=int, default=1000, help="events to send")
    load.add_argument(
        "--rate", type=float, default=100.0, help="events/s (0: closed loop)"
    )
    load.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    load.add_argument("--batch", type=int, default=1, help="events per request")
    load.add_argument("--json", dest="as_json", action="store_true")
    load.add_argument(
        "--database-url",
        default=None,
        help="follow events in PostgreSQL (default: DATABASE_URL; '' = via the API)",
    )
    load.add_argument(
        "--timeout", type=float, default=30.0, help="end-to-end wait in seconds"
    )
    load.add_argument("--no-follow", dest="follow", action="store_false")

    monitor = sub.add_parser("monitor", help="live view of /metrics/summary")
    monitor.add_argument("--interval", type=float, default=1.0, help="seconds")
    monitor.add_argument("--once", action="store_true", help="one snapshot and exit")
    monitor.add_argument("--json", dest="as_json", action="store_true")
    for tool in (produce, load, monitor):
        _url_argument(tool)


def _url_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        "--api-url",
        dest="url",
        default="http://localhost:8000",
        help="EventFlow API base URL (default: http://localhost:8000)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("EVENTFLOW_API_KEY") or None,
        help="API key (default: EVENTFLOW_API_KEY); sent as a Bearer token",
    )


def _schema_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    schemas = sub.add_parser("schemas", help="list, show, check and push event schemas")
    actions = schemas.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("list", help="registered event types")
    show = actions.add_parser("show", help="one type's schema (latest or --version)")
    show.add_argument("event_type")
    show.add_argument("--version", type=int, default=None)
    push = actions.add_parser("push", help="register FILE as the next version")
    check = actions.add_parser(
        "check", help="would FILE be accepted as the next version, and why not"
    )
    for p in (push, check):
        p.add_argument("event_type")
        p.add_argument("file", help="a JSON Schema (draft 2020-12) file; - for stdin")
        p.add_argument(
            "--compatibility",
            choices=["backward", "none"],
            default="backward",
            help="none: register even if not backward compatible",
        )
    for p in (ls, show, push, check):
        _url_argument(p)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("produce", "load-test", "monitor"):
        from eventflow.tools import run_tool

        return run_tool(args.command, vars(args))
    if args.command == "schemas":
        from eventflow.tools import schemas

        return schemas.run(args)
    if args.command == "export":  # before logs.configure: stdout may be the data
        from eventflow.tools import export as exportcli

        return exportcli.run(args)
    settings = Settings()
    logs.configure(settings.log_level, settings.log_format, f"eventflow-{args.command}")
    if args.command == "api":
        from eventflow.runner import serve_api

        return serve_api(
            settings, args.host or settings.api_host, args.port or settings.api_port
        )
    if args.command == "worker":
        import uvloop

        from eventflow.runner import run_worker

        return uvloop.run(run_worker(settings, until_empty=args.until_empty))
    if args.command == "migrate":
        from eventflow.store.migrate import render_sql, upgrade

        if args.sql:
            sys.stdout.write(render_sql())
            return 0
        if not settings.database_dsn:
            print("DATABASE_URL is not set", file=sys.stderr)
            return 2
        upgrade(settings.database_dsn)
        return 0
    if args.command == "dev":
        from eventflow.runner import run_dev

        return run_dev(settings, args.workers, args.host, args.port, args.cluster)
    if args.command == "dlq":
        from eventflow.tools import dlq as dlqcli

        return dlqcli.run(args, settings)
    if args.command in ("keys", "audit"):
        from eventflow.security import cli as security_cli

        return security_cli.run(args, settings)
    if args.command in ("retention", "reprocess"):
        from eventflow.store import cli as store_cli

        return store_cli.run(args, settings)
    raise AssertionError(args.command)


if __name__ == "__main__":
    raise SystemExit(main())
