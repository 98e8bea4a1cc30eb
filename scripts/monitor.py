#!/usr/bin/env python3
"""Live view of a running EventFlow's /metrics/summary.

The same as `eventflow monitor` from a checkout; works without installing the
package (it falls back to the project's .venv). Usage: python scripts/monitor.py --help
"""

from __future__ import annotations

import sys

from _bootstrap import run

if __name__ == "__main__":
    raise SystemExit(run("monitor", sys.argv[1:]))
