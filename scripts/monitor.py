#!/usr/bin/env python3
"""Live view of a running EventFlow's /metrics/summary.

The same as `eventflow monitor` from a checkout; works without installing the
package (its dependencies are still needed). Usage: python scripts/monitor.py --help
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import eventflow.cli
except ImportError:  # not installed: use the source tree next to this script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    import eventflow.cli

if __name__ == "__main__":
    raise SystemExit(eventflow.cli.main(["monitor", *sys.argv[1:]]))
