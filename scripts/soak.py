#!/usr/bin/env python3
"""Soak test: mixed traffic and repeated faults on a stack of its own, then an audit.

    .venv/bin/python scripts/soak.py                        # 10 minutes, 2 workers
    .venv/bin/python scripts/soak.py --seconds 90 --json
    .venv/bin/python scripts/soak.py --minutes 4 --record   # also fills docs/soak.md

Exits 0 only when every check passes; docs/soak.md says what each one means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import create_async_engine

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from harness import Proc, Stack, memory_kib, plain_pg_url, spawn, wait_http  # noqa: E402

DOCS = REPO / "docs" / "soak.md"
MARKS = ("<!-- soak:start -->", "<!-- soak:end -->")
GROUP = "eventflow-workers"
SAMPLE_S = 5.0
RECOVERY_LIMIT_S = 180.0
SETTLE_LIMIT_S = 300.0
UNAVAILABLE = (0, 429, 503)  # 0: no answer (transport error or timeout)
# As the fault tests: reclaims and republishing happen within the run.
SETTINGS = {
    "EVENTFLOW_CLAIM_IDLE_MS": "1500",
    "EVENTFLOW_LEASE_TTL_MS": "1500",
    "EVENTFLOW_RECONCILE_INTERVAL_S": "0.5",
    "EVENTFLOW_RECONCILE_MIN_AGE_S": "1",
    "EVENTFLOW_WORKER_METRICS_PORT": "0",
    "EVENTFLOW_SHUTDOWN_TIMEOUT_S": "10",
    "EVENTFLOW_LOG_LEVEL": "WARNING",
    "EVENTFLOW_LOG_FORMAT": "json",
    "PYTHONUNBUFFERED": "1",
}


class SoakError(RuntimeError):
    """The soak could not run as intended (not a failed check)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(message: str) -> None:
    print(f"[soak] {message}", file=sys.stderr, flush=True)


# --- the report ------------------------------------------------------------------


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Fault:
    kind: str
    at_s: float  # since the traffic started
    outage_s: float
    recovery_s: float | None  # None: not recovered within RECOVERY_LIMIT_S
    detail: str


@dataclass
class Memory:
    process: str
    samples: int
    start_mib: float
    end_mib: float
    middle_mib: float  # median of the middle third of the samples
    last_mib: float  # median of the last third
    flat: bool | None  # None: fewer than 6 samples, not judged


@dataclass
class Report:
    date: str
    command: str
    duration_s: float
    workers: int
    machine: dict[str, Any]
    settle_s: float
    counts: dict[str, int]
    faults: list[Fault]
    memory: list[Memory]
    log_errors: dict[str, int]
    checks: list[Check]
    version: str = ""  # the commit under test

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


def judge_memory(name: str, kib: list[int]) -> Memory:
    """Flat: the last third's median at most 25 % and 30 MiB above the middle's."""
    third = len(kib) // 3
    middle = statistics.median(kib[third : 2 * third] or kib)
    last = statistics.median(kib[len(kib) - third :] if third else kib)
    flat = None if len(kib) < 6 else last - middle <= min(0.25 * middle, 30 * 1024)
    start, end, middle, last = (
        round(x / 1024, 1) for x in (kib[0], kib[-1], middle, last)
    )
    return Memory(name, len(kib), start, end, middle, last, flat)


# --- what was sent and what the API answered -------------------------------------


@dataclass
class Ledger:
    accepted: set[str] = field(default_factory=set)  # confirmed event ids
    uncertain: set[str] = field(default_factory=set)  # sent, never confirmed
    invalid: set[str] = field(default_factory=set)  # ids of invalid events
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=5000))
    retry: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=5000))
    poison: dict[str, str | None] = field(default_factory=dict)  # token -> entry
    counts: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)

    def valid(self, event: dict[str, Any], answer: str, sent_as: str) -> None:
        """Book the answer to a valid event sent ``new``, as a ``retry`` (after
        503/429/no answer) or as a ``resend`` of an accepted event."""
        eid = event["event_id"]
        self.counts[f"sent_{sent_as}"] += 1
        if answer in ("accepted", "duplicate"):
            expected = {"new": "accepted", "resend": "duplicate"}.get(sent_as, answer)
            if answer != expected:
                self.unexpected[f"{sent_as} event answered {answer}"] += 1
            self.counts[answer] += 1
            if eid not in self.accepted:
                self.counts["retried_then_accepted"] += sent_as == "retry"
                self.accepted.add(eid)
                self.recent.append(event)
            self.uncertain.discard(eid)
            return
        if answer == "unavailable":
            self.counts["not_accepted"] += 1
        else:
            self.unexpected[f"{sent_as} event answered {answer}"] += 1
        if eid not in self.accepted:
            self.uncertain.add(eid)
            if answer == "unavailable":
                self.retry.append(event)

    def refused(self, eid: str, answer: str) -> None:
        self.counts["invalid_sent"] += 1
        self.invalid.add(eid)
        if answer in ("refused", "unavailable"):
            self.counts[f"invalid_{answer}"] += 1
        else:
            self.unexpected[f"invalid event answered {answer}"] += 1


def valid_event(rng: random.Random) -> dict[str, Any]:
    properties: dict[str, dict[str, Any]] = {
        "purchase": {"amount": round(rng.uniform(0.5, 900), 2), "currency": "EUR"},
        "user_signup": {"plan": rng.choice(("free", "pro"))},
        "page_view": {"url": f"/x/{rng.randrange(1000)}"},
        "custom": {"name": "soak", "n": rng.randrange(10**6), "tags": ["a", "b"]},
    }
    kind = rng.choice(list(properties))
    props = properties[kind]
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": kind,
        "user_id": f"user-{rng.randrange(10_000)}",
        "properties": props,
    }
    if rng.random() < 0.5:
        event["timestamp"] = datetime.now(UTC).isoformat()
    return event


def invalid_event(rng: random.Random) -> dict[str, Any]:
    eid = str(uuid.uuid4())
    return rng.choice(
        (
            {"event_id": eid, "event_type": "purchase", "properties": {"amount": -1}},
            {"event_id": eid, "event_type": "purchase", "properties": {"amount": "9"}},
            {"event_id": eid, "event_type": "no_such_type", "properties": {}},
            {"event_id": eid, "event_type": "user_signup", "properties": {}},
        )
    )


def fault_plan(duration: float) -> list[tuple[float, str]]:
    """One round of each fault per two minutes (at least one), within 10-90 %."""
    rounds = max(1, int(duration // 120))
    window = 0.8 * duration / rounds
    return [
        (0.1 * duration + (n + offset) * window, kind)
        for n in range(rounds)
        for offset, kind in ((0.1, "worker"), (0.4, "redis"), (0.7, "postgres"))
    ]


async def ingest_key(database_url: str) -> str | None:
    """An ingest API key for the traffic."""
    from eventflow.security.keys import Scope, create_key

    engine = create_async_engine(database_url)
    try:
        _, key = await create_key(engine, f"soak-{uuid.uuid4().hex[:6]}", Scope.ingest)
    finally:
        await engine.dispose()
    return str(key)


# --- the run ---------------------------------------------------------------------


class Soak:
    """One run: the stack, the traffic, the faults, and the audit at the end."""

    api: Proc
    redis: Redis

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.duration: float = args.seconds or args.minutes * 60
        self.stack = Stack(workdir)
        self.stream = f"soak:{uuid.uuid4().hex[:8]}"
        self.rng = random.Random(args.seed)
        self.ledger = Ledger()
        self.stopping = asyncio.Event()
        self.procs: list[Proc] = []  # every process started, for the clean-up
        self.workers: list[Proc] = []  # the current ones
        self.memory: dict[str, list[int]] = {}
        self.faults: list[Fault] = []
        self.env: dict[str, str] = {}
        self.port = free_port()
        self.client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"content-type": "application/json"},
            timeout=httpx.Timeout(30.0, connect=5.0),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        )
        self.started = 0.0

    # --- helpers ------------------------------------------------------------------

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 1)

    async def pause(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), seconds)

    async def until(self, done: Callable[[], Awaitable[bool]], begin: float) -> bool:
        """Poll ``done`` until it is true, or RECOVERY_LIMIT_S after ``begin``."""
        while not await done():
            if time.monotonic() - begin > RECOVERY_LIMIT_S:
                return False
            await asyncio.sleep(0.2)
        return True

    async def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Run ``sql`` on a connection of its own: PostgreSQL may have restarted."""
        url = plain_pg_url(self.stack.database_url)
        conn = await asyncpg.connect(url, timeout=30)
        try:
            return list(await conn.fetch(sql, *args, timeout=120))
        finally:
            await conn.close()

    async def consumers(self) -> dict[str, int]:
        """Consumer name -> entries pending under it."""
        with contextlib.suppress(RedisError, OSError):
            found = await self.redis.xinfo_consumers(self.stream, GROUP)
            return {c["name"].decode(): int(c["pending"]) for c in found}
        return {}

    async def stream_state(self) -> dict[str, int]:
        groups = await self.redis.xinfo_groups(self.stream)
        group = next(g for g in groups if g["name"].decode() == GROUP)
        after = "(" + group["last-delivered-id"].decode()
        undelivered = (
            await self.redis.xrange(self.stream, min=after, count=10_000) or []
        )
        pending, length = group["pending"], await self.redis.xlen(self.stream)
        return {"pending": pending, "undelivered": len(undelivered), "length": length}

    def start_process(self, name: str, *argv: str) -> Proc:
        command = [sys.executable, "-m", "eventflow", *argv]
        proc = spawn(name, command, self.env, self.stack.log_dir)
        self.procs.append(proc)
        return proc

    def start_worker(self) -> Proc:
        worker = self.start_process(f"worker{len(self.procs)}", "worker")
        self.workers.append(worker)
        return worker

    # --- traffic ------------------------------------------------------------------

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        """(status, decoded answer); status 0 when no answer came."""
        self.ledger.counts["requests"] += 1
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        try:
            response = await self.client.post(path, content=content)
        except httpx.HTTPError:
            return 0, None
        try:
            return response.status_code, orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return response.status_code, None

    async def send(self, event: dict[str, Any], sent_as: str) -> None:
        code, body = await self.post("/events", event)
        status = body.get("status") if isinstance(body, dict) else None
        if code in UNAVAILABLE:
            answer = "unavailable"
        elif (code, status) in ((202, "accepted"), (200, "duplicate")):
            answer = str(status)
        else:
            answer = f"HTTP {code} {status or ''}".strip()
        self.ledger.valid(event, answer, sent_as)

    async def single(self) -> None:
        await self.send(valid_event(self.rng), "new")

    async def resend(self) -> None:
        if self.ledger.recent:
            await self.send(self.rng.choice(self.ledger.recent), "resend")

    async def retry(self) -> None:
        if self.ledger.retry:
            await self.send(self.ledger.retry.popleft(), "retry")

    async def invalid(self) -> None:
        body: Any = invalid_event(self.rng)
        eid = body["event_id"]
        if self.rng.random() < 0.2:
            body = b'{"event_id": "%s", "event_type": "custom", "properties": {' % (
                eid.encode()
            )
        code, _ = await self.post("/events", body)
        answer = "refused" if 400 <= code < 500 else f"HTTP {code}"
        self.ledger.refused(eid, "unavailable" if code in UNAVAILABLE else answer)

    async def batch(self) -> None:
        rng, ledger = self.rng, self.ledger
        items = [(valid_event(rng), "new") for _ in range(rng.randint(10, 100))]
        if ledger.recent:
            resends = rng.randint(0, 3)
            items += [(rng.choice(ledger.recent), "resend") for _ in range(resends)]
        items += [(invalid_event(rng), "invalid") for _ in range(rng.choice((0, 1, 2)))]
        rng.shuffle(items)
        code, body = await self.post("/events/batch", {"events": [e for e, _ in items]})
        results = (
            body.get("results") if code == 200 and isinstance(body, dict) else None
        )
        if not isinstance(results, list) or len(results) != len(items):
            status = "unavailable" if code in UNAVAILABLE else f"batch HTTP {code}"
            results = [{"status": status}] * len(items)
        for (event, sent_as), result in zip(items, results, strict=True):
            status = str(result.get("status"))
            if sent_as == "invalid":
                whole = 400 <= code < 500 and code != 429  # the request was refused
                answer = "refused" if status == "invalid" or whole else status
                ledger.refused(event["event_id"], answer)
            else:
                ledger.valid(event, status, sent_as)

    async def poison(self) -> None:
        """An entry written past the API, tagged with a token that finds its dead
        letter: not JSON, JSON with wrong types, or a 500-character type."""
        token = uuid.uuid4().hex
        now = datetime.now(UTC).isoformat()
        value = self.rng.choice(
            (
                b"junk " + token.encode(),
                orjson.dumps({"id": 123, "type": "custom", "props": {}, "t": token}),
                orjson.dumps(
                    {"id": str(uuid.uuid4()), "type": f"poison-{token}".ljust(500, "x")}
                    | {"user": None, "ts": now, "props": {}, "recv": now}
                ),
            )
        )
        self.ledger.poison[token] = None  # written or not: unknown until confirmed
        with contextlib.suppress(RedisError, OSError):
            entry = await self.redis.xadd(self.stream, {"e": value})
            self.ledger.poison[token] = (
                entry.decode() if isinstance(entry, bytes) else entry
            )

    async def paced(self, per_s: float, action: Callable[[], Awaitable[None]]) -> None:
        """Run ``action`` ``per_s`` times a second; after a stall, catch up on at
        most one second."""
        interval, next_at = 1.0 / per_s, time.monotonic()
        while not self.stopping.is_set():
            await action()
            next_at = max(next_at + interval, time.monotonic() - 1.0)
            await self.pause(next_at - time.monotonic())

    async def sample_memory(self) -> None:
        while not self.stopping.is_set():
            for proc in [self.api, *self.workers]:
                if proc.alive():
                    self.memory.setdefault(proc.name, []).append(
                        memory_kib(proc.pid)[0]
                    )
            await self.pause(SAMPLE_S)

    # --- faults -------------------------------------------------------------------

    async def probe(self, begin: float) -> float | None:
        """Seconds from ``begin`` until a new event was accepted and processed."""
        event = valid_event(self.rng)
        eid = event["event_id"]
        await self.send(event, "new")

        async def accepted() -> bool:
            if eid not in self.ledger.accepted:
                await self.send(event, "retry")
            return eid in self.ledger.accepted

        async def processed() -> bool:
            sql = "SELECT 1 FROM processed_events WHERE event_id = $1"
            return bool(await self.query(sql, uuid.UUID(eid)))

        if await self.until(accepted, begin) and await self.until(processed, begin):
            return round(time.monotonic() - begin, 2)
        return None

    async def kill_worker(self) -> Fault:
        """kill -9 a worker, caught (if it can be within 10 s) holding entries."""
        victim, at = self.rng.choice(self.workers), self.elapsed()
        mark, deadline, held = f"-{victim.pid}-", time.monotonic() + 10, 0
        while not held and time.monotonic() < deadline:
            victim.popen.send_signal(signal.SIGSTOP)  # frozen while we look
            held = sum(
                n for name, n in (await self.consumers()).items() if mark in name
            )
            if not held:
                victim.popen.send_signal(signal.SIGCONT)
                await asyncio.sleep(0.02)
        victim.popen.kill()
        await asyncio.to_thread(victim.popen.wait)
        self.workers.remove(victim)
        new, begin = self.start_worker(), time.monotonic()

        async def reclaimed() -> bool:
            return not any(mark in n and p for n, p in (await self.consumers()).items())

        recovery = await self.probe(begin)
        if not await self.until(reclaimed, begin):
            recovery = None
        took = round(time.monotonic() - begin, 2)
        recovery = None if recovery is None else max(recovery, took)
        detail = f"{victim.name} killed holding {held} entries; {new.name} started"
        return Fault("worker kill -9", at, 0, recovery, detail)

    async def restart(self, which: str) -> Fault:
        server = self.stack.pg if which == "postgres" else self.stack.redis_server
        assert server is not None
        down = 5.0 if which == "postgres" else 3.0
        port, at, begin = server.port, self.elapsed(), time.monotonic()
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(down)
        await asyncio.to_thread(server.start)
        if server.port != port:
            raise SoakError(f"{which} came back on port {server.port}, not {port}")
        outage = round(time.monotonic() - begin, 1)
        recovery = await self.probe(time.monotonic())
        detail = f"clean stop, started again {down:g} s later on the same port"
        return Fault(f"{which} stop/start", at, outage, recovery, detail)

    async def inject_faults(self) -> None:
        for at, kind in fault_plan(self.duration):
            await asyncio.sleep(self.started + at - time.monotonic())
            log(f"{self.elapsed():6.1f} s  fault: {kind}")
            fault = await (
                self.kill_worker() if kind == "worker" else self.restart(kind)
            )
            self.faults.append(fault)
            log(f"{self.elapsed():6.1f} s  recovered in {fault.recovery_s} s")

    # --- the whole run --------------------------------------------------------------

    async def start(self) -> None:
        log(f"starting PostgreSQL and Valkey in {self.stack.workdir}")
        await asyncio.to_thread(self.stack.start_servers)
        self.redis = Redis.from_url(
            self.stack.redis_url, socket_timeout=10, socket_connect_timeout=5
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTFLOW_")}
        self.env = env | SETTINGS | {"EVENTFLOW_STREAM_NAME": self.stream}
        self.env |= {"DATABASE_URL": self.stack.database_url}
        self.env |= {"REDIS_URL": self.stack.redis_url}
        host = ("--host", "127.0.0.1", "--port", str(self.port))
        self.api = self.start_process("api", "api", *host)
        for _ in range(self.args.workers):
            self.start_worker()
        ready = f"http://127.0.0.1:{self.port}/health/ready"
        await wait_http(ready, self.api, limit_s=120)

        async def joined() -> bool:
            if dead := [w for w in self.workers if not w.alive()]:
                raise SoakError(f"{dead[0].name} exited:\n{dead[0].tail()}")
            return len(await self.consumers()) >= len(self.workers)

        if not await self.until(joined, time.monotonic()):
            raise SoakError("the workers did not join the consumer group")
        key = await ingest_key(self.stack.database_url)
        if key:
            self.client.headers["x-api-key"] = key
        log("sending with an ingest API key" if key else "this version has no keys")

    async def settle(self) -> float:
        """Wait until nothing is left to do; returns the seconds waited."""
        begin, calm_since = time.monotonic(), 0.0
        sql = "SELECT count(*) FROM unsettled_events"
        while time.monotonic() - begin < SETTLE_LIMIT_S:
            state = await self.stream_state()
            left = (
                (await self.query(sql))[0][0] + state["pending"] + state["undelivered"]
            )
            now = time.monotonic()
            calm_since = 0.0 if left else calm_since or now
            if calm_since and now - calm_since >= 3:  # and stays so for 3 s
                return round(now - begin, 1)
            await asyncio.sleep(1)
        log(f"still not settled after {SETTLE_LIMIT_S:g} s")
        return round(time.monotonic() - begin, 1)

    async def run(self) -> Report:
        await self.start()
        rate = self.args.rate  # valid events/s: a fifth single, the rest in batches
        loops: list[tuple[float, Callable[[], Awaitable[None]]]] = [
            *[(rate / 20, self.single)] * 4,
            *[(rate * 0.4 / 57, self.batch)] * 2,
            (10.0, self.resend),
            (5.0, self.invalid),
            (20.0, self.retry),
            (0.5, self.poison),
        ]
        self.started = time.monotonic()
        log(f"traffic for {self.duration:g} s on stream {self.stream}")
        tasks = [asyncio.create_task(self.paced(r, a)) for r, a in loops]
        tasks.append(asyncio.create_task(self.sample_memory()))
        faults = asyncio.create_task(self.inject_faults())
        try:
            await asyncio.sleep(self.duration)
            await faults  # a recovery still under way finishes under traffic
        finally:
            self.stopping.set()
            faults.cancel()
            await asyncio.gather(*tasks, faults, return_exceptions=True)
        duration = round(time.monotonic() - self.started, 1)
        log(f"traffic stopped after {duration} s; waiting for everything to settle")
        return await self.audit(duration, await self.settle())

    async def audit(self, duration: float, settle_s: float) -> Report:
        led, counts = self.ledger, self.ledger.counts
        rows = await self.query("SELECT event_id::text FROM processed_events")
        processed = {r[0] for r in rows}
        dead = await self.query("SELECT event_id::text, payload FROM failed_events")
        failed = {r[0] for r in dead}
        raw = {r[0] for r in await self.query("SELECT event_id::text FROM raw_events")}
        state = await self.stream_state()
        quarantine = await self.redis.xlen(f"{self.stream}:quarantine")
        sent = led.accepted | led.uncertain
        missing, both = led.accepted - processed - failed, processed & failed
        open_raw = (await self.query("SELECT count(*) FROM unsettled_events"))[0][0]
        valid_dead = [eid for eid, _ in dead if eid in sent]
        poison: Counter[str] = Counter()  # dead letters per poison token
        unknown_dead = 0
        for eid, payload in dead:
            found = [t for t in re.findall("[0-9a-f]{32}", payload) if t in led.poison]
            poison.update(found[:1])
            unknown_dead += not found and eid not in sent
        confirmed = {token for token, entry in led.poison.items() if entry}
        lost, twice = confirmed - set(poison), sum(n > 1 for n in poison.values())
        odd_invalid = sum(n for k, n in led.unexpected.items() if k[:7] == "invalid")
        invalid_stored = led.invalid & (set(raw) | processed | failed)
        unknown_stored = (set(raw) | processed) - sent
        exited = [p.name for p in [self.api, *self.workers] if not p.alive()]
        memory = [judge_memory(name, kib) for name, kib in self.memory.items()]
        times = [f.recovery_s for f in self.faults]
        odd = ", ".join(f"{k} ({n})" for k, n in led.unexpected.items()) or "none"
        grew = [f"{m.process} {m.middle_mib}->{m.last_mib} MiB" for m in memory]
        checks = [
            Check(name, bool(passed), detail)
            for name, passed, detail in (
                ("processes stayed up", not exited, f"exited: {exited or 'none'}"),
                ("every accepted event settled", not missing,
                 f"{len(led.accepted)} accepted, {len(missing)} missing"),
                ("exactly once", not both, f"{len(both)} in both tables"),
                ("every event settled", not open_raw, f"{open_raw} still unsettled"),
                ("stream drained", not state["pending"] + state["undelivered"],
                 ", ".join(f"{k} {v}" for k, v in state.items())),
                ("quarantine empty", not quarantine, f"{quarantine} entries"),
                ("no valid event dead-lettered", not valid_dead, f"{len(valid_dead)}"),
                ("dead letters accounted for", not (unknown_dead or lost or twice),
                 f"{unknown_dead} unknown, {len(lost)} poison entries without one, "
                 f"{twice} with two"),
                ("invalid input refused", not (odd_invalid or invalid_stored),
                 f"{odd_invalid} not refused, {len(invalid_stored)} stored"),
                ("answers as documented", not led.unexpected, f"unexpected: {odd}"),
                ("nothing stored that was not sent", not unknown_stored,
                 f"{len(unknown_stored)} unknown ids stored"),
                ("faults recovered", self.faults and None not in times,
                 f"{len(self.faults)} faults, recovery times {times} s"),
                ("memory flat", False not in [m.flat for m in memory], ", ".join(grew)),
            )
        ]  # fmt: skip
        figures = {
            "requests": counts["requests"],
            "valid_events_sent": counts["sent_new"],
            "accepted": len(led.accepted),
            "processed": len(processed),
            "dead_lettered": len(failed),
            "dead_letters_poison": sum(poison.values()),
            "dead_letters_valid_events": len(valid_dead),
            "duplicates": counts["duplicate"],
            "resends": counts["sent_resend"],
            "not_accepted": counts["not_accepted"],
            "retried_then_accepted": counts["retried_then_accepted"],
            "never_confirmed": len(led.uncertain),
            "invalid_sent": counts["invalid_sent"],
            "invalid_refused": counts["invalid_refused"],
            "invalid_unavailable": counts["invalid_unavailable"],
            "poison_entries": len(confirmed),
            "poison_unconfirmed": len(led.poison) - len(confirmed),
        }
        errors = {p.name: _error_lines(p.log) for p in self.procs}
        argv = [_relative(sys.executable), _relative(sys.argv[0]), *sys.argv[1:]]
        return Report(
            date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            command=shlex.join(argv),
            duration_s=duration,
            workers=self.args.workers,
            machine=_machine(),
            settle_s=settle_s,
            counts=figures,
            faults=self.faults,
            memory=memory,
            log_errors={name: n for name, n in errors.items() if n},
            checks=checks,
        )

    async def close(self) -> None:
        self.stopping.set()
        for proc in self.procs:
            proc.stop(timeout=30)
        with contextlib.suppress(Exception):
            await self.client.aclose()
            if hasattr(self, "redis"):
                await self.redis.aclose()
        self.stack.stop_servers()


def _relative(path: str) -> str:
    with contextlib.suppress(ValueError):
        return str(Path(path).absolute().relative_to(REPO))
    return path


def _error_lines(path: Path) -> int:
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").splitlines()
        return sum('"level":"ERROR"' in x or x.startswith("Traceback") for x in lines)
    return 0


def _version() -> str:
    """The commit under test, and whether tracked files differed from it."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""

    changed = git("status", "--porcelain", "--untracked-files=no")
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" with uncommitted changes" if changed else "")


def _machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    load = [round(x, 2) for x in os.getloadavg()]
    return {"cores": os.cpu_count(), "cpu_model": model, "load_average_at_end": load}


# --- output ----------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, padded so that it reads as well in a terminal."""
    lines = [header, *rows]
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    lines.insert(1, ["-" * w for w in widths])
    return "\n".join(
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
        for r in lines
    )


def _seconds(value: float | None) -> str:
    return "NOT RECOVERED" if value is None else f"{value:g} s"


def render(report: Report) -> str:
    m = report.machine
    verdict = "PASS" if report.passed else "FAIL"
    failed = [c.name for c in report.checks if not c.passed]
    head = (
        f"**Soak {verdict}**{': ' + ', '.join(failed) if failed else ''} "
        f"({report.date}: `{report.command}`, EventFlow {report.version})\n\n"
        f"{report.duration_s:g} s of traffic, {report.workers} workers, settled "
        f"{report.settle_s:g} s after the traffic stopped; {m['cores']} cores "
        f"({m['cpu_model']}), load average at the end {m['load_average_at_end']}."
    )
    faults = [
        [f.kind, f"{f.at_s:g} s", f"{f.outage_s:g} s", f.detail, _seconds(f.recovery_s)]
        for f in report.faults
    ]
    flat = {True: "yes", False: "NO", None: "not judged"}
    memory = []
    for x in report.memory:
        numbers = (x.samples, x.start_mib, x.end_mib, x.middle_mib, x.last_mib)
        memory.append([x.process, *(f"{v:g}" for v in numbers), flat[x.flat]])
    checks = [[c.name, "pass" if c.passed else "FAIL", c.detail] for c in report.checks]
    rss = ["RSS (MiB)", "samples", "first", "last", "middle third", "last third"]
    parts = [
        head,
        table(["count", "value"], [[k, str(v)] for k, v in report.counts.items()]),
        table(["fault", "at", "outage", "what", "recovered in"], faults),
        table([*rss, "flat"], memory),
        table(["check", "result", "detail"], checks),
    ]
    if report.log_errors:
        parts.append(f"ERROR lines in the logs: {report.log_errors}")
    return "\n\n".join(parts) + "\n"


def record(report: Report) -> None:
    text = DOCS.read_text()
    start, end = text.find(MARKS[0]), text.find(MARKS[1])
    if start < 0 or end < start:
        raise SoakError(f"{DOCS} lacks the markers {MARKS}")
    DOCS.write_text(f"{text[: start + len(MARKS[0])]}\n{render(report)}{text[end:]}")
    log(f"recorded in {DOCS.relative_to(REPO)}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, default=10.0)
    length.add_argument("--seconds", type=float)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=300.0, help="valid events/s")
    parser.add_argument("--seed", type=int, help="for the traffic and fault choices")
    parser.add_argument("--json", action="store_true", help="the report as JSON")
    parser.add_argument("--record", action="store_true", help="write docs/soak.md")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args(argv)
    if args.workers < 1 or (args.seconds or args.minutes * 60) < 30:
        parser.error("needs at least 1 worker and 30 seconds")
    return args


async def soak(args: argparse.Namespace) -> Report:
    workdir = Path(tempfile.mkdtemp(prefix="eventflow-soak-"))
    # World-reachable, so that PostgreSQL (run as an unprivileged user when we are
    # root) keeps its data here and it goes with the folder.
    os.chmod(workdir, 0o755)
    run, passed = Soak(args, workdir), False
    try:
        report = await run.run()
        passed = report.passed
        return report
    finally:
        await run.close()
        if passed and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"logs kept in {run.stack.log_dir}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    version = _version()
    try:
        report = asyncio.run(soak(args))
    except KeyboardInterrupt:
        log("interrupted; every process started was stopped")
        return 130
    except SoakError as exc:
        log(f"the soak could not run: {exc}")
        return 2
    report.version = version
    if args.json:
        print(orjson.dumps(asdict(report) | {"passed": report.passed}).decode())
    print(render(report), file=sys.stderr if args.json else sys.stdout)
    if args.record:
        record(report)
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
