"""``eventflow schemas``: the schema registry from a terminal, over the HTTP API."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from eventflow.tools.sending import key_headers

TIMEOUT_S = 10.0


def _read_schema(name: str) -> Any:
    text = sys.stdin.read() if name == "-" else Path(name).read_text()
    return json.loads(text)


async def _call(
    method: str, url: str, body: Any | None = None, api_key: str | None = None
) -> tuple[int, Any]:
    headers = key_headers(api_key)
    async with httpx.AsyncClient(timeout=TIMEOUT_S, headers=headers) as client:
        response = await client.request(method, url, json=body)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, {"detail": response.text}


def _detail(answer: Any) -> str:
    detail = answer.get("detail", answer) if isinstance(answer, dict) else answer
    if isinstance(detail, list):
        return "; ".join(str(d.get("msg", d)) for d in detail)
    return str(detail)


def _print_check(out: Console, answer: dict[str, Any], pushed: bool) -> None:
    name = answer["event_type"]
    if answer.get("unchanged"):
        out.print(f"{name}: identical to version {answer['latest_version']}")
    elif answer["compatible"]:
        verb = "registered as" if pushed else "would be"
        out.print(f"{name}: compatible; {verb} version {answer['next_version']}")
    else:
        forced = answer["compatibility"] == "none"
        out.print(
            f"{name}: NOT backward compatible with version "
            f"{answer['latest_version']}"
            + (" (accepted anyway: --compatibility none)" if forced else "")
        )
        for reason in answer["incompatibilities"]:
            out.print(f"  - {reason}", markup=False)


async def _run(args: argparse.Namespace, out: Console, err: Console) -> int:
    base = f"{args.url.rstrip('/')}/schemas"
    key: str | None = args.api_key
    if args.action == "list":
        status, answer = await _call("GET", base, api_key=key)
        if status != 200:
            err.print(f"error {status}: {_detail(answer)}", markup=False)
            return 1
        table = Table("event type", "latest version", "versions", "updated")
        for row in answer:
            table.add_row(
                row["event_type"],
                str(row["latest_version"]),
                str(row["versions"]),
                row["updated_at"],
            )
        out.print(table)
        return 0
    if args.action == "show":
        version = args.version or "latest"
        status, answer = await _call(
            "GET", f"{base}/{args.event_type}/{version}", api_key=key
        )
        if status != 200:
            err.print(f"error {status}: {_detail(answer)}", markup=False)
            return 1
        out.print(json.dumps(answer, indent=2), markup=False, highlight=False)
        return 0
    try:
        schema = _read_schema(args.file)
    except (OSError, ValueError) as exc:
        err.print(f"cannot read {args.file}: {exc}", markup=False)
        return 2
    body = {"schema": schema, "compatibility": args.compatibility}
    if args.action == "check":
        status, answer = await _call(
            "POST", f"{base}/{args.event_type}/check", body, key
        )
        if status != 200:
            err.print(f"error {status}: {_detail(answer)}", markup=False)
            return 2
        _print_check(out, answer, pushed=False)
        return 0 if answer["compatible"] or args.compatibility == "none" else 1
    status, answer = await _call("POST", f"{base}/{args.event_type}", body, key)
    if status in (200, 201):
        verb = "registered" if status == 201 else "unchanged:"
        out.print(f"{answer['event_type']}: {verb} version {answer['version']}")
        return 0
    if status == 409:
        _print_check(out, answer, pushed=True)
        return 1
    err.print(f"error {status}: {_detail(answer)}", markup=False)
    return 2


def run(args: argparse.Namespace) -> int:
    """Exit codes: 0 done (or compatible), 1 refused as incompatible or not found,
    2 bad input or an unreachable API."""
    out, err = Console(), Console(stderr=True)
    try:
        return asyncio.run(_run(args, out, err))
    except httpx.TransportError as exc:
        err.print(f"cannot reach {args.url}: {exc}", markup=False)
        return 2
