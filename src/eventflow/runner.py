"""Process entry points: the API server, a worker process, and the local mode."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from prometheus_client import start_http_server

from eventflow.config import Settings
from eventflow.local.cluster import LocalRedisCluster
from eventflow.local.servers import LocalPostgres, LocalRedis, die_with_parent
from eventflow.metrics import Metrics
from eventflow.pipeline.ownership import FENCE_WARMUP
from eventflow.pipeline.worker import Worker
from eventflow.redisconn import connect_redis
from eventflow.store.events import WORKER_WARMUP
from eventflow.store.migrate import upgrade
from eventflow.store.tables import engine_for, warm_pool

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def serve_api(settings: Settings, host: str, port: int) -> int:
    """Serve until SIGTERM/SIGINT, then stop accepting, finish in-flight requests,
    flush the pending group commit and exit 0."""
    import uvicorn

    from eventflow.api import create_app
    from eventflow.api.protocol import GuardedHttpToolsProtocol

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            # A clean shutdown exits 0 instead of re-raising the signal.
            self._captured_signals.clear()

    if not settings.auth_required and host not in LOOPBACK:
        log.warning(
            "authentication is OFF and the API listens on a non-loopback address: "
            "anyone who can reach it can send, read, replay and purge events",
            extra={"host": host, "port": port},
        )
    metrics = Metrics()
    if settings.api_metrics_port:
        # Prometheus scrapes this port without a key; keep it off the public
        # network (EVENTFLOW_API_METRICS_HOST).
        start_http_server(
            settings.api_metrics_port,
            addr=settings.api_metrics_host,
            registry=metrics.registry,
        )
    config = uvicorn.Config(
        create_app(settings, metrics),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http=GuardedHttpToolsProtocol.configured(
            settings.max_headers,
            settings.max_header_bytes,
            settings.header_timeout_s,
        ),
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
    )
    server = Server(config)
    server.run()
    return 0 if server.started else 1


def _serve_metrics(metrics: Metrics, port: int) -> int | None:
    """Serve worker metrics on ``port`` or the next free one (several workers on
    one host never collide). Returns the port, or None when disabled."""
    if port == 0:
        return None
    for candidate in range(port, port + 64):
        try:
            start_http_server(candidate, registry=metrics.registry)
        except OSError:
            continue
        return candidate
    log.warning("no free metrics port", extra={"from": port})
    return None


async def run_worker(settings: Settings, until_empty: bool = False) -> int:
    """Run one worker until SIGTERM/SIGINT; returns the exit code."""
    database_url, redis_url = settings.require_urls()
    metrics = Metrics()
    port = _serve_metrics(metrics, settings.worker_metrics_port)
    # One commit in flight per owned partition, and the reconciler.
    engine = engine_for(
        settings,
        database_url,
        pool_size=2 + min(8, settings.partitions),
        generic_plans=True,
    )
    # A connection for each partition's commits and one for the rest.
    await warm_pool(
        engine, 1 + min(8, settings.partitions), [*FENCE_WARMUP, *WORKER_WARMUP]
    )
    redis = await connect_redis(
        settings,
        redis_url,
        # A blocking read waits up to worker_block_ms before Redis answers.
        settings.redis_socket_timeout_s + settings.worker_block_ms / 1000,
    )
    worker = Worker(settings, engine, redis, metrics)
    worker.install_signal_handlers()
    log.info("worker metrics", extra={"port": port, "consumer": worker.consumer})
    task = asyncio.create_task(worker.run(until_empty=until_empty))
    stopping = asyncio.create_task(worker._stopping.wait())
    code = 0
    try:
        # Until a signal, or until the consumer loop ends by itself: drained
        # (--until-empty, however long that takes) or dead (exit non-zero, so a
        # supervisor restarts the process instead of keeping a silent one).
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            # Stopping: give the in-flight batch up to the shutdown timeout.
            done, _ = await asyncio.wait({task}, timeout=settings.shutdown_timeout_s)
            if not done:
                log.error("shutdown timeout; leaving in-flight entries to be reclaimed")
                task.cancel()
                code = 1
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("consumer loop died", exc_info=task.exception())
            code = 2
    finally:
        stopping.cancel()
        await redis.aclose()
        await engine.dispose()
    return code


def run_dev(
    settings: Settings, workers: int, host: str, port: int, cluster: bool = False
) -> int:
    """Everything on one machine: local servers when URLs are unset, migrations,
    the API and the workers as child processes. Ctrl-C stops it all. With
    ``cluster``, the local Redis is a Redis Cluster (3 masters, 3 replicas)."""
    data = Path(settings.data_dir).resolve()
    servers: list[LocalPostgres | LocalRedis | LocalRedisCluster] = []
    env = dict(os.environ)
    children: list[subprocess.Popen[bytes]] = []
    try:
        if not settings.database_dsn:
            pg = LocalPostgres(data, port=54329)
            env["DATABASE_URL"] = pg.start()
            servers.append(pg)
            print(f"PostgreSQL   {pg.url}  (data in {pg.data_dir})", flush=True)
        else:
            env["DATABASE_URL"] = settings.database_dsn
        if not settings.redis_dsn and cluster:
            rc = LocalRedisCluster(data)
            env["REDIS_URL"] = rc.start()
            env["EVENTFLOW_REDIS_CLUSTER"] = "true"
            servers.append(rc)
            print(
                f"Redis Cluster {env['REDIS_URL']}  (3 masters, 3 replicas; data in "
                f"{data / 'redis-cluster'})",
                flush=True,
            )
        elif not settings.redis_dsn:
            rd = LocalRedis(data, port=63799)
            env["REDIS_URL"] = rd.start()
            servers.append(rd)
            print(f"Redis        {rd.url}  (data in {rd.dir})", flush=True)
        else:
            env["REDIS_URL"] = settings.redis_dsn
        upgrade(env["DATABASE_URL"])
        print("Migrations   applied", flush=True)
        # Local mode: no keys needed, unless EVENTFLOW_AUTH_REQUIRED says so.
        env.setdefault("EVENTFLOW_AUTH_REQUIRED", "false")
        auth_off = env["EVENTFLOW_AUTH_REQUIRED"].lower() in ("false", "0", "no")
        exe = [sys.executable, "-m", "eventflow"]
        # Children get SIGTERM if this supervisor dies, so nothing is orphaned.
        tied = die_with_parent(signal.SIGTERM)
        children.append(
            subprocess.Popen(
                [*exe, "api", "--host", host, "--port", str(port)],
                env=env,
                preexec_fn=tied,
            )
        )
        for _ in range(workers):
            children.append(
                subprocess.Popen([*exe, "worker"], env=env, preexec_fn=tied)
            )
        shown = "localhost" if host in ("0.0.0.0", "127.0.0.1") else host
        print(
            f"\nEventFlow is running ({workers} worker{'s' if workers != 1 else ''}):\n"
            f"  API          http://{shown}:{port}\n"
            f"  Docs         http://{shown}:{port}/docs\n"
            f"  Health       http://{shown}:{port}/health\n"
            f"  Metrics      http://{shown}:{port}/metrics/summary\n"
            f"  Console      http://{shown}:{port}/console"
            + ("\n" if auth_off else "  (log in with a read or admin key)\n")
            + (
                f"  Auth         OFF: local mode, listening on {host} only\n"
                if auth_off and host in LOOPBACK
                else f"  Auth         OFF on {host}: anyone who can reach it may do "
                "anything\n"
                if auth_off
                else "  Auth         API keys required (eventflow keys create)\n"
            )
            + "Press Ctrl-C to stop.\n",
            flush=True,
        )
        stop = False

        def _stop(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        while not stop:
            if any(c.poll() is not None for c in children):
                log.error("a child process exited; stopping everything")
                return 1
            time.sleep(0.2)
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(settings.shutdown_timeout_s + 5)
            if child.poll() is None:
                child.kill()
        for server in reversed(servers):
            server.stop()
        print("EventFlow stopped.", flush=True)
