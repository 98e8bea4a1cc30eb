"""Container health probe for the EventFlow image (standard library only).

The image runs either ``eventflow api`` or ``eventflow worker``. The probe finds
the running ``eventflow`` process, reads its subcommand and checks:

* ``api``: ``GET /health/live`` on the API port (``--port``, else
  ``EVENTFLOW_API_PORT``, else 8000);
* ``worker``: ``GET /metrics`` on ``EVENTFLOW_WORKER_METRICS_PORT`` (default 9100);
* anything else (``migrate``, one-off commands): healthy, nothing to probe.

Exit status 0 means healthy, 1 unhealthy, as Docker's HEALTHCHECK expects.
"""

from __future__ import annotations

import os
import sys
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


def check(url: str, timeout: float = TIMEOUT_S) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main() -> int:
    url = probe_url(eventflow_args(_process_argvs()), os.environ)
    if url is None:
        return 0
    healthy = check(url)
    if not healthy:
        print(f"unhealthy: {url}", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
