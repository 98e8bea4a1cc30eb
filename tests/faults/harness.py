"""Real processes for fault tests: the API and workers as `python -m eventflow`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.config import Settings
from eventflow.local.servers import die_with_parent, free_port

# Time from each injected fault to full recovery, shown at the end of the run.
RECOVERY_TIMES: dict[str, float] = {}

FAULT_SETTINGS = {
    "EVENTFLOW_CLAIM_IDLE_MS": "1500",
    "EVENTFLOW_RECONCILE_INTERVAL_S": "0.5",
    "EVENTFLOW_RECONCILE_MIN_AGE_S": "1",
    "EVENTFLOW_WORKER_BATCH_SIZE": "50",
    "EVENTFLOW_WORKER_BLOCK_MS": "100",
    "EVENTFLOW_WORKER_METRICS_PORT": "0",
    "EVENTFLOW_SHUTDOWN_TIMEOUT_S": "10",
    "EVENTFLOW_RETRY_MAX_S": "0.5",
    "EVENTFLOW_LOG_FORMAT": "json",
    "EVENTFLOW_AUTH_REQUIRED": "false",
    "EVENTFLOW_LEASE_TTL_MS": "1500",
}


@dataclass
class Stack:
    """An API process and worker processes sharing one stream and database."""

    settings: Settings
    logs: Path
    port: int = field(default_factory=free_port)
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    claim_idle_s: float = int(FAULT_SETTINGS["EVENTFLOW_CLAIM_IDLE_MS"]) / 1000
    lease_s: float = int(FAULT_SETTINGS["EVENTFLOW_LEASE_TTL_MS"]) / 1000

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTFLOW_")}
        env.update(FAULT_SETTINGS)
        env["DATABASE_URL"] = str(self.settings.database_dsn)
        env["REDIS_URL"] = str(self.settings.redis_dsn)
        env["EVENTFLOW_STREAM_NAME"] = self.settings.stream_name
        env["EVENTFLOW_CONSUMER_GROUP"] = self.settings.consumer_group
        env["EVENTFLOW_PARTITIONS"] = str(self.settings.partitions)
        env["EVENTFLOW_REDIS_CLUSTER"] = str(self.settings.redis_cluster).lower()
        return env

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}-{uuid.uuid4().hex[:6]}.log", "wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "eventflow", *args],
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(signal.SIGKILL),
            )

    async def start_api(self) -> None:
        self.api = self._spawn(
            "api", "api", "--host", "127.0.0.1", "--port", str(self.port)
        )
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                assert self.api.poll() is None, "the API exited at start-up"
                try:
                    if (await client.get(self.url + "/health/live")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError("the API did not start")

    def start_worker(self) -> subprocess.Popen[bytes]:
        worker = self._spawn("worker", "worker")
        self.workers.append(worker)
        return worker

    def kill_api(self, sig: int = signal.SIGKILL) -> None:
        assert self.api is not None
        self.api.send_signal(sig)
        self.api.wait(30)

    def stop(self) -> None:
        for proc in [self.api, *self.workers]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


@dataclass
class SendLog:
    accepted: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    codes: dict[int, int] = field(default_factory=dict)

    @property
    def sent(self) -> set[str]:
        return self.accepted | self.failed


def custom_event(n: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "custom",
        "user_id": f"u{n % 17}",
        "properties": {"name": "fault.test", "n": n},
    }


async def send_events(
    url: str,
    count: int,
    log: SendLog,
    concurrency: int = 8,
    pause: float = 0.0,
    batch: int = 1,
    stop: asyncio.Event | None = None,
) -> None:
    """Send ``count`` events; 202/200 answers are accepted, anything else failed.

    Setting ``stop`` ends the sending after the requests in flight.
    """
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for start in range(0, count, batch):
        queue.put_nowait(
            [custom_event(n) for n in range(start, min(count, start + batch))]
        )

    async def sender(client: httpx.AsyncClient) -> None:
        while not queue.empty() and not (stop is not None and stop.is_set()):
            items = queue.get_nowait()
            ids = [i["event_id"] for i in items]
            try:
                if batch == 1:
                    r = await client.post(url + "/events", json=items[0])
                    ok = ids if r.status_code in (200, 202) else []
                else:
                    r = await client.post(url + "/events/batch", json={"events": items})
                    results = r.json()["results"] if r.status_code == 200 else []
                    ok = [
                        ids[x["index"]]
                        for x in results
                        if x["status"] in ("accepted", "duplicate")
                    ]
                log.codes[r.status_code] = log.codes.get(r.status_code, 0) + 1
            except (httpx.TransportError, ValueError):
                ok = []
                log.codes[0] = log.codes.get(0, 0) + 1
            log.accepted.update(ok)
            log.failed.update(set(ids) - set(ok))
            if pause:
                await asyncio.sleep(pause)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        await asyncio.gather(*(sender(client) for _ in range(concurrency)))


async def settled(engine: AsyncEngine, ids: Iterable[str]) -> tuple[int, int]:
    """How many of ``ids`` are in processed_events and in failed_events."""
    id_list = list(ids)
    async with engine.connect() as conn:
        processed = await conn.scalar(
            text(
                "SELECT count(*) FROM processed_events "
                "WHERE event_id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": id_list},
        )
        failed = await conn.scalar(
            text(
                "SELECT count(*) FROM failed_events "
                "WHERE event_id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": id_list},
        )
    return int(processed or 0), int(failed or 0)


async def wait_settled(
    engine: AsyncEngine, ids: set[str], limit_s: float = 60
) -> float:
    """Wait until every id is processed or dead-lettered; returns seconds waited."""
    start = time.monotonic()
    while True:
        processed, failed = await settled(engine, ids)
        if processed + failed >= len(ids):
            return time.monotonic() - start
        if time.monotonic() - start > limit_s:
            raise AssertionError(
                f"only {processed} processed + {failed} failed of {len(ids)} accepted"
            )
        await asyncio.sleep(0.1)


async def assert_exactly_once(engine: AsyncEngine, log: SendLog) -> None:
    """Every accepted event stored exactly once; nothing that was never sent."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT event_id::text AS id, 'p' AS t FROM processed_events "
                    "UNION ALL SELECT event_id::text, 'f' FROM failed_events"
                )
            )
        ).all()
    stored = [r.id for r in rows]
    assert len(stored) == len(set(stored)), "an event is stored twice"
    missing = log.accepted - set(stored)
    assert not missing, f"{len(missing)} accepted events were lost"
    unknown = set(stored) - log.sent
    assert not unknown, f"{len(unknown)} stored events were never sent"


# Other figures a fault test reports at the end of the run (name -> text).
REPORTS: dict[str, str] = {}


def ordered_event(user: str, seq: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "custom",
        "user_id": user,
        "properties": {"name": "order.test", "seq": seq},
    }


async def send_ordered(
    url: str,
    users: int,
    per_user: int,
    log: SendLog,
    batch: int = 10,
    concurrency: int = 32,
) -> dict[str, list[str]]:
    """Each user sends its events one request after the other (``batch`` of its
    own events per request), users in parallel. A request that fails is sent
    again, with the same events, until every item is accepted. Returns, per user,
    the event ids in the order they were accepted."""
    accepted: dict[str, list[str]] = {f"user-{n}": [] for n in range(users)}
    gate = asyncio.Semaphore(concurrency)

    async def one_user(client: httpx.AsyncClient, user: str) -> None:
        for start in range(0, per_user, batch):
            items = [
                ordered_event(user, seq)
                for seq in range(start, min(per_user, start + batch))
            ]
            ids = [i["event_id"] for i in items]
            done: set[str] = set()
            deadline = time.monotonic() + 120
            while len(done) < len(ids):
                assert time.monotonic() < deadline, f"{user}: never accepted"
                async with gate:
                    try:
                        r = await client.post(
                            url + "/events/batch", json={"events": items}
                        )
                        code = r.status_code
                        results = r.json()["results"] if code == 200 else []
                    except (httpx.TransportError, ValueError):
                        code, results = 0, []
                log.codes[code] = log.codes.get(code, 0) + 1
                ok = [
                    ids[x["index"]]
                    for x in results
                    if x["status"] in ("accepted", "duplicate")
                ]
                for event_id in ok:
                    if event_id not in done:
                        done.add(event_id)
                        accepted[user].append(event_id)
                if len(done) < len(ids):
                    await asyncio.sleep(0.2)
            log.accepted.update(ids)

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(one_user(client, u) for u in accepted))
    return accepted


async def check_order(
    engine: AsyncEngine, accepted: dict[str, list[str]]
) -> tuple[int, int]:
    """For every user, the stored order (``processed_events.id``, which follows
    commit order) must equal the acceptance order, leaving out the events the
    reconciler republished. Returns (republished events, users whose order
    differed only through them)."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT p.user_id, p.event_id::text, r.publish_count "
                    "FROM processed_events p JOIN raw_events r USING (event_id) "
                    "ORDER BY p.id"
                )
            )
        ).all()
    republished = {event_id for _, event_id, n in rows if n > 1}
    stored: dict[str, list[str]] = {}
    for user, event_id, _ in rows:
        stored.setdefault(user, []).append(event_id)
    touched = 0
    for user, order in accepted.items():
        expected = [e for e in order if e not in republished]
        got = [e for e in stored.get(user, []) if e not in republished]
        assert got == expected, f"{user}: stored out of acceptance order"
        if len(expected) != len(order):
            touched += 1
    return len(republished), touched
