"""Machinery of the reliability tests: the profile, process accounting, platforms of real
processes, network namespaces, a private PostgreSQL cluster and the secret scanner.

Profiles: the quick one runs in `make test`; `make soak` sets IAC_SOAK=1, which raises every
size (runs, lines, fuzz examples, restarts) through `size(quick, soak)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gzip
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.backend.platform import TOKEN, Backend, sse_events
from tests.conftest import skip_unless_strict
from tests.procs import RunnerProcess, free_port, start_runner

SOAK = os.environ.get("IAC_SOAK", "") not in ("", "0")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def size(quick: int, soak: int) -> int:
    """A size of the quick profile, or of the soak profile under IAC_SOAK=1."""
    return soak if SOAK else quick


class Counter:
    """What the reliability tests did, summed over a session and printed at its end."""

    totals: dict[str, int] = {}  # one process-wide tally

    @classmethod
    def add(cls, what: str, n: int = 1) -> None:
        cls.totals[what] = cls.totals.get(what, 0) + n


# -- processes ------------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def parent_of(pid: int) -> int:
    return int(_stat(pid)[1])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def ancestors(pid: int) -> list[int]:
    """`pid`'s parent, grandparent, ... up to (not including) pid 1."""
    chain = []
    with contextlib.suppress(OSError, ValueError, IndexError):
        while True:
            pid = parent_of(pid)
            if pid <= 1:
                break
            chain.append(pid)
    return chain


def descendants(pid: int) -> list[int]:
    """Every living (non-zombie) process below `pid`."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = _stat(int(entry.name))
        except (OSError, IndexError):
            continue
        if stat[0] != "Z":
            children.setdefault(int(stat[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def fd_targets(pid: int) -> list[str]:
    """What each open file descriptor of `pid` points at (sockets, pipes, files)."""
    out = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            out.append(os.readlink(fd))
    return sorted(out)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Footprint:
    """Open file descriptors and child processes of a server process."""

    fds: list[str]
    children: list[str]

    @classmethod
    def of(cls, pid: int) -> Footprint:
        return cls(fd_targets(pid), sorted(cmdline(p) for p in descendants(pid)))

    def within(self, baseline: Footprint) -> bool:
        return len(self.fds) <= len(baseline.fds) and len(self.children) <= len(baseline.children)


# -- platform: runner servers and backends on any address -----------------------------------


def start_server(tmp: Path, env: dict[str, str], name: str, *args: str, **kw: Any) -> RunnerProcess:
    """A runner server with the short grace and drain periods these tests want."""
    return start_runner(tmp, env, "--grace", "2", "--drain-timeout", "5", *args, name=name, **kw)


def lines_config(tag: str, n: int, pause: str = "0", width: int = 0, extra: str = "") -> str:
    """A configuration whose apply prints `L-<tag>-1` .. `L-<tag>-<n>` from a local-exec
    loop, each line padded to about `width` bytes, `pause` seconds apart."""
    pad = "x" * width
    body = f"echo L-{tag}-$i {pad}" if width else f"echo L-{tag}-$i"
    if pause != "0":
        body += f"; sleep {pause}"
    return (
        'resource "terraform_data" "lines" {\n'
        '  provisioner "local-exec" {\n'
        f'    command = "for i in $(seq 1 {n}); do {body}{extra}; done"\n'
        "  }\n"
        "}\n"
    )


def tagged(lines: list[str], tag: str) -> list[int]:
    """The numbers of the `L-<tag>-N` lines among `lines`, in order."""
    pattern = re.compile(rf"\(local-exec\): L-{re.escape(tag)}-(\d+)\b")
    found = (pattern.search(ANSI.sub("", line)) for line in lines)
    return [int(m.group(1)) for m in found if m]


def run_lines_once(backend: Backend, run: dict[str, Any], tag: str, n: int) -> list[str]:
    """Assert that the stored log of a finished run has every line once, seq by seq, and
    the `L-<tag>-1..n` lines once each in order. Returns the stored lines."""
    response = backend.client.get(f"/runs/{run['id']}/logs")
    assert response.status_code == 200, response.text
    stored = response.text.splitlines()
    assert len(stored) == run["last_seq"] == int(response.headers["X-Last-Seq"]), (
        len(stored),
        run["last_seq"],
    )
    assert tagged(stored, tag) == list(range(1, n + 1)), stored
    Counter.add("log lines checked (store)", len(stored))
    return stored


@dataclass
class Follower:
    """An SSE follower of one run in a thread: collects (seq, text) until the `end` event."""

    backend: Backend
    run_id: int
    received: list[tuple[int, str]] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    ended: float = 0.0
    reconnects: int = 0
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> Follower:
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()
        return self

    def _follow(self) -> None:
        """Follow to the end; a dropped connection (a backend or database restart) is
        resumed with Last-Event-ID, as every client should."""
        attempts = 0
        while True:
            try:
                if self._stream():
                    self.ended = time.monotonic()
                    return
            except (httpx.HTTPError, AssertionError) as exc:
                attempts += 1
                self.reconnects += 1
                if attempts > 60:
                    self.error = exc
                    return
                time.sleep(0.5)  # back-off before reconnecting, as a client would
            except BaseException as exc:  # reported by join()
                self.error = exc
                return

    def _stream(self) -> bool:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        if self.received:
            headers["Last-Event-ID"] = str(self.received[-1][0])
        with (
            httpx.Client(
                base_url=self.backend.url + "/api/v1",
                headers=headers,
                timeout=httpx.Timeout(30, read=300),
            ) as client,
            client.stream(
                "GET", f"/runs/{self.run_id}/logs", params={"follow": "true"}
            ) as response,
        ):
            assert response.status_code == 200, (response.status_code, response.read())
            for event, _, data in sse_events(response):
                if event == "message":
                    first = int(data["seq"])
                    self.received += [
                        (first + i, t) for i, t in enumerate(data["text"].split("\n"))
                    ]
                elif event == "status":
                    self.statuses.append(data["status"])
                elif event == "end":
                    return True
        return False

    def join(self, timeout: float = 300) -> list[tuple[int, str]]:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"SSE follower of run {self.run_id} is stuck"
        if self.error is not None:
            raise self.error
        return self.received

    def check(self, stored: list[str]) -> None:
        """Every line once, in seq order, and the same lines as the store."""
        seqs = [s for s, _ in self.received]
        assert seqs == list(range(1, len(stored) + 1)), (seqs[:20], len(stored))
        assert [t for _, t in self.received] == stored
        Counter.add("log lines checked (SSE)", len(seqs))


class SlowReader:
    """A raw-socket SSE client that reads one line per second, with a tiny receive buffer:
    the slowest follower a server can have short of a dead one."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, port))
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.lines: list[bytes] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                byte = self.sock.recv(1)
            except OSError:
                return
            if not byte:
                return
            buf += byte
            if byte == b"\n":
                self.lines.append(buf)
                buf = b""
                self._stop.wait(1.0)  # the slowness itself: one line per second

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(10)


def metric(backend: Backend, name: str) -> float:
    text = httpx.get(backend.url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not found")


# -- network namespaces ---------------------------------------------------------------------


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def require_netns() -> None:
    """Skip the calling test, with the reason, where network namespaces cannot be made."""
    if shutil.which("ip") is None:
        skip_unless_strict("network namespaces: the `ip` command (iproute2) is not installed")
    probe = f"iacprobe{os.getpid()}"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        skip_unless_strict(f"network namespaces cannot be created here: {made.stderr.strip()}")
    ip("netns", "del", probe, check=False)


@dataclass
class Host:
    """A runner host: a network namespace plugged into the test's bridge by a veth cable."""

    netns: str
    cable: str  # the root-side end of the veth: set it down to cut the host's link
    address: str


class Network:
    """A bridge (the switch) in the root namespace, and hosts in namespaces of their own.

    Addresses are 10.200.X.0/24 with X taken from the pid, so two test sessions on one
    machine do not collide; nothing routes them anywhere but between these interfaces.
    """

    def __init__(self) -> None:
        self.tag = f"{os.getpid() % 100000}"
        self.subnet = 10 + os.getpid() % 240
        self.bridge = f"irb{self.tag}"
        self.gateway = f"10.200.{self.subnet}.1"
        self.hosts: list[Host] = []
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add_host(self) -> Host:
        n = len(self.hosts) + 1
        ns = f"iacrel-{self.tag}-{n}"
        cable, inner = f"irv{self.tag}{n}", f"irp{self.tag}{n}"
        address = f"10.200.{self.subnet}.{10 + n}"
        ip("netns", "add", ns)
        host = Host(ns, cable, address)
        self.hosts.append(host)
        ip("link", "add", cable, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", ns)
        ip("link", "set", cable, "master", self.bridge)
        ip("link", "set", cable, "up")
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", inner)
        ip("-n", ns, "link", "set", inner, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        return host

    def cut(self, host: Host) -> None:
        ip("link", "set", host.cable, "down")
        Counter.add("faults injected")

    def mend(self, host: Host) -> None:
        ip("link", "set", host.cable, "up")
        ip("link", "set", host.cable, "master", self.bridge)

    def close(self) -> None:
        for host in self.hosts:
            ip("link", "del", host.cable, check=False)
            ip("netns", "del", host.netns, check=False)
        ip("link", "del", self.bridge, check=False)


def established_to(address: str, port: int) -> bool:
    """Whether any TCP connection of the root namespace to address:port is established
    (over IPv4, or IPv6 with the v4-mapped address, as gRPC's dual-stack sockets do)."""
    word = "{:08X}".format(int.from_bytes(socket.inet_aton(address), "little"))
    wanted = {f"{word}:{port:04X}", f"0000000000000000FFFF0000{word}:{port:04X}"}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[2] in wanted and fields[3] == "01":
                return True
    return False


_CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def inside_netns(name: str) -> Iterator[None]:
    """Run the block's new sockets inside namespace `name` (setns on this thread only)."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{name}") as target:
        if libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name} failed")
        try:
            yield
        finally:
            if libc.setns(home.fileno(), _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back home failed")


# -- a private PostgreSQL cluster -------------------------------------------------------------


class PrivatePostgres:
    """A throw-away PostgreSQL cluster of the installed server, on its own port and socket
    directory, that a test may restart or stop without touching anybody else's database."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins or os.geteuid() != 0 or shutil.which("runuser") is None:
            skip_unless_strict("a private PostgreSQL cluster needs root, runuser and initdb")
        self.bin = bins[-1].parent
        # Outside pytest's 0700 tmp directories: the postgres user must reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="iac-rel-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin / tool), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def _ctl(self, action: str, *args: str) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg(
            "pg_ctl", action, "-D", str(self.data), "-w", "-l", str(self.dir / "log"), "-o",
            options, *args,
        )  # fmt: skip

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")
        Counter.add("faults injected")

    def running(self) -> bool:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "status", "-D",
             str(self.data)],
            capture_output=True,
            check=False,
        ).returncode == 0  # fmt: skip

    def close(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self._pg("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        shutil.rmtree(self.dir, ignore_errors=True)


# -- secrets ------------------------------------------------------------------------------


def _expand(blob: bytes) -> list[bytes]:
    """`blob` and what compressed containers inside it hold (gzip, zip, tar.gz)."""
    out = [blob]
    if blob[:2] == b"\x1f\x8b":
        with contextlib.suppress(OSError, EOFError):
            out += _expand(gzip.decompress(blob))
    if blob[:4] == b"PK\x03\x04":
        with contextlib.suppress(zipfile.BadZipFile), zipfile.ZipFile(io.BytesIO(blob)) as z:
            for name in z.namelist():
                out += _expand(z.read(name))
    return out


async def _dump(url: str) -> dict[str, list[bytes]]:
    from sqlalchemy import LargeBinary, String, Text, select
    from sqlalchemy.types import JSON

    from backend.db import Database
    from backend.models import Base

    db = Database(url)
    found: dict[str, list[bytes]] = {}
    try:
        async with db.session() as session:
            for table in Base.metadata.sorted_tables:
                for column in table.columns:
                    if not isinstance(column.type, String | Text | LargeBinary | JSON):
                        continue
                    values = (await session.execute(select(column))).scalars().all()
                    key = f"{table.name}.{column.name}"
                    for value in values:
                        if value is None:
                            continue
                        if isinstance(value, bytes):
                            blob = value
                        elif isinstance(value, str):
                            blob = value.encode()
                        else:
                            blob = json.dumps(value).encode()
                        found.setdefault(key, []).extend(_expand(blob))
    finally:
        await db.dispose()
    return found


def columns_holding(url: str, secret: str) -> list[str]:
    """The `table.column`s of the backend database where `secret` appears in plaintext
    (also inside compressed values: plan files are zips, archives tar.gz)."""
    needle = secret.encode()
    dump = asyncio.run(_dump(url))
    Counter.add("database values scanned", sum(len(v) for v in dump.values()))
    return sorted(key for key, blobs in dump.items() if any(needle in b for b in blobs))
