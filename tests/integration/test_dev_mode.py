"""`eventflow dev` (what `make run` starts): real servers, API and worker as child
processes, a processed event, a clean stop, and no orphan after a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from eventflow.local.servers import free_port


def _pids(log: Path) -> list[int]:
    """The servers' pids, from the pidfiles in the folders `eventflow dev` names
    (PostgreSQL's folder moves when the project folder is closed to its user)."""
    pids = []
    for line in log.read_text().splitlines():
        if "(data in " in line:
            folder = Path(line.split("(data in ", 1)[1].rstrip(")"))
            for name in ("postgres/postmaster.pid", "server.pid"):
                if (folder / name).exists():
                    pids.append(int((folder / name).read_text().split()[0]))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def _wait_dead(pids: list[int], limit_s: float = 30) -> list[int]:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _start(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("EVENTFLOW_")
    }
    env["EVENTFLOW_DATA_DIR"] = str(data)
    env["EVENTFLOW_WORKER_METRICS_PORT"] = "0"
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "eventflow", "dev", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, "eventflow dev exited during start-up"
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail("eventflow dev did not become healthy")


@pytest.mark.timeout(240)
def test_dev_mode_runs_processes_and_stops_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "dev.log"
    proc = _start(data, port, log)
    try:
        _wait_ready(url, proc)
        event_id = str(uuid.uuid4())
        answer = httpx.post(
            url + "/events",
            json={
                "event_id": event_id,
                "event_type": "purchase",
                "user_id": "u1",
                "properties": {"amount": 12.5},
            },
        )
        assert answer.status_code == 202
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/events/{event_id}").json()["status"] != "processed":
            assert time.monotonic() < deadline, "the event was not processed"
            time.sleep(0.1)
        console = httpx.get(f"{url}/console")
        assert console.status_code == 200 and "local mode" in console.text
        servers = _pids(log)
        assert len(servers) == 2, log.read_text()
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(60) == 0
        output = log.read_text()
        assert "EventFlow is running" in output and "EventFlow stopped." in output
        # The operator console's address is printed, and it opens without a key.
        assert f"Console      http://localhost:{port}/console" in output
        assert _wait_dead(servers) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # Data is kept between runs: the event is still there after a restart.
    log = tmp_path / "dev-again.log"
    proc = _start(data, port, log)
    try:
        _wait_ready(url, proc)
        assert httpx.get(f"{url}/events/{event_id}").json()["status"] == "processed"
        servers = _pids(log)
        assert len(servers) == 2
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text()
        servers += [int(pid) for pid in children.split()]  # API and worker too
        # A crash of the supervisor takes its servers down with it.
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _wait_dead(servers) == [], "orphan servers after a crash"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
