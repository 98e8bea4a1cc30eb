"""Container health probe for the EventFlow image (standard library only).

The image runs either ``eventflow api`` or ``eventflow worker``. The probe finds
the running ``eventflow`` process, reads its subcommand and checks:

* ``api``: ``GET /health/live`` on the API port (``--port``, else
  ``EVENTFLOW_API_PORT``, else 8000);
* ``worker``: ``GET /metrics`` on ``EVENTFLOW_WORKER_METRICS_PORT`` (default 9100),
  and its consumer loop's heartbeat no older than ``EVENTFLOW_WORKER_LIVENESS_S``
  (default 60 s);
* anything else (``migrate``, one-off commands): healthy, nothing to probe.

Exit status 0 means healthy, 1 unhealthy, as Docker's HEALTHCHECK expects.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

TIMEOUT_S = 3.0
DEFAULT_API_PORT = 8000
DEFAULT_WORKER_METRICS_PORT = 9100


def _process_argvs(proc: Path = Path("/proc")) -> Iterable[list[str]]:
    """The argument vectors of the processes visible in this container."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if raw:
            yield [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def eventflow_args(argvs: Iterable[Sequence[str]]) -> list[str] | None:
    """Arguments after the ``eventflow`` program in the first process running it."""
    for argv in argvs:
        for index, part in enumerate(argv):
            if Path(part).name == "eventflow":
                return list(argv[index + 1 :])
    return None


def _option(args: Sequence[str], name: str) -> str | None:
    for index, part in enumerate(args):
        if part == name and index + 1 < len(args):
            return args[index + 1]
        if part.startswith(name + "="):
            return part.split("=", 1)[1]
    return None


def probe_url(args: Sequence[str] | None, env: Mapping[str, str]) -> str | None:
    """The URL to probe for the given ``eventflow`` arguments, or None for none."""
    command = args[0] if args else "api"
    if command == "api":
        port = _option(args or [], "--port") or env.get("EVENTFLOW_API_PORT")
        return f"http://127.0.0.1:{port or DEFAULT_API_PORT}/health/live"
    if command == "worker":
        metrics_port = int(
            env.get("EVENTFLOW_WORKER_METRICS_PORT", DEFAULT_WORKER_METRICS_PORT)
        )
        if metrics_port == 0:
            return None
        return f"http://127.0.0.1:{metrics_port}/metrics"
    return None


HEARTBEAT = "eventflow_worker_heartbeat_timestamp_seconds"
DEFAULT_LIVENESS_S = 60.0


def heartbeat_age(metrics_text: str, now: float) -> float | None:
    """Seconds since the worker's consumer loop last went round, from its
    Prometheus metrics; None when the heartbeat is missing."""
    for line in metrics_text.splitlines():
        if line.startswith(HEARTBEAT + " "):
            return now - float(line.split()[1])
    return None


def check(url: str, timeout: float = TIMEOUT_S, max_age_s: float | None = None) -> bool:
    """The URL answers 2xx; with ``max_age_s``, its heartbeat is that fresh too
    (a worker whose loop is stuck or dead is not alive, even if its metrics
    thread answers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if not 200 <= int(response.status) < 300:
                return False
            if max_age_s is None:
                return True
            age = heartbeat_age(response.read().decode(), time.time())
            return age is not None and age <= max_age_s
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main() -> int:
    args = eventflow_args(_process_argvs())
    url = probe_url(args, os.environ)
    if url is None:
        return 0
    is_worker = bool(args) and args[0] == "worker"
    max_age = (
        float(os.environ.get("EVENTFLOW_WORKER_LIVENESS_S", DEFAULT_LIVENESS_S))
        if is_worker
        else None
    )
    healthy = check(url, max_age_s=max_age)
    if not healthy:
        print(f"unhealthy: {url}", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
