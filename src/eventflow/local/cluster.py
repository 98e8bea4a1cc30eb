"""A local Redis Cluster (the Valkey server of :mod:`eventflow.local.servers` in
cluster mode) as child processes, for tests and for trying EventFlow by hand.

``LocalRedisCluster(folder).start()`` runs ``masters * (1 + replicas_per_master)``
servers under ``folder/redis-cluster/node-<i>`` (append-only file, pidfile, log and
``nodes.conf`` each), forms the cluster from Python (CLUSTER MEET, ADDSLOTSRANGE,
REPLICATE: no ``redis-cli`` needed) and returns a seed URL such as
``redis://127.0.0.1:PORT/0``. Every ``start()`` wipes ``folder/redis-cluster`` and
forms a new, empty cluster: the ports change from run to run, and a stale
``nodes.conf`` would point at the old ones. The servers get SIGTERM when their
parent dies (call ``start()``/``restart_node()`` from the main thread: the signal is
tied to the thread that started them), and a later ``start()`` kills any that
outlived a crash, through their pidfiles.

The fault helpers (``kill_master``, ``kill_node``, ``restart_node``, ``revive``,
``wait_healthy``) let a test crash the master of a slot, watch its replica take
over (``cluster-replica-validity-factor 0`` lets any replica fail over) and bring
the old master back as a replica. With the default 1.5 s node timeout, measured
on 2 cores: the other nodes suspect the dead master after ~2.2 s, agree it failed
at ~2.4 s, and its replica wins the election at ~3.2 s. From the agreement to the
promotion the whole cluster answers CLUSTERDOWN (``cluster-require-full-coverage``
is left at yes, ``cluster-allow-reads-when-down`` is no), as a production cluster
would; before it, only the dead master's slots are unreachable.

Clients. What ``redis.asyncio.cluster.RedisCluster`` (redis-py 8.1, read in its
source and checked by tests/integration/test_local_cluster.py) needs to get
through a failover::

    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster.addresses],
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=10),
        socket_connect_timeout=1.0,
        socket_timeout=5.0,  # longer than any XREADGROUP BLOCK
    )

    # and, around each command or pipeline that must survive a failover, for
    # about 2 x node timeout + a few seconds (or tenacity); the errors are
    # redis.exceptions':
    while True:
        try:
            return await operation()
        except (ConnectionError, TimeoutError, ClusterDownError,
                SlotNotCoveredError, TryAgainError, MasterDownError):
            if past_the_deadline: raise
            await asyncio.sleep(0.1)

The client's own retries are not enough on their own. ``retry`` only sets how many
times a command is tried again (its backoff is not used by the async cluster
client); after a connection error the client re-reads CLUSTER SLOTS and tries at
once, and until the promotion the cluster still names the dead master, whose port
refuses at once. Ten retries take ~0.3 s; the failover takes ~3 s. The caller's
loop above covers that; the client then finds the promoted replica by itself.
The retries do matter for CLUSTERDOWN answers: the client waits 0.25 s before
each, so ten of them (redis-py 8.1's default: set it rather than rely on the
installed version's) ride out the ~1 s when every shard answers CLUSTERDOWN.
Every node in ``startup_nodes`` lets a client start while the seed node is down
(``from_url(seed_url)`` knows only that one; a running client learns every node).

``WAIT numreplicas timeout`` waits for the writes of the connection it is sent on,
and a cluster client may send it on another pooled connection: to know a write
reached a replica, write and WAIT on one connection to the key's master, such as
``Redis(host=..., port=master.port, single_connection_client=True)``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from redis.crc import key_slot

from eventflow.local.servers import (
    ServerError,
    _wait_port,
    die_with_parent,
    find_redis_server,
    free_port,
)

SLOTS = 16384
HOST = "127.0.0.1"

# --- a minimal RESP2 client: admin commands only, one short connection each ---------

Reply = str | int | None | list["Reply"]


class ReplyError(ServerError):
    """The server answered a command with an error."""


def _encode(args: Iterable[str | int | bytes]) -> bytes:
    parts = [b""]
    count = 0
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
        count += 1
    parts[0] = b"*%d\r\n" % count
    return b"".join(parts)


def _read(stream: io.BufferedIOBase) -> Reply:
    line: bytes = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed in the middle of a reply")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise ReplyError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data: bytes = stream.read(size + 2)
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [_read(stream) for _ in range(size)]
    raise ConnectionError(f"unexpected reply {line[:40]!r}")


def call(port: int, *args: str | int | bytes, timeout: float = 5.0) -> Reply:
    """Send one command to the server on ``127.0.0.1:port`` and return its reply
    (bulk strings decoded). Raises ``OSError`` when the server is unreachable and
    :class:`ReplyError` on an error reply."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(_encode(args))
        with sock.makefile("rb") as stream:
            try:
                return _read(stream)
            except ValueError as exc:  # not a RESP server
                raise ConnectionError(f"garbled reply from port {port}") from exc


def _call_str(port: int, *args: str | int, timeout: float = 5.0) -> str:
    reply = call(port, *args, timeout=timeout)
    if not isinstance(reply, str):
        raise ServerError(f"{args[0]} on port {port}: unexpected reply {reply!r}")
    return reply


def _fields(text: str) -> dict[str, str]:
    """``key:value`` lines (INFO, CLUSTER INFO) as a dict."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _process_state(pid: int) -> tuple[str, str] | None:
    """``(name, state)`` of a process from /proc, None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, _, rest = stat.partition("(")[2].rpartition(")")
    return name, rest.split()[0]


def _kill_stale_server(pidfile: Path) -> None:
    """SIGKILL the server a pidfile names, if that process is still a Redis or
    Valkey server (not a process that reused the pid), and wait until it is gone.
    A zombie counts as gone: when its parent is this very process (a test starting
    a second launcher on the same folder) nobody else will reap it."""
    with contextlib.suppress(ValueError, OSError):
        pid = int(pidfile.read_text().strip())
        state = _process_state(pid)
        if pid == os.getpid() or state is None or not state[0].endswith("-server"):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            state = _process_state(pid)
            if state is None or state[1] in ("Z", "X"):
                return
            time.sleep(0.02)
        raise ServerError(f"stale server {pid} ({pidfile}) does not exit")


# --- the cluster ---------------------------------------------------------------------


@dataclass(frozen=True)
class NodeLine:
    """One line of CLUSTER NODES: how one node sees another (or itself)."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        """Flagged as failed (``fail``) or suspected (``fail?``) by the viewer."""
        return bool(self.flags & {"fail", "fail?"})

    @classmethod
    def parse(cls, line: str) -> NodeLine:
        parts = line.split()
        address = parts[1].split("@", 1)[0].split(",", 1)[0]
        slots: list[tuple[int, int]] = []
        for item in parts[8:]:
            if item.startswith("["):  # a slot being migrated or imported
                continue
            first, _, last = item.partition("-")
            slots.append((int(first), int(last or first)))
        return cls(
            node_id=parts[0],
            port=int(address.rsplit(":", 1)[1]) if ":" in address else 0,
            flags=frozenset(parts[2].split(",")),
            master_id=None if parts[3] == "-" else parts[3],
            slots=tuple(slots),
        )


@dataclass(eq=False)
class LocalClusterNode:
    """One server of the cluster. ``index`` is its place in
    :attr:`LocalRedisCluster.nodes`; whether it is a master now is for the cluster
    to say (see :meth:`LocalRedisCluster.role`)."""

    index: int
    dir: Path
    port: int = 0
    bus_port: int = 0
    node_id: str = ""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def pidfile(self) -> Path:
        return self.dir / "server.pid"

    @property
    def log(self) -> Path:
        return self.dir / "server.log"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __str__(self) -> str:
        return f"node-{self.index} (port {self.port}, id {self.node_id[:8]})"


@dataclass
class LocalRedisCluster:
    """``masters`` shards of one master and ``replicas_per_master`` replicas each.

    ``start()`` always wipes ``data_dir/redis-cluster`` and forms a new cluster.
    """

    data_dir: Path
    masters: int = 3
    replicas_per_master: int = 1
    node_timeout_ms: int = 1500
    start_timeout: float = 60.0
    nodes: list[LocalClusterNode] = field(default_factory=list)

    # --- addresses ---------------------------------------------------------------

    @property
    def folder(self) -> Path:
        return self.data_dir / "redis-cluster"

    @property
    def url(self) -> str:
        """A seed URL for cluster clients: the first node that is running."""
        for node in self.nodes:
            if node.alive:
                return node.url
        raise ServerError("no node of the cluster is running")

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Every node as ``(host, port)``, for ``startup_nodes``."""
        return [node.address for node in self.nodes]

    # --- life cycle ----------------------------------------------------------------

    def start(self) -> str:
        """Start every node, form the cluster and wait until it is healthy; return
        the seed URL. Any previous cluster in ``data_dir`` is wiped first."""
        if self.masters < 1 or self.replicas_per_master < 0:
            raise ValueError("at least one master and no negative replica count")
        self.stop(signal.SIGKILL)
        self._wipe()
        count = self.masters * (1 + self.replicas_per_master)
        self.nodes = [
            LocalClusterNode(i, self.folder / f"node-{i}") for i in range(count)
        ]
        try:
            self._launch(self.nodes, new_ports=True)
            self._form()
            self.wait_healthy(self.start_timeout)
        except BaseException:
            self.stop(signal.SIGKILL)
            raise
        return self.url

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """SIGTERM every node (they write their append-only files and exit) and
        wait for them; SIGKILL simulates a crash of the whole cluster."""
        running = [node for node in self.nodes if node.alive]
        for node in running:
            assert node.proc is not None
            with contextlib.suppress(ProcessLookupError):
                node.proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        for node in running:
            assert node.proc is not None
            try:
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()

    def _wipe(self) -> None:
        for pidfile in self.folder.glob("node-*/server.pid"):
            _kill_stale_server(pidfile)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)

    def _command_line(self, node: LocalClusterNode) -> list[str]:
        return [
            str(find_redis_server()),
            "--port",
            str(node.port),
            "--cluster-port",
            str(node.bus_port),
            "--bind",
            HOST,
            "--dir",
            str(node.dir),
            "--pidfile",
            str(node.pidfile),
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(node.dir / "nodes.conf"),
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            # Any replica may take over, however long it was cut off.
            "--cluster-replica-validity-factor",
            "0",
            "--cluster-allow-reads-when-down",
            "no",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            # Replicas (new ones, or an old master rejoining) sync at once instead
            # of waiting 5 s for others to share the transfer.
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
        ]

    def _spawn(self, node: LocalClusterNode) -> None:
        node.dir.mkdir(parents=True, exist_ok=True)
        with open(node.log, "ab") as out:
            node.proc = subprocess.Popen(
                self._command_line(node),
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )

    def _launch(self, nodes: list[LocalClusterNode], new_ports: bool) -> None:
        """Start ``nodes`` and wait until each listens; with ``new_ports``, pick
        ports for them, and pick others for a node whose ports were taken."""
        taken: set[int] = {n.port for n in self.nodes} | {
            n.bus_port for n in self.nodes
        }

        def pick() -> int:
            while True:
                port = free_port()
                if port not in taken:
                    taken.add(port)
                    return port

        pending = list(nodes)
        for _attempt in range(5):
            for node in pending:
                if new_ports:
                    node.port, node.bus_port = pick(), pick()
                self._spawn(node)
            failed: list[LocalClusterNode] = []
            for node in pending:
                assert node.proc is not None
                try:
                    _wait_port(node.port, node.proc, f"redis {node}", node.log)
                    self._check_identity(node)
                except ServerError as exc:
                    if not new_ports or "already in use" not in str(exc):
                        raise
                    failed.append(node)  # another program took a port meanwhile
            if not failed:
                return
            pending = failed
        raise ServerError("could not find free ports for the cluster")

    def _check_identity(self, node: LocalClusterNode) -> None:
        """The server on ``node.port`` is ours (not another program that took the
        port between ``free_port`` and the server's start)."""
        assert node.proc is not None
        deadline = time.monotonic() + 10
        while True:
            try:
                info = _fields(_call_str(node.port, "INFO", "server", timeout=2))
                if info.get("process_id") == str(node.proc.pid):
                    return
                node.proc.kill()
                node.proc.wait()
                raise ServerError(f"redis {node}: port already in use by another")
            except (OSError, ReplyError) as exc:
                if node.proc.poll() is not None:
                    node.proc.wait()
                    tail = node.log.read_text(errors="replace")[-2000:]
                    raise ServerError(f"redis {node} exited:\n{tail}") from exc
                if time.monotonic() > deadline:
                    raise ServerError(f"redis {node} does not answer") from exc
                time.sleep(0.02)

    def _form(self) -> None:
        for i, node in enumerate(self.nodes):
            node.node_id = _call_str(node.port, "CLUSTER", "MYID")
            # Distinct epochs from the start, as redis-cli does: no collisions to
            # resolve before the first failover.
            call(node.port, "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        for i in range(self.masters):
            first, last = self._shard_range(i)
            call(self.nodes[i].port, "CLUSTER", "ADDSLOTSRANGE", first, last)
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            call(seed.port, "CLUSTER", "MEET", HOST, node.port, node.bus_port)
        ids = {node.node_id for node in self.nodes}
        self._wait(lambda: self._meet_problem(ids), self.start_timeout, "nodes to meet")
        for k, node in enumerate(self.nodes[self.masters :]):
            master = self.nodes[k % self.masters]
            call(node.port, "CLUSTER", "REPLICATE", master.node_id)

    def _shard_range(self, i: int) -> tuple[int, int]:
        return i * SLOTS // self.masters, (i + 1) * SLOTS // self.masters - 1

    def _meet_problem(self, ids: set[str]) -> str | None:
        for node in self.nodes:
            view = self.view(node)
            known = {line.node_id for line in view.values() if line.port}
            if known != ids:
                return f"{node} knows {len(known)} of {len(ids)} nodes"
            for line in view.values():
                if line.flags & {"handshake", "noaddr"}:
                    return f"{node} is still in a handshake with {line.node_id[:8]}"
        return None

    @staticmethod
    def _wait(check: Callable[[], str | None], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                problem = check()
            except (OSError, ServerError) as exc:
                problem = str(exc) or type(exc).__name__
            if problem is None:
                return
            if time.monotonic() > deadline:
                raise ServerError(
                    f"timed out after {timeout} s waiting for {what}: {problem}"
                )
            time.sleep(0.05)

    # --- what the cluster looks like -------------------------------------------------

    def view(self, node: LocalClusterNode) -> dict[str, NodeLine]:
        """CLUSTER NODES as ``node`` sees it, by node id."""
        text = _call_str(node.port, "CLUSTER", "NODES", timeout=2)
        lines = (NodeLine.parse(line) for line in text.splitlines() if line.strip())
        return {line.node_id: line for line in lines}

    def node_by_id(self, node_id: str) -> LocalClusterNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    def _owners(self) -> list[tuple[int, int, str]]:
        """Slot ranges and the master id serving them, as most running nodes see
        them (they agree once the cluster is healthy)."""
        votes: Counter[tuple[tuple[int, int, str], ...]] = Counter()
        for node in self.nodes:
            if not node.alive:
                continue
            with contextlib.suppress(OSError, ServerError):
                ranges = [
                    (first, last, line.node_id)
                    for line in self.view(node).values()
                    if line.is_master
                    for first, last in line.slots
                ]
                votes[tuple(sorted(ranges))] += 1
        if not votes:
            raise ServerError("no node of the cluster answers")
        return list(votes.most_common(1)[0][0])

    def current_masters(self) -> list[LocalClusterNode]:
        """The masters serving slots, in the order of their first slot."""
        ordered: list[LocalClusterNode] = []
        for _first, _last, node_id in self._owners():
            node = self.node_by_id(node_id)
            if node not in ordered:
                ordered.append(node)
        return ordered

    def master_for(self, slot: int) -> LocalClusterNode:
        """The master currently serving ``slot``."""
        for first, last, node_id in self._owners():
            if first <= slot <= last:
                return self.node_by_id(node_id)
        raise ServerError(f"slot {slot} is not served")

    def master_for_key(self, key: str | bytes) -> LocalClusterNode:
        return self.master_for(key_slot(key.encode() if isinstance(key, str) else key))

    def role(self, node: LocalClusterNode) -> str:
        """``master`` or ``slave``, as ``node`` itself says (INFO replication)."""
        return _fields(_call_str(node.port, "INFO", "replication"))["role"]

    def replicas_of(self, master: LocalClusterNode) -> list[LocalClusterNode]:
        """Running nodes that replicate ``master``, as ``master`` sees them."""
        view = self.view(master)
        return [
            self.node_by_id(line.node_id)
            for line in view.values()
            if line.master_id == master.node_id and not line.failing
        ]

    # --- health ----------------------------------------------------------------------

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every running node says cluster_state:ok, agrees on who
        serves each of the 16384 slots (a running master, none flagged failing),
        sees every other running node as up, and every running replica is in sync
        with its master (master_link_status:up)."""
        self._wait(self._health_problem, timeout, "a healthy cluster")

    def _health_problem(self) -> str | None:
        alive = [node for node in self.nodes if node.alive]
        alive_ids = {node.node_id for node in alive}
        reference: list[tuple[int, int, str]] | None = None
        for node in alive:
            info = _fields(_call_str(node.port, "CLUSTER", "INFO", timeout=2))
            if info.get("cluster_state") != "ok":
                return f"{node}: cluster_state {info.get('cluster_state')}"
            view = self.view(node)
            for line in view.values():
                if line.node_id in alive_ids and line.failing:
                    return f"{node} sees {line.node_id[:8]} as failing"
            ranges = sorted(
                (first, last, line.node_id)
                for line in view.values()
                if line.is_master
                for first, last in line.slots
            )
            if sum(last - first + 1 for first, last, _ in ranges) != SLOTS:
                return f"{node} does not see all {SLOTS} slots served"
            for first, _last, owner in ranges:
                if owner not in alive_ids:
                    return f"{node}: slot {first} is served by a stopped node"
            if reference is None:
                reference = ranges
            elif ranges != reference:
                return f"{node} disagrees about which master serves which slots"
            me = next(line for line in view.values() if "myself" in line.flags)
            if not me.is_master:
                if me.master_id not in alive_ids:
                    return f"{node} replicates a stopped node"
                repl = _fields(_call_str(node.port, "INFO", "replication", timeout=2))
                if repl.get("master_link_status") != "up":
                    return f"{node}: link to its master is down"
                if repl.get("master_sync_in_progress", "0") != "0":
                    return f"{node}: sync with its master in progress"
        return None

    # --- faults --------------------------------------------------------------------

    def kill_node(
        self, node: LocalClusterNode, sig: int = signal.SIGKILL
    ) -> LocalClusterNode:
        """Signal one node (SIGKILL: a crash) and wait until it has exited."""
        if node.proc is None or node.proc.poll() is not None:
            raise ServerError(f"{node} is not running")
        node.proc.send_signal(sig)
        node.proc.wait(30)
        return node

    def kill_master(
        self,
        index: int | None = None,
        *,
        slot: int | None = None,
        key: str | bytes | None = None,
    ) -> LocalClusterNode:
        """SIGKILL the master currently serving ``slot`` (or ``key``'s slot), or
        the ``index``-th master in the order of their first slot (0: the one
        serving slot 0); return the node killed. Its replica takes over after the
        node timeout (see :meth:`wait_healthy`)."""
        if sum(arg is not None for arg in (index, slot, key)) != 1:
            raise ValueError("pass exactly one of index, slot and key")
        if key is not None:
            target = self.master_for_key(key)
        elif slot is not None:
            target = self.master_for(slot)
        else:
            assert index is not None
            target = self.current_masters()[index]
        return self.kill_node(target)

    def restart_node(self, node: LocalClusterNode, timeout: float = 60.0) -> None:
        """Start a stopped node again on its ports, with its data and nodes.conf,
        and wait until the cluster is healthy with it. An old master whose slots
        were taken over comes back as a replica of the replica that replaced it."""
        if node.alive:
            raise ServerError(f"{node} is running")
        self._launch([node], new_ports=False)
        self.wait_healthy(timeout)

    def revive(self, timeout: float = 60.0) -> None:
        """Restart every stopped node (see :meth:`restart_node`)."""
        stopped = [node for node in self.nodes if not node.alive]
        if stopped:
            self._launch(stopped, new_ports=False)
        self.wait_healthy(timeout)

    def flushall(self) -> None:
        """Empty every master (their replicas follow)."""
        for node in self.current_masters():
            call(node.port, "FLUSHALL", "SYNC")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m eventflow.local.cluster",
        description="Run a local Redis Cluster until Ctrl-C (the folder is wiped).",
    )
    parser.add_argument("dir", type=Path, help="data folder")
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1, help="per master")
    parser.add_argument("--node-timeout-ms", type=int, default=1500)
    args = parser.parse_args(argv)
    cluster = LocalRedisCluster(
        args.dir.resolve(),
        masters=args.masters,
        replicas_per_master=args.replicas,
        node_timeout_ms=args.node_timeout_ms,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    started = time.monotonic()
    try:
        url = cluster.start()
        print(f"cluster ready in {time.monotonic() - started:.1f} s", flush=True)
        for node in cluster.nodes:
            print(f"  {node}: {cluster.role(node)}", flush=True)
        print(url, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
