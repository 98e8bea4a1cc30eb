"""The ``eventflow`` command: parses arguments and calls library functions."""

from __future__ import annotations

import argparse
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    logs.configure(settings.log_level, settings.log_format, f"eventflow-{args.command}")
    if args.command == "api":
        from eventflow.runner import serve_api

        serve_api(
            settings, args.host or settings.api_host, args.port or settings.api_port
        )
        return 0
    if args.command == "worker":
        import uvloop

        from eventflow.runner import run_worker

        return uvloop.run(run_worker(settings, until_empty=args.until_empty))
    if args.command == "migrate":
        from eventflow.migrate import render_sql, upgrade

        if args.sql:
            sys.stdout.write(render_sql())
            return 0
        database_url, _ = (
            settings.require_urls()
            if settings.redis_url
            else (
                settings.database_url or "",
                "",
            )
        )
        if not database_url:
            print("DATABASE_URL is not set", file=sys.stderr)
            return 2
        upgrade(database_url)
        return 0
    if args.command == "dev":
        from eventflow.runner import run_dev

        return run_dev(settings, args.workers, args.host, args.port)
    raise AssertionError(args.command)


if __name__ == "__main__":
    raise SystemExit(main())
