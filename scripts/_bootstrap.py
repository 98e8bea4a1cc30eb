"""Lets the scripts in this folder run from a checkout with any Python 3.11+.

``import eventflow.cli`` is tried as is; if EventFlow (or one of its dependencies)
is not importable, the script re-runs itself with the project's virtual
environment (``.venv``, made by ``make run`` or ``make test``) when there is one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(command: str, argv: Sequence[str]) -> int:
    try:
        import eventflow.cli
    except ImportError:
        venv_python = ROOT / ".venv" / "bin" / "python"
        if venv_python.exists() and Path(sys.executable) != venv_python:
            os.execv(venv_python, [str(venv_python), sys.argv[0], *argv])
        sys.path.insert(0, str(ROOT / "src"))
        try:
            import eventflow.cli
        except ImportError as exc:
            print(
                f"EventFlow's dependencies are missing ({exc}); run `make run` or "
                "`pip install -e .` first",
                file=sys.stderr,
            )
            return 2
    return eventflow.cli.main([command, *argv])
