"""What every benchmark shares: sizes, a clean environment, real processes, timing, rows.

Processes are the project's own executables from this venv, on 127.0.0.1 ephemeral
ports: `iac-runner-server` and `iac-backend`. The tool they run is real terraform, or
bench/producer.py (through IAC_RUNNER_TERRAFORM_BIN) when a benchmark needs exact output.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from protos.iacrunner.v1 import runner_pb2 as pb
from protos.iacrunner.v1 import runner_pb2_grpc as pb_grpc
from tests import procs
from tests.backend import platform
from tests.backend.archives import tar_gz
from tests.backend.platform import TOKEN as API_TOKEN
from tests.backend.platform import Backend
from tests.procs import RunnerProcess as RunnerServer
from tests.procs import stop_process

__all__ = ["API_TOKEN", "Backend", "RunnerServer", "stop_process", "tar_gz"]

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
PRODUCER_SOURCE = Path(__file__).parent / "producer.py"
# A configuration with no resources and no providers: the cheapest plan there is.
EMPTY_CONFIG = 'terraform {\n  required_version = ">= 1.5"\n}\n'
PG_HOST, PG_PORT, PG_USER, PG_ADMIN_DB = "127.0.0.1", 5432, "postgres", "test"


# -- sizes -------------------------------------------------------------------------------
@dataclass
class Sizes:
    lines: int = 1_000_000  # figures 1, 4 and 5: lines of the big stream
    per_line_lines: int = 20_000  # figure 1: the one-message-per-line relay (~10-20 k/s)
    repeat: int = 3  # figures 1 and 5: alternating repetitions, the median is kept
    samples: int = 30  # figure 2: measured repetitions per command
    warmup: int = 1  # figure 2: unmeasured rounds first
    latency_lines: int = 100  # figure 3: lines printed 100 ms apart
    memory_small: int = 250_000  # figure 4: the second size, to show flatness
    runs: int = 500  # figure 6: queued runs
    scaling_runners: tuple[int, ...] = (1, 2, 4)  # figure 7
    scaling_runs: tuple[int, ...] = (100, 500, 2000)  # figure 7 (the whole grid: --large)
    queue_depths: tuple[int, int] = (100, 10_000)  # figure 9: baseline and project
    queue_samples: int = 20  # figure 9: plans behind each queue
    pool_runners: int = 50  # figure 10: idle runner servers registered
    pool_window: float = 60.0  # figure 10: seconds the idle backend's CPU is measured
    scale_out_runs: int = 2000  # figure 11 (--large): queued runs over 4 runners
    scale_out_backends: int = 3  # figure 11: backends sharing one PostgreSQL
    scale_out_per_runner: int = 50  # figure 11: no-op plans per runner at 1, 2 and 4 runners
    scale_out_waiting_per_runner: int = 12  # figure 11: waiting applies per runner, likewise
    failover_lines: int = 60  # figure 11: lines of the apply whose backend is killed


SCALES: dict[str, Sizes] = {
    # A smoke run of every benchmark (tests/test_bench_smoke.py): numbers, not figures.
    "small": Sizes(
        lines=5_000,
        per_line_lines=500,
        repeat=1,
        samples=2,
        warmup=0,
        latency_lines=3,
        memory_small=2_000,
        runs=2,
        scaling_runners=(1,),
        scaling_runs=(2,),
        queue_depths=(20, 100),
        queue_samples=2,
        pool_runners=3,
        pool_window=2.0,
        scale_out_runs=8,
        scale_out_per_runner=2,
        scale_out_waiting_per_runner=1,
        failover_lines=30,
    ),
    "default": Sizes(),
}


# -- environment ---------------------------------------------------------------------------
def clean_env(tmp: Path) -> dict[str, str]:
    """The environment every process of the benchmark gets, whatever the machine's is:
    PATH (to find terraform), HOME, a UTF-8 locale, an empty terraform CLI config, no
    checkpoint calls. No PYTHON* variables: bytecode is cached, as in an installation."""
    rc = tmp / "empty.tfrc"
    rc.write_text("")
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(tmp),
        "LANG": "C.UTF-8",
        "TMPDIR": str(tmp),
        "TF_CLI_CONFIG_FILE": str(rc),
        "CHECKPOINT_DISABLE": "1",
    }
    return env


def make_producer(directory: Path) -> str:
    """An executable copy of bench/producer.py run by this interpreter (a fake terraform)."""
    path = directory / "fake-terraform"
    if not path.exists():
        path.write_text(f"#!{sys.executable}\n{PRODUCER_SOURCE.read_text()}")
        path.chmod(0o755)
    return str(path)


# -- processes ---------------------------------------------------------------------------
# The same real processes as the end-to-end tests start (tests/procs.py and
# tests/backend/platform.py); what only the benchmarks need is here.
def start_runner(
    tmp: Path, env: dict[str, str], name: str, *args: str, tool: str = ""
) -> RunnerServer:
    """Start `iac-runner-server --listen 127.0.0.1:0` and wait for the port it reports.
    `tool`: the terraform binary (IAC_RUNNER_TERRAFORM_BIN), default terraform on PATH."""
    server_env = {**env, "IAC_RUNNER_TERRAFORM_BIN": tool} if tool else env
    return procs.start_runner(tmp, server_env, *args, name=name)


def start_backend(tmp: Path, env: dict[str, str], db_url: str, name: str = "backend") -> Backend:
    """Start `iac-backend serve` on a free port, with the product's default settings."""
    return platform.start_backend(tmp, env, db_url, name=name, poll_interval=None)


def register(backend: Backend, servers: list[RunnerServer], timeout: float = 30) -> None:
    """Register the runner servers with the backend and wait until it sees them healthy."""
    for server in servers:
        backend.register(server.name, server.address)
    backend.wait_runners_healthy(*(s.name for s in servers), timeout=timeout)


TERMINAL = ("succeeded", "failed", "canceled", "timed_out")
QUEUED_LIMIT = 30.0  # seconds a run of an idle pool may stay queued before we give up


def wait_run(
    backend: Backend,
    run_id: int,
    timeout: float = 600,
    interval: float = 0.02,
    stop_at: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Poll the run until it ends (or reaches a status of `stop_at`); fail if it is still
    queued after QUEUED_LIMIT s."""
    start = time.monotonic()
    while True:
        run = backend.run(run_id)
        if run["status"] in TERMINAL or run["status"] in stop_at:
            return run
        waited = time.monotonic() - start
        if run["status"] == "queued" and waited > QUEUED_LIMIT:
            raise RuntimeError(f"run {run_id} still queued: {run['wait_reason']}")
        if waited > timeout:
            raise RuntimeError(f"run {run_id} still {run['status']} after {timeout} s")
        time.sleep(interval)


def sqlite_url(tmp: Path, name: str) -> str:
    return f"sqlite:///{tmp / (name + '.db')}"


async def _pg_admin(sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, database=PG_ADMIN_DB, timeout=5
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database iac_bench_<hex> on the local PostgreSQL, dropped afterwards."""
    name = f"iac_bench_{secrets.token_hex(6)}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# -- runner calls ----------------------------------------------------------------------------
def execute_request(**fields: Any) -> Any:
    fields.setdefault("tool", "terraform")
    return pb.ExecuteRequest(**fields)


def output_span(output: Any) -> tuple[int, int]:
    """(first seq, number of lines) of an Output batch: text blocks (packed_output) or
    one Line per line. Checks that its blocks follow each other with no gap."""
    if not output.blocks:
        return output.lines[0].seq, len(output.lines)
    first = output.blocks[0].first_seq
    count = 0
    for block in output.blocks:
        if block.first_seq != first + count:
            raise RuntimeError(f"block at seq {block.first_seq}, {first + count} expected")
        count += block.text.count("\n") + 1
    return first, count


def output_texts(output: Any) -> list[str]:
    """The lines of an Output batch, either form."""
    if output.blocks:
        return [text for block in output.blocks for text in block.text.split("\n")]
    return [line.text for line in output.lines]


def execute(stub: Any, **fields: Any) -> tuple[int, Any]:
    """One Execute, to its end: (lines received, result)."""
    lines = 0
    result = None
    for event in stub.Execute(execute_request(**fields)):
        kind = event.WhichOneof("event")
        if kind == "output":
            lines += output_span(event.output)[1]
        elif kind == "result":
            result = event.result
    if result is None:
        raise RuntimeError("Execute ended without a result")
    return lines, result


def runner_stub(channel: grpc.Channel) -> Any:
    return pb_grpc.RunnerStub(channel)


# -- measuring ---------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between the closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of fn takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def pipe_lines(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[int, float]:
    """The baseline reader: a Python parent reading the child's stdout pipe line by line.
    Returns (lines, seconds from spawn to the child's exit)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, cwd=cwd)
    assert proc.stdout is not None
    count = 0
    for _ in proc.stdout:
        count += 1
    proc.wait()
    return count, time.perf_counter() - start


def read_status_kb(pid: int, key: str) -> int:
    """A `key:` value (kB) of /proc/<pid>/status, 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process `pid` has used (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


class PeakWatcher:
    """Polls the peak RSS (VmHWM, a high-water mark kept by the kernel) of named processes,
    and of every `iac-runner` child of the runner servers, until stopped."""

    def __init__(self, roots: dict[str, int], runner_servers: list[int], interval: float = 0.01):
        self.roots = roots
        self.runner_servers = runner_servers
        self.interval = interval
        self.peaks_kb: dict[str, int] = dict.fromkeys(roots, 0)
        self.peaks_kb["iac-runner"] = 0
        self.runner_pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> PeakWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        for name, pid in self.roots.items():
            self.peaks_kb[name] = max(self.peaks_kb[name], read_status_kb(pid, "VmHWM"))
        for server in self.runner_servers:
            for child in children(server):
                argv = cmdline(child)
                if len(argv) > 1 and argv[1].endswith("/iac-runner"):
                    self.runner_pids.add(child)
                    peak = read_status_kb(child, "VmHWM")
                    self.peaks_kb["iac-runner"] = max(self.peaks_kb["iac-runner"], peak)


# -- results --------------------------------------------------------------------------------
@dataclass
class Row:
    """One printed line: a figure's project number against its baseline and target."""

    figure: str
    name: str
    unit: str  # "lines/s", "ms", "MB", "runs/s"
    project: float
    baseline: float | None = None
    target: str = "-"  # as printed, e.g. ">= 0.5x"
    ok: bool | None = None  # None: for information, no target
    compare: str = ""  # the "vs baseline" column: "0.52x", "+85 ms"
    ratio: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    error: str = ""  # the benchmark could not be measured

    def __post_init__(self) -> None:
        if self.ratio is None and self.baseline:
            self.ratio = self.project / self.baseline
        if not self.compare and self.ratio is not None:
            self.compare = f"{self.ratio:.2f}x"

    @property
    def verdict(self) -> str:
        if self.error:
            return "ERROR"
        return "info" if self.ok is None else ("PASS" if self.ok else "MISS")

    def as_json(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "name": self.name,
            "unit": self.unit,
            "project": self.project,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "compare": self.compare,
            "target": self.target,
            "result": self.verdict,
            "details": self.details,
            **({"error": self.error} if self.error else {}),
        }


def fmt(value: float | None, unit: str) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    if unit in ("lines/s", "runs/s", "msg/s"):
        if value >= 1000:
            return f"{value:,.0f} {unit}"
        return f"{value:.1f} {unit}"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "% core":
        return f"{value:.1f}% core"
    if unit == "s":
        return f"{value:.1f} s"
    return f"{value:g} {unit}"


HEADER = ("fig", "benchmark", "project", "baseline", "vs baseline", "target", "result")


def table_lines(rows: list[Row]) -> list[str]:
    cells = [HEADER] + [
        (
            r.figure,
            r.name,
            fmt(r.project, r.unit),
            fmt(r.baseline, r.unit),
            r.compare or "-",
            r.target,
            r.verdict,
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    right = {2, 3, 4}
    out = []
    for c in cells:
        parts = [c[i].rjust(widths[i]) if i in right else c[i].ljust(widths[i]) for i in range(7)]
        out.append("  ".join(parts).rstrip())
    return out


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the table."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the context every benchmark gets --------------------------------------------------------
@dataclass
class Context:
    tmp: Path
    env: dict[str, str]
    sizes: Sizes
    postgres: bool = True
    large: bool = False  # figure 7 on the whole grid of runners x runs, and figure 11
    shared: dict[str, Any] = field(default_factory=dict)  # results one figure lends another

    @property
    def root(self) -> Path:
        return ROOT

    @property
    def producer(self) -> str:
        return make_producer(self.tmp)

    def scratch(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path
