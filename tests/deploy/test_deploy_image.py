"""Dockerfile lint and the container health probe (deploy/healthcheck.py)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"


def tool(name: str) -> str:
    """A dev tool from the running virtual environment, else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found; install the dev dependencies (.[dev])")
    return found


def load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("eventflow_healthcheck", HEALTHCHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hadolint_is_clean() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_dockerfile_essentials() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) >= 2, "expected a multi-stage build"
    assert all(line.split()[1] == "python:3.11-slim" for line in stages)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK ") for line in lines)
    assert 'ENTRYPOINT ["eventflow"]' in lines
    assert 'CMD ["api", "--host", "0.0.0.0", "--port", "8000"]' in lines


def test_dockerignore_keeps_the_build_inputs() -> None:
    patterns = (ROOT / ".dockerignore").read_text().splitlines()
    for needed in ("!pyproject.toml", "!README.md", "!src", "!deploy/healthcheck.py"):
        assert needed in patterns


def test_probe_targets() -> None:
    hc = load_healthcheck()
    api = ["api", "--host", "0.0.0.0", "--port", "8000"]
    assert hc.probe_url(api, {}) == "http://127.0.0.1:8000/health/live"
    assert (
        hc.probe_url(["api", "--port=8080"], {}) == "http://127.0.0.1:8080/health/live"
    )
    assert (
        hc.probe_url(["api"], {"EVENTFLOW_API_PORT": "9000"})
        == "http://127.0.0.1:9000/health/live"
    )
    assert hc.probe_url(["worker"], {}) == "http://127.0.0.1:9100/metrics"
    assert (
        hc.probe_url(["worker"], {"EVENTFLOW_WORKER_METRICS_PORT": "9200"})
        == "http://127.0.0.1:9200/metrics"
    )
    assert hc.probe_url(["worker"], {"EVENTFLOW_WORKER_METRICS_PORT": "0"}) is None
    assert hc.probe_url(["migrate"], {}) is None


def test_finds_the_eventflow_process() -> None:
    hc = load_healthcheck()
    argvs = [
        ["/usr/local/bin/python", "/opt/eventflow/healthcheck.py"],
        ["/opt/venv/bin/python", "/opt/venv/bin/eventflow", "worker"],
    ]
    assert hc.eventflow_args(argvs) == ["worker"]
    assert hc.eventflow_args([["sleep", "1"]]) is None


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health/live" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def local_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_check_reports_http_status() -> None:
    hc = load_healthcheck()
    with local_server() as port:
        assert hc.check(f"http://127.0.0.1:{port}/health/live")
        assert not hc.check(f"http://127.0.0.1:{port}/other")
    assert not hc.check(f"http://127.0.0.1:{port}/health/live", timeout=1.0)


def test_worker_liveness_reads_the_loop_heartbeat() -> None:
    probe = load_healthcheck()
    text = (
        "# HELP eventflow_worker_heartbeat_timestamp_seconds loop\n"
        "eventflow_worker_heartbeat_timestamp_seconds 1000.5\n"
    )
    assert probe.heartbeat_age(text, 1030.5) == 30.0
    assert probe.heartbeat_age("other_metric 1\n", 1030.5) is None
