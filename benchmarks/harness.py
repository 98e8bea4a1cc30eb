"""The benchmark stack: local PostgreSQL and Valkey, EventFlow processes, load tools.

PostgreSQL and Valkey run for the whole benchmark (``eventflow.local.servers``); the API
and worker processes are started afresh for every repetition of every scenario, with
the default configuration (INFO logs in JSON), so that memory and throughput
figures start from the same state each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from redis.asyncio import Redis

from eventflow.local.servers import LocalPostgres, LocalRedis, free_port
from eventflow.procs import signal_on_parent_death
from eventflow.store.migrate import upgrade

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WRK_SCRIPT = BENCH_DIR / "wrk_single.lua"
TABLES = "raw_events, unsettled_events, processed_events, failed_events"


class BenchError(RuntimeError):
    """The benchmark could not run as intended."""


def _die_with_parent() -> None:
    """Child processes get SIGTERM when the harness dies, however it dies."""
    signal_on_parent_death(signal.SIGTERM)


def plain_pg_url(url: str) -> str:
    """asyncpg wants ``postgresql://``; EventFlow's URL names the SQLAlchemy driver."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


# --- processes -------------------------------------------------------------------


@dataclass
class Proc:
    """A child process with its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (a clean shutdown), SIGKILL after ``timeout``."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def spawn(name: str, argv: Sequence[str], env: dict[str, str], log_dir: Path) -> Proc:
    log = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            list(argv),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            preexec_fn=_die_with_parent,
        )
    return Proc(name, popen, log)


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB, from /proc; (0, 0) once it is gone."""
    values = {"VmRSS": 0, "VmHWM": 0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


# --- the stack -------------------------------------------------------------------


@dataclass
class Deployment:
    """API and worker processes started for one measurement."""

    stream: str
    apis: list[Proc] = field(default_factory=list)
    api_ports: list[int] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)

    @property
    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.api_ports]

    def processes(self) -> list[Proc]:
        return [*self.apis, *self.workers]


@dataclass
class Stack:
    """PostgreSQL and Valkey for the whole run, plus helpers to run EventFlow."""

    workdir: Path
    pg: LocalPostgres | None = None
    redis_server: LocalRedis | None = None
    database_url: str = ""
    redis_url: str = ""
    procs: list[Proc] = field(default_factory=list)
    _db: asyncpg.Connection | None = None
    _redis: Redis | None = None
    _api_key: str | None = None
    partitions: int = 8  # EVENTFLOW_PARTITIONS of the deployments (the default)

    @property
    def log_dir(self) -> Path:
        path = self.workdir / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start_servers(self) -> None:
        self.pg = LocalPostgres(self.workdir)
        self.database_url = self.pg.start()
        self.redis_server = LocalRedis(self.workdir)
        self.redis_url = self.redis_server.start()
        upgrade(self.database_url)

    async def db(self) -> asyncpg.Connection:
        if self._db is None or self._db.is_closed():
            self._db = await asyncpg.connect(plain_pg_url(self.database_url))
        return self._db

    async def redis(self) -> Redis:
        if self._redis is None:
            self._redis = Redis.from_url(self.redis_url)
        return self._redis

    async def close(self) -> None:
        for proc in self.procs:
            proc.stop(timeout=15)
        self.procs.clear()
        if self._db is not None:
            with contextlib.suppress(Exception):
                await self._db.close()
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()

    def server_pids(self) -> dict[str, list[int]]:
        """The PostgreSQL postmaster (its backends are its children) and Valkey."""
        assert self.pg is not None and self.pg.proc is not None
        assert self.redis_server is not None and self.redis_server.proc is not None
        return {
            "postgresql": [self.pg.proc.pid],
            "redis": [self.redis_server.proc.pid],
        }

    def stop_servers(self) -> None:
        for server in (self.redis_server, self.pg):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()

    # --- state between measurements ---------------------------------------------

    async def reset(self, stream: str | None = None) -> None:
        """Empty tables, delete the stream, and checkpoint so that a checkpoint
        started by earlier writes does not land in the next measurement."""
        db = await self.db()
        await db.execute(f"TRUNCATE {TABLES}")
        await db.execute("CHECKPOINT")
        if stream:
            await self.forget(stream)

    async def forget(self, stream: str) -> None:
        """Delete every key of a deployment (its partitions, leases, members)."""
        redis = await self.redis()
        async for key in redis.scan_iter(match=f"{stream}*"):
            await redis.delete(key)

    def api_key(self) -> str:
        """An ingest key (made once per stack with ``eventflow keys create``)."""
        if self._api_key is None:
            made = subprocess.run(
                [sys.executable, "-m", "eventflow", "keys", "create",
                 "--name", f"bench-{uuid.uuid4().hex[:6]}", "--scope", "ingest"],
                env={**os.environ, "DATABASE_URL": self.database_url},
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            self._api_key = made.stdout.strip().splitlines()[-1]
        return self._api_key

    def env(self, stream: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("EVENTFLOW_") and k not in ("DATABASE_URL", "REDIS_URL")
        }
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            EVENTFLOW_STREAM_NAME=stream,
            EVENTFLOW_WORKER_METRICS_PORT="0",
            EVENTFLOW_PARTITIONS=str(self.partitions),
            # The pipeline's figures; authentication's cost is measured apart.
            EVENTFLOW_AUTH_REQUIRED="false",
            PYTHONUNBUFFERED="1",
        )
        return env

    async def deploy(
        self, stream: str, apis: int, workers: int, auth: bool = False
    ) -> Deployment:
        """Start ``apis`` API processes and ``workers`` workers; wait until each API
        is ready and every worker has joined the consumer group."""
        dep = Deployment(stream)
        env = self.env(stream)
        if auth:
            env["EVENTFLOW_AUTH_REQUIRED"] = "true"
        exe = [sys.executable, "-m", "eventflow"]
        for index in range(apis):
            port = free_port()
            api = spawn(
                f"api{index}",
                [*exe, "api", "--host", "127.0.0.1", "--port", str(port)],
                env,
                self.log_dir,
            )
            self.procs.append(api)
            dep.apis.append(api)
            dep.api_ports.append(port)
        for index in range(workers):
            worker = spawn(f"worker{index}", [*exe, "worker"], env, self.log_dir)
            self.procs.append(worker)
            dep.workers.append(worker)
        for api, url in zip(dep.apis, dep.api_urls, strict=True):
            await wait_http(f"{url}/health/ready", api)
        if workers:
            await self.wait_consumers(dep, workers)
        return dep

    async def start_workers(self, dep: Deployment, count: int) -> None:
        env = self.env(dep.stream)
        for index in range(count):
            worker = spawn(
                f"worker{len(dep.workers) + index}",
                [sys.executable, "-m", "eventflow", "worker"],
                env,
                self.log_dir,
            )
            self.procs.append(worker)
            dep.workers.append(worker)

    async def wait_consumers(self, dep: Deployment, count: int) -> None:
        redis = await self.redis()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for proc in dep.workers:
                if not proc.alive():
                    raise BenchError(f"{proc.name} exited:\n{proc.tail()}")
            with contextlib.suppress(Exception):
                # Workers announce themselves; then every partition has an owner.
                members = await redis.zcard(f"{dep.stream}:workers")
                leases = [
                    k async for k in redis.scan_iter(match=f"{dep.stream}:*:lease")
                ]
                if members >= count and len(leases) >= self.partitions:
                    return
            await asyncio.sleep(0.05)
        raise BenchError(f"workers did not join the group of {dep.stream}")

    def teardown(self, dep: Deployment) -> dict[str, int | None]:
        """Stop a deployment's processes; returns their exit codes."""
        codes: dict[str, int | None] = {}
        for proc in dep.processes():
            codes[proc.name] = proc.stop()
            if proc in self.procs:
                self.procs.remove(proc)
        return codes

    # --- reading results from PostgreSQL ----------------------------------------

    async def counts(self) -> dict[str, int]:
        db = await self.db()
        row = await db.fetchrow(
            "SELECT (SELECT count(*) FROM raw_events) AS raw,"
            " (SELECT count(*) FROM processed_events) AS processed,"
            " (SELECT count(*) FROM failed_events) AS failed"
        )
        assert row is not None
        return {
            "raw": row["raw"],
            "processed": row["processed"],
            "failed": row["failed"],
        }

    async def wait_settled(
        self, limit_s: float = 60.0, expected: int | None = None
    ) -> tuple[dict[str, int], float]:
        """Wait until every event in ``raw_events`` (or ``expected`` events when
        given) is processed or dead-lettered; returns the counts and the wait."""
        start = time.monotonic()
        stable_since = start
        last_raw = -1
        while True:
            counts = await self.counts()
            done = counts["processed"] + counts["failed"]
            now = time.monotonic()
            if counts["raw"] != last_raw:
                last_raw, stable_since = counts["raw"], now
            if expected is not None and done >= expected:
                return counts, now - start
            # In-flight requests may still add rows just after the load stops.
            if expected is None and done >= counts["raw"] and now - stable_since > 0.5:
                return counts, now - start
            if now - start > limit_s:
                return counts, now - start
            await asyncio.sleep(0.1)

    async def processed_span(self) -> tuple[float | None, float | None]:
        """Epoch seconds of the first and last ``processed_at``."""
        db = await self.db()
        row = await db.fetchrow(
            "SELECT extract(epoch FROM min(processed_at))::float8 AS first,"
            " extract(epoch FROM max(processed_at))::float8 AS last"
            " FROM processed_events"
        )
        assert row is not None
        return row["first"], row["last"]

    async def versions(self) -> dict[str, str]:
        db = await self.db()
        pg = await db.fetchval("SHOW server_version")
        info = await (await self.redis()).info("server")
        valkey = info.get("valkey_version") or info.get("redis_version") or "?"
        name = "valkey" if "valkey_version" in info else "redis"
        return {"postgresql": str(pg), "redis_server": f"{name} {valkey}"}


async def wait_http(url: str, proc: Proc, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if not proc.alive():
                raise BenchError(f"{proc.name} exited:\n{proc.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    raise BenchError(f"{proc.name} not ready at {url} within {limit_s:.0f} s")


@contextlib.asynccontextmanager
async def deployment(
    stack: Stack, name: str, apis: int, workers: int, auth: bool = False
) -> AsyncIterator[Deployment]:
    """A fresh deployment on a fresh stream and empty tables; always torn down.
    With ``auth``, the APIs require keys (``stack.api_key`` is an ingest key)."""
    stream = f"bench:{name}:{uuid.uuid4().hex[:8]}"
    await stack.reset(stream)
    dep = await stack.deploy(stream, apis, workers, auth)
    try:
        yield dep
    finally:
        stack.teardown(dep)
        with contextlib.suppress(Exception):
            await stack.forget(stream)


# --- load generators -------------------------------------------------------------


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str | None:
    path = wrk_path()
    if path is None:
        return None
    out = subprocess.run([path, "-v"], capture_output=True, text=True)
    first = (out.stdout + out.stderr).splitlines()[0]
    return first.split(" Copyright")[0].strip()


@dataclass
class LoadResult:
    """What a closed-loop single-event load produced, as the generator saw it."""

    requests: int  # answers received
    ok: int  # 2xx answers
    non_2xx: int
    errors: int  # transport errors and timeouts
    duration_s: float
    latency_ms: dict[str, float]
    generator: str

    @property
    def rate(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def merge(self, other: LoadResult) -> LoadResult:
        return LoadResult(
            self.requests + other.requests,
            self.ok + other.ok,
            self.non_2xx + other.non_2xx,
            self.errors + other.errors,
            max(self.duration_s, other.duration_s),
            {},  # percentiles of two generators cannot be combined
            self.generator,
        )


async def run_wrk(
    urls: Sequence[str], connections: int, duration_s: float, key: str | None = None
) -> list[LoadResult]:
    """One wrk process per URL, concurrently, sharing ``connections`` equally."""
    wrk = wrk_path()
    assert wrk is not None
    per = max(1, connections // len(urls))
    procs = []
    for url in urls:
        prefix = uuid.uuid4().hex[:8]
        argv = [
            wrk,
            "-t1",
            f"-c{per}",
            f"-d{duration_s:g}s",
            "--timeout",
            "30s",
            "-s",
            str(WRK_SCRIPT),
            f"{url}/events",
            "--",
            prefix,
            *([key] if key else []),
        ]
        procs.append(
            await asyncio.create_subprocess_exec(
                *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                preexec_fn=_die_with_parent,
            )
        )
    results = []
    for proc in procs:
        out, err = await proc.communicate()
        results.append(_parse_wrk(out.decode(), err.decode(), proc.returncode))
    return results


def _parse_wrk(out: str, err: str, code: int | None) -> LoadResult:
    line = next((x for x in out.splitlines() if x.startswith("WRK_JSON ")), None)
    if code != 0 or line is None:
        raise BenchError(f"wrk failed ({code}):\n{out[-1500:]}\n{err[-1500:]}")
    data: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    errors = data["errors"]
    transport = errors["connect"] + errors["read"] + errors["write"]
    transport += errors["timeout"]
    lat = data["latency_us"]
    return LoadResult(
        requests=data["requests"],
        ok=data["requests"] - errors["status"],
        non_2xx=errors["status"],
        errors=transport,
        duration_s=data["duration_us"] / 1e6,
        latency_ms={k: round(v / 1000, 3) for k, v in lat.items()},
        generator="wrk",
    )


_SINGLE_TEMPLATES = (
    b'{"event_id":"%s","event_type":"purchase","user_id":"user-42",'
    b'"timestamp":"%s","properties":{"amount":12.5,"currency":"EUR",'
    b'"product_id":"sku-1","quantity":1}}',
    b'{"event_id":"%s","event_type":"page_view","user_id":"user-7",'
    b'"timestamp":"%s","properties":{"page":"/pricing","duration_ms":1200}}',
    b'{"event_id":"%s","event_type":"user_signup","user_id":"user-9",'
    b'"timestamp":"%s","properties":{"email":"user-9@example.com",'
    b'"plan":"pro","source":"ads"}}',
    b'{"event_id":"%s","event_type":"custom","user_id":"user-3",'
    b'"timestamp":"%s","properties":{"name":"video.played","value":3}}',
)


ANSWER_ERRORS = (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError)


def _request_head(host: str, port: int, key: str | None) -> bytes:
    """An HTTP/1.1 ``POST /events`` head with ``%d`` for the body's length."""
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (
        f"POST /events HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}"
        "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    ).encode()


async def _read_answer(reader: asyncio.StreamReader, limit_s: float = 30) -> bool:
    """Read one HTTP/1.1 answer (with a Content-Length); True when it is 2xx."""
    async with asyncio.timeout(limit_s):
        status_line = await reader.readuntil(b"\r\n")
        headers = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in headers.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
    return status_line[9:10] == b"2"


async def _keepalive_sender(
    host: str, port: int, stop: float, stamp: bytes, counts: dict[str, int],
    latencies: list[float], key: str | None = None,
) -> None:  # fmt: skip
    """One keep-alive connection sending requests back to back until ``stop``.
    A hand-written HTTP/1.1 exchange: far cheaper per request than an HTTP client
    library, so the generator leaves more CPU to the server."""
    reader, writer = await asyncio.open_connection(host, port)
    head = _request_head(host, port, key)
    n = 0
    try:
        while time.perf_counter() < stop:
            body = _SINGLE_TEMPLATES[n % 4] % (str(uuid.uuid4()).encode(), stamp)
            n += 1
            started = time.perf_counter()
            writer.write(head % len(body) + body)
            try:
                ok = await _read_answer(reader)
            except ANSWER_ERRORS:
                counts["errors"] += 1
                return
            latencies.append(time.perf_counter() - started)
            counts["requests"] += 1
            counts["ok" if ok else "non_2xx"] += 1
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def run_python_load(
    urls: Sequence[str], connections: int, duration_s: float, key: str | None = None
) -> list[LoadResult]:
    """The fallback when wrk is missing: ``connections`` keep-alive connections
    sending back to back (closed loop), with the same bodies as wrk_single.lua.
    It still costs more CPU per request than wrk, and shares the CPU with the
    server."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode()
    per = max(1, connections // len(urls))

    async def one_url(url: str) -> LoadResult:
        parsed = httpx.URL(url)
        host, port = parsed.host, parsed.port or 80
        counts = {"requests": 0, "ok": 0, "non_2xx": 0, "errors": 0}
        latencies: list[float] = []
        started = time.perf_counter()
        stop = started + duration_s
        await asyncio.gather(
            *(
                _keepalive_sender(host, port, stop, stamp, counts, latencies, key)
                for _ in range(per)
            )
        )
        latencies.sort()
        pct = {
            "p50": latencies[len(latencies) // 2] * 1000 if latencies else 0.0,
            "p99": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0,
        }
        return LoadResult(
            counts["requests"],
            counts["ok"],
            counts["non_2xx"],
            counts["errors"],
            time.perf_counter() - started,
            {k: round(v, 3) for k, v in pct.items()},
            "python",
        )

    return list(await asyncio.gather(*(one_url(url) for url in urls)))


async def closed_loop(
    generator: str,
    urls: Sequence[str],
    connections: int,
    duration_s: float,
    key: str | None = None,
) -> LoadResult:
    """Single-event load for ``duration_s`` with the chosen generator, merged;
    with ``key``, every request carries it as a Bearer token."""
    if generator == "wrk":
        results = await run_wrk(urls, connections, duration_s, key)
    else:
        results = await run_python_load(urls, connections, duration_s, key)
    merged = results[0]
    for other in results[1:]:
        merged = merged.merge(other)
    return merged


def percentiles_ms(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p95, p99 and max of durations in seconds, in milliseconds."""
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)
    last = len(ordered) - 1

    def at(q: float) -> float:
        return round(ordered[min(last, int(q * len(ordered)))] * 1000, 3)

    return {
        "p50_ms": at(0.50),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


REACHED_SHARE = 0.97  # an open-loop run counts when it sent at least this share


@dataclass
class OpenLoopRun:
    """What an open-loop single-event load sent, and when each request was due."""

    target_rate: float
    planned: int
    sent: int
    ok: int
    non_2xx: int
    errors: int
    achieved_rate: float  # sent / (last send - first due + one interval)
    reached: bool  # achieved_rate >= REACHED_SHARE x target_rate
    lag_ms: dict[str, float | None]  # actual send - due time
    answer_ms: dict[str, float | None]  # answer - due time
    connections: int
    due: dict[str, float] = field(repr=False)  # event id -> due time, epoch s

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "due"}


async def open_loop(
    url: str,
    rate: float,
    events: int,
    connections: int = 128,
    key: str | None = None,
    on_start: Callable[[], None] | None = None,
) -> OpenLoopRun:
    """Single events on a fixed timetable: request ``i`` is due ``i / rate`` s after
    the start, whatever the answers (open loop). ``connections`` keep-alive
    connections (opened before the clock) take the due requests in turn; when all
    are busy a request waits, and its lateness counts in its latency, which is
    taken from the due time. Hand-written HTTP/1.1 on uvloop, bodies made before
    the clock: a few tens of µs of CPU per request, so the generator keeps up
    where an HTTP client library falls behind and measures itself. Whether it did
    keep up is in ``reached``. ``on_start`` is called when everything is ready,
    just before the first request is due (to start a CPU meter)."""
    parsed = httpx.URL(url)
    host, port = parsed.host, parsed.port or 80
    head = _request_head(host, port, key)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode()
    ids = [str(uuid.uuid4()) for _ in range(events)]
    requests = [
        head % len(body) + body
        for body in (
            _SINGLE_TEMPLATES[i % 4] % (event_id.encode(), stamp)
            for i, event_id in enumerate(ids)
        )
    ]
    due_at = [0.0] * events
    sent_at = [0.0] * events
    answered_at = [0.0] * events
    status = [0] * events  # 1 ok, 2 non-2xx, 3 error
    queue: asyncio.Queue[int] = asyncio.Queue()
    opened = [await asyncio.open_connection(host, port) for _ in range(connections)]

    async def connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        broken = False
        while (index := await queue.get()) >= 0:
            if broken:
                status[index] = 3
                continue
            sent_at[index] = time.perf_counter()
            writer.write(requests[index])
            try:
                ok = await _read_answer(reader)
            except ANSWER_ERRORS:
                status[index], broken = 3, True
                continue
            answered_at[index] = time.perf_counter()
            status[index] = 1 if ok else 2
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    if on_start is not None:
        on_start()
    senders = [asyncio.create_task(connection(r, w)) for r, w in opened]
    interval = 1.0 / rate
    wall0, perf0 = time.time(), time.perf_counter()
    start = perf0 + 0.05
    index = 0
    while index < events:
        now = time.perf_counter()
        # Everything due by now goes out; then sleep until the next is due.
        while index < events and start + index * interval <= now:
            due_at[index] = start + index * interval
            queue.put_nowait(index)
            index += 1
        if index < events:
            await asyncio.sleep(max(0.0, start + index * interval - now))
    for _ in senders:
        queue.put_nowait(-1)
    await asyncio.gather(*senders)
    done = [i for i in range(events) if sent_at[i]]
    window = (max(sent_at[i] for i in done) - start + interval) if done else 0.0
    achieved = len(done) / window if window > 0 else 0.0
    return OpenLoopRun(
        target_rate=rate,
        planned=events,
        sent=len(done),
        ok=status.count(1),
        non_2xx=status.count(2),
        errors=status.count(3),
        achieved_rate=round(achieved, 1),
        reached=len(done) == events and achieved >= REACHED_SHARE * rate,
        lag_ms=percentiles_ms([sent_at[i] - due_at[i] for i in done]),
        answer_ms=percentiles_ms(
            [answered_at[i] - due_at[i] for i in done if answered_at[i]]
        ),
        connections=connections,
        due={ids[i]: wall0 + due_at[i] - perf0 for i in done},
    )


@dataclass
class BatchRun:
    accepted: int
    rejected: int
    failed_requests: int
    started: float  # epoch seconds
    duration_s: float  # first send to last answer


async def send_batches(
    url: str,
    bodies: Iterable[tuple[int, bytes]],
    connections: int,
    progress: list[int] | None = None,
) -> BatchRun:
    """POST pre-serialized batch bodies over ``connections`` keep-alive
    connections as fast as the API answers. ``bodies`` yields (events, body);
    ``progress[0]`` counts accepted events as they come back."""
    iterator = iter(bodies)
    accepted = rejected = failed = 0
    async with httpx.AsyncClient(
        base_url=url,
        limits=httpx.Limits(
            max_connections=connections, max_keepalive_connections=connections
        ),
        timeout=httpx.Timeout(120.0, connect=5.0),
        headers={"content-type": "application/json"},
    ) as client:

        async def sender() -> None:
            nonlocal accepted, rejected, failed
            for _count, body in iterator:
                try:
                    response = await client.post("/events/batch", content=body)
                except httpx.HTTPError:
                    failed += 1
                    continue
                if response.status_code != 200:
                    failed += 1
                    continue
                answer = orjson.loads(response.content)
                accepted += answer["accepted"] + answer["duplicates"]
                rejected += answer["rejected"]
                if progress is not None:
                    progress[0] += answer["accepted"]

        wall = time.time()
        start = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(connections)))
        duration = time.perf_counter() - start
    return BatchRun(accepted, rejected, failed, wall, duration)


async def run_command(argv: Sequence[str], env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=_die_with_parent,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
