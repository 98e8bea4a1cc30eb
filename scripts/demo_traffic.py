#!/usr/bin/env python3
"""A varied eight-minute run of a local EventFlow, recorded by Prometheus.

Starts PostgreSQL and Valkey (on free ports, as ``eventflow dev`` does),
``eventflow dev`` on them (the API and workers) and a Prometheus that scrapes it
every 5 s with the project's alert rules, then drives it with the project's own
tools: a ramp (100/s, then 400/s), short batch bursts, invalid entries written
straight to the stream and bad requests (dead letters, 4xx), a worker killed with
``kill -9`` mid-burst and replaced (its entries are reclaimed), PostgreSQL stopped
for 6 s (503s, retries), and a quiet period. At the end it draws the dashboard
from that Prometheus with ``scripts/render_dashboard.py`` (numbered markers for
each phase) and stops everything. About nine minutes in all.

    .venv/bin/python scripts/demo_traffic.py --out docs/dashboard.png

Needs ``prometheus`` on PATH (Debian package ``prometheus``), the PostgreSQL server
binaries (as ``eventflow dev`` does) and matplotlib. ``eventflow dev`` stops
everything when one of its children exits, so the worker that gets killed is
started by this script next to the ones ``eventflow dev`` runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx
import redis

from eventflow.local.servers import LocalPostgres, LocalRedis

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
RENDER = ROOT / "scripts" / "render_dashboard.py"
STREAM = os.environ.get("EVENTFLOW_STREAM_NAME", "eventflow:events")
GROUP = os.environ.get("EVENTFLOW_CONSUMER_GROUP", "eventflow-workers")
EVENTFLOW = [sys.executable, "-m", "eventflow"]
# Timeline, in seconds from the start of the traffic.
QUIET_START = 390.0
END = 480.0


def log(message: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} {message}", flush=True)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def first_free_port(preferred: int) -> int:
    for port in range(preferred, preferred + 100):
        if port_free(port):
            return port
    raise SystemExit(f"no free port from {preferred}")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90) -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            result = check()
            if result:
                return result
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def metrics_ports(log_file: Path) -> list[int]:
    """Ports announced by the ``worker metrics`` log lines of a log file."""
    ports: list[int] = []
    for line in log_file.read_text(errors="replace").splitlines():
        if "worker metrics" not in line:
            continue
        with contextlib.suppress(ValueError, AttributeError):
            record = json.loads(line[line.index("{") :])
            if record.get("port"):
                ports.append(int(record["port"]))
    return ports


def bad_entries() -> list[dict[str, str]]:
    """Stream entries no worker can store: undecodable ones, and well-formed
    messages breaking their event type's rules (each with a new event id)."""
    now = datetime.now(UTC).isoformat()
    entries: list[dict[str, str]] = [
        {"e": "this is not JSON"},
        {"e": '{"id": "not-a-uuid", "type": "purchase"}'},
        {"e": "[1, 2, 3]"},
        {"payload": "no EventFlow field at all"},
    ]
    for event_type, props in (
        ("refund", {"amount": 10}),
        ("purchase", {"amount": -3, "currency": "EUR"}),
        ("page_view", {}),
        ("custom", {"colour": "blue"}),
    ):
        message = {
            "id": str(uuid.uuid4()),
            "type": event_type,
            "user": "user-13",
            "ts": now,
            "recv": now,
            "props": props,
        }
        entries.append({"e": json.dumps(message)})
    return entries


@dataclass
class Demo:
    args: argparse.Namespace
    run_dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    files: list[IO[bytes]] = field(default_factory=list)
    dev: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None  # the one started apart
    postgres: LocalPostgres | None = None
    valkey: LocalRedis | None = None
    prometheus: subprocess.Popen[bytes] | None = None
    prometheus_url: str = ""
    database_url: str = ""
    redis_url: str = ""
    worker_targets: dict[str, int] = field(default_factory=dict)
    markers: list[tuple[float, str]] = field(default_factory=list)
    t0: float = 0.0

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.args.port}"

    # --- processes ----------------------------------------------------------------

    def spawn(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        out = (self.run_dir / f"{name}.log").open("ab")
        self.files.append(out)
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def start_servers(self) -> None:
        """PostgreSQL and Valkey on free ports, the way ``eventflow dev`` starts
        them. Not on its usual ports (54329, 63799): any other EventFlow process
        pointed at those (another ``eventflow dev``, strays left by one) would
        join this run's consumer group, and the metrics of workers Prometheus
        does not scrape would be missing from the picture."""
        self.postgres = LocalPostgres(self.args.data_dir, port=0)
        self.database_url = self.postgres.start()
        self.valkey = LocalRedis(self.args.data_dir, port=0)
        self.redis_url = self.valkey.start()
        log(f"PostgreSQL {self.database_url}, Redis {self.redis_url}")

    def start_dev(self) -> None:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            EVENTFLOW_DATA_DIR=str(self.args.data_dir),
            EVENTFLOW_WORKER_METRICS_PORT=str(self.args.metrics_port),
            EVENTFLOW_LOG_FORMAT="json",
            EVENTFLOW_AUTH_REQUIRED="false",
        )
        dev_workers = self.args.workers - 1
        log(f"starting eventflow dev (API on {self.args.port}, {dev_workers} worker)")
        argv = [*EVENTFLOW, "dev", "--port", str(self.args.port)]
        self.dev = self.spawn("dev", [*argv, "--workers", str(dev_workers)], env)
        dev_log = self.run_dir / "dev.log"

        def api_ready() -> bool:
            if self.dev is not None and self.dev.poll() is not None:
                raise SystemExit(f"eventflow dev exited; see {dev_log}")
            return httpx.get(f"{self.api}/health/ready", timeout=2).is_success

        wait_for("the API", api_ready)
        ports = wait_for(
            "the worker metrics ports",
            lambda: (
                len(metrics_ports(dev_log)) >= dev_workers and metrics_ports(dev_log)
            ),
        )
        for i, port in enumerate(ports):
            self.worker_targets[f"dev-{i}"] = port
        log(f"dev worker metrics on {ports}")

    def start_worker(self, consumer: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            EVENTFLOW_CONSUMER_NAME=consumer,
            EVENTFLOW_WORKER_METRICS_PORT=str(self.args.metrics_port),
            EVENTFLOW_LOG_FORMAT="json",
        )
        proc = self.worker = self.spawn(consumer, [*EVENTFLOW, "worker"], env)
        worker_log = self.run_dir / f"{consumer}.log"
        (port,) = wait_for(f"worker {consumer}", lambda: metrics_ports(worker_log))
        self.worker_targets[consumer] = port
        self.write_targets()
        log(f"worker {consumer} (pid {proc.pid}) serves metrics on {port}")
        return proc

    def write_targets(self) -> None:
        """Prometheus file service discovery: the workers alive right now."""
        groups = [
            {"targets": [f"127.0.0.1:{port}"], "labels": {"worker": name}}
            for name, port in sorted(self.worker_targets.items())
        ]
        path = self.run_dir / "workers.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups, indent=2))
        tmp.replace(path)

    def start_prometheus(self) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise SystemExit(
                "prometheus not found (Debian: apt-get install prometheus)"
            )
        port = first_free_port(self.args.prometheus_port)
        self.prometheus_url = f"http://127.0.0.1:{port}"
        self.write_targets()
        config = self.run_dir / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 5s\n"
            "  scrape_timeout: 4s\n"
            "  evaluation_interval: 5s\n"
            "  external_labels:\n"
            "    system: eventflow-demo\n"
            f"rule_files:\n  - {ALERTS}\n"
            "scrape_configs:\n"
            "  - job_name: eventflow-api\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{self.args.port}']\n"
            "  - job_name: eventflow-worker\n"
            "    file_sd_configs:\n"
            f"      - files: ['{self.run_dir / 'workers.json'}']\n"
            "        refresh_interval: 5s\n"
        )
        log(f"starting Prometheus on {self.prometheus_url}")
        self.prometheus = self.spawn(
            "prometheus",
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.run_dir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1d",
            ],
        )
        wait_for(
            "Prometheus",
            lambda: httpx.get(f"{self.prometheus_url}/-/ready", timeout=2).is_success,
        )

    def targets_up(self) -> bool:
        body = httpx.get(f"{self.prometheus_url}/api/v1/targets", timeout=5).json()
        active = body["data"]["activeTargets"]
        want = 1 + len(self.worker_targets)
        return len(active) == want and all(t["health"] == "up" for t in active)

    def tool(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        return self.spawn(f"tool-{name}", [*EVENTFLOW, *argv, "--url", self.api])

    def load_test(self, name: str, events: int, rate: int) -> None:
        """Open-loop load, ingestion only (followed by Prometheus instead)."""
        self.tool(
            name, "load-test", "--events", str(events), "--rate", str(rate),
            "--no-follow",
        )  # fmt: skip

    def stop(self) -> None:
        if self.dev is not None and self.dev.poll() is None:
            log("stopping eventflow dev (SIGINT)")
            self.dev.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.dev.wait(60)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(40)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for server in (self.valkey, self.postgres):
            if server is not None:
                server.stop()
        for f in self.files:
            f.close()

    # --- the timeline ------------------------------------------------------------

    def at(self, seconds: float, marker: str = "") -> None:
        """Wait until ``seconds`` after the start of the traffic, checking that
        the stack is still up (a picture of a dead stack is of no use)."""
        while (delay := self.t0 + seconds - time.time()) > 0:
            self.check_alive()
            time.sleep(min(delay, 0.5))
        self.check_alive()
        if marker:
            self.mark(marker)

    def check_alive(self) -> None:
        for name, proc in (("eventflow dev", self.dev), ("worker", self.worker)):
            if proc is not None and proc.poll() is not None:
                raise SystemExit(
                    f"{name} (pid {proc.pid}) exited with {proc.returncode}; "
                    f"see the logs in {self.run_dir}"
                )

    def mark(self, label: str) -> None:
        self.markers.append((time.time(), label))
        log(f"-- {label}")

    def bad_input(self) -> None:
        """Entries no worker can store, written straight to the stream, and
        requests the API refuses or recognises."""
        r = redis.Redis.from_url(self.redis_url, decode_responses=True)
        with httpx.Client(base_url=self.api, timeout=10) as client:
            for i, entry in enumerate(bad_entries() + bad_entries()):
                r.xadd(STREAM, entry)  # type: ignore[arg-type]
                body: dict[str, Any] = {
                    "event_type": "purchase",
                    "user_id": f"user-{i}",
                    "properties": {"amount": 20 + i, "currency": "EUR"},
                }
                client.post("/events", json={**body, "properties": {"amount": -1}})
                client.post("/events", json={"event_type": "page_view"})
                body["event_id"] = str(uuid.uuid4())
                client.post("/events", json=body)
                client.post("/events", json=body)  # duplicate
                client.post("/events", json={**body, "user_id": "someone-else"})
                time.sleep(1.5)
        r.close()

    def kill_a_worker(
        self, victim: subprocess.Popen[bytes], consumer: str
    ) -> tuple[float, int]:
        """``kill -9`` the worker in the middle of a batch burst, as soon as Redis
        shows it holding delivered, unacknowledged entries; returns when, and how
        many entries it left pending."""
        r = redis.Redis.from_url(self.redis_url, decode_responses=True)

        def pending() -> int:
            for info in r.xinfo_consumers(STREAM, GROUP):
                if info["name"] == consumer:
                    return int(info["pending"])
            return 0

        burst = self.tool(
            "burst-kill", "produce", "--count", "4000", "--batch", "100",
            "--concurrency", "4", "--no-progress",
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while pending() < 50 and burst.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        self.worker = None
        victim.kill()
        when = time.time()
        victim.wait()
        left = pending()  # a dead consumer's entries stay pending until reclaimed
        r.close()
        log(f"killed worker {consumer}: {left} entries pending")
        self.worker_targets.pop(consumer, None)
        self.write_targets()
        return when, left

    def restart_postgres(self, down_s: float) -> None:
        assert self.postgres is not None
        self.postgres.stop()
        time.sleep(down_s)
        self.postgres.start()
        log("PostgreSQL is back")

    def run(self) -> None:
        self.start_servers()
        self.start_dev()
        victim = self.start_worker("demo-worker-a")
        self.start_prometheus()
        wait_for("every target up", self.targets_up, timeout=60)
        self.t0 = time.time() + 5
        log("traffic starts; the whole run takes about 8 minutes")

        self.at(30, "100/s")
        self.load_test("ramp-100", events=9000, rate=100)
        self.at(120, "400/s")
        self.load_test("ramp-400", events=24000, rate=400)
        self.at(180)
        self.load_test("trickle", events=int((QUIET_START - 180) * 50), rate=50)
        self.at(185, "3 bursts of 8,000 (batches of 100), +50/s")
        for n, start in enumerate((185, 200, 215)):
            self.at(start)
            self.tool(
                f"burst-{n}", "produce", "--count", "8000", "--batch", "100",
                "--concurrency", "4", "--no-progress",
            )  # fmt: skip
        self.at(240, "16 bad stream entries, 4xx requests")
        self.bad_input()
        self.at(280, "200/s, +50/s")
        self.load_test("steady-200", events=21000, rate=200)
        self.at(300)
        when, left = self.kill_a_worker(victim, "demo-worker-a")
        time.sleep(5)
        self.start_worker("demo-worker-b")
        label = f"kill -9 of a worker holding {left} entries, replaced 5 s later"
        self.markers.append((when, label))
        self.at(345, "PostgreSQL down for 6 s")
        self.restart_postgres(6)
        self.at(QUIET_START, "quiet")
        self.at(END)

    def render(self) -> int:
        end = time.time()
        start = self.t0 - 20
        markers = [
            f"{when:.0f}={label}" for when, label in self.markers if when >= start
        ]
        note = (
            "Run: scripts/demo_traffic.py, eventflow dev (API, "
            f"{self.args.workers} workers, local PostgreSQL and Valkey) on "
            f"{os.cpu_count()} shared cores, scraped every 5 s"
        )
        argv = [
            sys.executable,
            str(RENDER),
            "--prometheus",
            self.prometheus_url,
            "--minutes",
            f"{(end - start) / 60:.2f}",
            "--end",
            f"{end:.0f}",
            "--step",
            "5",
            "--note",
            note,
            "--out",
            str(self.args.out),
        ]
        for marker in markers:
            argv += ["--annotate", marker]
        log("rendering " + str(self.args.out))
        return subprocess.call(argv)


def interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="An eight-minute demo run, rendered.")
    p.add_argument("--port", type=int, default=8020, help="API port")
    p.add_argument("--workers", type=int, default=2, help="workers in all (>= 2)")
    p.add_argument("--data-dir", type=Path, default=Path("/tmp/ef-demo"))
    p.add_argument("--prometheus-port", type=int, default=9090)
    p.add_argument("--metrics-port", type=int, default=9300, help="first worker port")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    p.add_argument("--no-render", action="store_true")
    p.add_argument(
        "--keep", action="store_true", help="keep the data and logs afterwards"
    )
    args = p.parse_args(argv)
    if args.workers < 2:
        p.error("--workers must be at least 2 (one of them gets killed)")
    if args.data_dir.exists():
        p.error(f"{args.data_dir} exists: remove it or choose another --data-dir")
    if not port_free(args.port):
        p.error(f"port {args.port} is taken")
    # Started in the background, SIGINT may be ignored: stop cleanly on either.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupted)
    run_dir = Path(tempfile.mkdtemp(prefix="ef-demo-run-"))
    demo = Demo(args, run_dir)
    log(f"logs and Prometheus data in {run_dir}")
    code = 0
    try:
        demo.run()
        if not args.no_render:
            code = demo.render()
    finally:
        demo.stop()
        if args.keep:
            log(f"kept {run_dir} and {args.data_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.rmtree(args.data_dir, ignore_errors=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
