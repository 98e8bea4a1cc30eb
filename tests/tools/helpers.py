"""Helpers for the tools' tests: running a tool as a user would."""

from __future__ import annotations

import asyncio
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Tool:
    returncode: int
    stdout: str
    stderr: str


async def run_tool(*args: str, limit_s: float = 60.0) -> Tool:
    """Run a tool the way a user would: ``python scripts/<tool>.py ...`` or
    ``python -m eventflow <command> ...``."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), limit_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Tool(process.returncode, out.decode(), err.decode())


@dataclass
class Live:
    url: str
    database_url: str
    engine: AsyncEngine
