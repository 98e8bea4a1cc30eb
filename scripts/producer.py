#!/usr/bin/env python3
"""Send realistic events to a running EventFlow.

The same as `eventflow produce` from a checkout; works without installing the
package (it falls back to the project's .venv). Usage: python scripts/producer.py --help
"""

from __future__ import annotations

import sys

from _bootstrap import run

if __name__ == "__main__":
    raise SystemExit(run("produce", sys.argv[1:]))
