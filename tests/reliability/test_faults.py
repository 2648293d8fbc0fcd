"""Faults during backend runs: a process killed, the database restarted, the disk full.

Each test injects a real fault into real processes (backend, runner servers, iac-runner,
terraform, PostgreSQL) and asserts that the run ends with a reason, that no state lock is
left behind, that no line of the log is lost or doubled, and that the service goes on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protos.iacrunner.v1 import runner_pb2 as pb
from protos.iacrunner.v1 import runner_pb2_grpc as pb_grpc
from tests.backend.platform import Backend, start_backend
from tests.conftest import IAC_RUNNER, pids_matching, skip_unless_strict, wait_for
from tests.procs import RunnerProcess
from tests.reliability.harness import (
    Counter,
    Follower,
    PrivatePostgres,
    ancestors,
    cmdline,
    lines_config,
    run_lines_once,
    size,
    start_server,
)

TERMINAL = ("succeeded", "failed", "canceled", "timed_out")


def long_config(marker: str) -> str:
    return (
        'resource "terraform_data" "slow" {\n'
        '  provisioner "local-exec" {\n'
        f'    command = "echo started; sleep {marker}"\n'
        "  }\n"
        "}\n"
    )


def kill_target(marker: str, victim: str) -> int:
    """The pid of `victim` ("terraform" or "iac-runner") above the `sleep <marker>` that a
    run's local-exec started: sleep <- sh <- terraform <- iac-runner --stream."""
    sleeper = [p for p in pids_matching(f"sleep {marker}") if cmdline(p).startswith("sleep")]
    assert len(sleeper) == 1, sleeper
    for pid in ancestors(sleeper[0]):
        line = cmdline(pid)
        if victim == "terraform" and line.split(" ", 1)[0].endswith("terraform"):
            return pid
        if victim == "iac-runner" and "iac-runner --stream" in line:
            return pid
    raise AssertionError(f"no {victim} above sleep {marker}: {ancestors(sleeper[0])}")


@pytest.mark.parametrize(
    ("victim", "reason"),
    [
        ("iac-runner", "iac-runner ended without a result (killed by SIGKILL)"),
        ("terraform", "terraform was killed by signal SIGKILL"),
    ],
)
def test_sigkill_of_iac_runner_or_terraform_mid_apply_fails_the_run_with_the_reason(
    platform: tuple[Backend, RunnerProcess], victim: str, reason: str
) -> None:
    backend, runner = platform
    marker = f"73.{os.getpid() % 10000:04d}{len(victim)}"
    name = f"kill-{victim}"
    backend.deploy(name, {"main.tf": long_config(marker)}, required_labels={"provider": "aws"})
    run = backend.start(name, "apply", auto_approve=True)
    wait_for(lambda: pids_matching(f"sleep {marker}"), timeout=120)
    assert backend.call("GET", f"/deployments/{name}/state", 200)["lock"]["run_id"] == run["id"]

    os.kill(kill_target(marker, victim), signal.SIGKILL)
    Counter.add("faults injected")
    killed = time.monotonic()
    run = backend.wait(run["id"], *TERMINAL, timeout=60)
    noticed = time.monotonic() - killed

    assert run["status"] == "failed", run
    assert reason in run["error_msg"], run["error_msg"]
    assert noticed < 15, f"the backend took {noticed:.1f} s to end the run"
    kinds = [e["kind"] for e in run["events"]]
    assert "state_lock_released" in kinds, kinds
    assert backend.call("GET", f"/deployments/{name}/state", 200)["lock"] is None
    # Nothing of the run survives on the runner host: the guard killed the tool's group.
    wait_for(lambda: not pids_matching(f"sleep {marker}"), timeout=10)
    # The deployment takes the next run, on the same runner.
    backend.call(
        "POST",
        f"/deployments/{name}/config",
        201,
        content=_tar({"main.tf": 'resource "terraform_data" "x" {}\n'}),
        headers={"Content-Type": "application/gzip"},
    )
    again = backend.wait(backend.start(name, "apply", auto_approve=True)["id"], *TERMINAL)
    assert again["status"] == "succeeded", again
    assert again["runner_id"] == runner.name


def _tar(files: dict[str, str]) -> bytes:
    from tests.backend.archives import tar_gz

    return tar_gz(files)


# -- PostgreSQL restarted while runs stream ----------------------------------------------------


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        yield server
    finally:
        if not server.running():
            server.start()
        server.close()


def _chunk_ranges(url: str) -> dict[int, list[tuple[int, int]]]:
    import asyncio

    import asyncpg  # type: ignore[import-untyped]

    async def read() -> dict[int, list[tuple[int, int]]]:
        conn = await asyncpg.connect(url.replace("postgresql://", "postgres://"), timeout=10)
        try:
            rows = await conn.fetch(
                "SELECT run_id, first_seq, last_seq FROM log_chunks ORDER BY run_id, first_seq"
            )
        finally:
            await conn.close()
        out: dict[int, list[tuple[int, int]]] = {}
        for row in rows:
            out.setdefault(row["run_id"], []).append((row["first_seq"], row["last_seq"]))
        return out

    return asyncio.run(read())


def test_postgresql_restart_while_runs_stream_loses_and_doubles_nothing(
    rel_env: dict[str, str], tmp_path: Path, private_pg: PrivatePostgres
) -> None:
    """The backend's database (a private cluster, so no other test's database is touched)
    is restarted while runs stream their logs: every run still ends, none is left running,
    and every stored chunk follows the previous one with no gap and no overlap."""
    runs_n, lines_n, restarts = size(3, 6), size(60, 150), size(1, 3)
    runner = start_server(tmp_path, rel_env, "pg-runner", "--max-concurrent", "8")
    backend = start_backend(tmp_path, rel_env, private_pg.url, IAC_RUNNER_LOST_TIMEOUT="10")
    try:
        backend.register("pg-runner", runner.address)
        backend.wait_runners_healthy("pg-runner")
        runs, followers = [], []
        for i in range(runs_n):
            backend.deploy(f"pg-{i}", {"main.tf": lines_config(f"pg{i}", lines_n, "0.05")})
            run = backend.start(f"pg-{i}", "apply", auto_approve=True)
            runs.append(run)
            followers.append(Follower(backend, run["id"]).start())
        # Once while the runs are dispatched, initialised and planned (between steps),
        private_pg.restart()
        for k in range(restarts):
            # then while every run is in the middle of its loop.
            step = (k + 1) * lines_n // (restarts + 1)

            def printed(step: int = step) -> bool:
                return all(
                    any(f"L-pg{i}-{step}" in t for _, t in f.received)
                    for i, f in enumerate(followers)
                )

            try:
                wait_for(printed, timeout=180)
            except AssertionError:
                raise AssertionError([backend.run(r["id"]) for r in runs]) from None
            private_pg.restart()
        done = [backend.wait(r["id"], *TERMINAL, timeout=240) for r in runs]
        assert [r["status"] for r in done] == ["succeeded"] * runs_n, [
            (r["status"], r["error_msg"]) for r in done
        ]
        assert backend.call("GET", "/runs", 200, params={"status": "running"}) == []
        ranges = _chunk_ranges(private_pg.url)
        for i, run in enumerate(done):
            stored = run_lines_once(backend, run, f"pg{i}", lines_n)
            chunks = ranges[run["id"]]
            assert chunks[0][0] == 1 and chunks[-1][1] == run["last_seq"], chunks
            for (_, last), (first, _) in zip(chunks, chunks[1:], strict=False):
                assert first == last + 1, f"run {run['id']}: chunks {chunks}"
            followers[i].join()
            followers[i].check(stored)
            state = backend.call("GET", f"/deployments/pg-{i}/state", 200)
            assert state["lock"] is None
    finally:
        backend.stop()
        runner.stop()


# -- disk full in the workspace root -----------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, or a skip with the reason."""
    if os.geteuid() != 0:
        skip_unless_strict("disk full: mounting a tmpfs needs root")
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        skip_unless_strict(
            f"disk full: a 1 MiB tmpfs cannot be mounted here: {made.stderr.strip()}"
        )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


FILL_CONFIG = """\
resource "terraform_data" "fill" {
  provisioner "local-exec" {
    command = "head -c 4000000 /dev/zero > filler"
  }
}
"""


def _used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_disk_full_in_the_workspace_root_is_a_clear_error_and_the_runner_goes_on(
    rel_env: dict[str, str], tmp_path: Path, tiny_disk: Path
) -> None:
    runner = start_server(tmp_path, rel_env, "tiny", workspace_root=tiny_disk)
    backend = start_backend(tmp_path, rel_env, f"sqlite:///{tmp_path / 'iac.db'}")
    try:
        backend.register("tiny", runner.address)
        backend.wait_runners_healthy("tiny")
        empty = _used(tiny_disk)

        # 1. The configuration does not fit: unpacking it fails.
        big = os.urandom(1536 * 1024).hex()[: 1536 * 1024]
        backend.deploy(
            "too-big", {"main.tf": 'resource "terraform_data" "x" {}\n', "blob.txt": big}
        )
        run = backend.wait(backend.start("too-big", "plan")["id"], *TERMINAL, timeout=120)
        Counter.add("faults injected")
        assert run["status"] == "failed", run
        assert "No space left on device" in run["error_msg"], run["error_msg"]

        # 2. terraform itself fills the disk during the apply.
        backend.deploy("filler", {"main.tf": FILL_CONFIG})
        run = backend.wait(
            backend.start("filler", "apply", auto_approve=True)["id"], *TERMINAL, timeout=120
        )
        Counter.add("faults injected")
        assert run["status"] == "failed", run
        log = backend.log_text(run["id"])
        assert "No space left on device" in log, (run["error_msg"], log)
        assert backend.call("GET", "/deployments/filler/state", 200)["lock"] is None

        # 3. The runner server is alive, holds no slot, and left nothing behind.
        assert runner.proc.poll() is None
        wait_for(lambda: _used(tiny_disk) <= empty, timeout=30)
        channel = grpc.insecure_channel(runner.address)
        try:
            info = pb_grpc.RunnerStub(channel).GetInfo(pb.GetInfoRequest(), timeout=10)
        finally:
            channel.close()
        assert info.active == 0
        assert "Traceback" not in runner.log.read_text()
        assert "Traceback" not in backend.log.read_text()

        # 4. A run that fits succeeds on the same runner.
        backend.deploy("fits", {"main.tf": 'resource "terraform_data" "x" {}\n'})
        run = backend.wait(backend.start("fits", "apply", auto_approve=True)["id"], *TERMINAL)
        assert run["status"] == "succeeded", run
    finally:
        backend.stop()
        runner.stop()


def test_disk_full_through_stdio_is_a_clear_error(
    rel_env: dict[str, str], tmp_path: Path, tiny_disk: Path
) -> None:
    work = tiny_disk / "w"
    work.mkdir()
    (work / "main.tf").write_text(FILL_CONFIG)
    answers = []
    for command in ("init", "apply"):
        proc = subprocess.run(
            [IAC_RUNNER, "--workspace-root", str(tiny_disk)],
            input=json.dumps(
                {"tool": "terraform", "command": command, "work_dir": "w", "args": ["-no-color"]}
                | ({"args": ["-auto-approve", "-no-color"]} if command == "apply" else {})
            ).encode(),
            capture_output=True,
            env=rel_env,
            timeout=120,
            check=False,
        )
        assert b"Traceback" not in proc.stderr + proc.stdout
        answers.append((proc.returncode, json.loads(proc.stdout)))
    Counter.add("faults injected")
    assert answers[0][0] == 0, answers[0]
    status, answer = answers[1]
    assert status == 1 and answer["success"] is False, answer
    assert "terraform apply exited with code 1" in answer["error_msg"]
    assert "No space left on device" in answer["output"], answer["output"]
