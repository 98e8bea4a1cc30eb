#!/usr/bin/env python3
"""Open-loop load test of a running EventFlow, followed end to end.

The same as `eventflow load-test` from a checkout; works without installing the
package (it falls back to the project's .venv).
Usage: python scripts/load_test.py --help
"""

from __future__ import annotations

import sys

from _bootstrap import run

if __name__ == "__main__":
    raise SystemExit(run("load-test", sys.argv[1:]))
