"""Client-side tools: an event producer, an open-loop load test and a monitor.

They talk to a running EventFlow over HTTP (and, for the load test, optionally read
PostgreSQL to follow events to the end). The ``eventflow`` command parses their
arguments; each module exposes an options model and a ``run`` function.
"""

from __future__ import annotations

import sys
from typing import Any

from pydantic import ValidationError


def run_tool(command: str, options: dict[str, Any]) -> int:
    """Run ``produce``, ``load-test`` or ``monitor`` with parsed CLI options."""
    try:
        if command == "produce":
            from eventflow.tools import producer

            return producer.run(producer.ProduceOptions.model_validate(options))
        if command == "load-test":
            from eventflow.tools import loadtest

            return loadtest.run(loadtest.LoadTestOptions.model_validate(options))
        if command == "monitor":
            from eventflow.tools import monitor

            return monitor.run(monitor.MonitorOptions.model_validate(options))
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            name = "--" + "-".join(str(p) for p in error["loc"]).replace("_", "-")
            print(f"eventflow {command}: {name}: {error['msg']}", file=sys.stderr)
        return 2
    raise ValueError(f"unknown tool {command!r}")
