"""`GET /runs/{id}/logs` as text: streamed from the store a page of chunks at a time, whole
and identical to what was stored, and in flat memory whatever the log's size."""

from __future__ import annotations

import asyncio
import hashlib
import random
from pathlib import Path

import httpx
import pytest

from backend.db import Database
from backend.logs.batch import LogBatch
from backend.models import RunStatus
from backend.store import executions
from backend.store.logs import PAGE_ROWS
from tests.backend.conftest import API_TOKEN
from tests.backend.helpers import new_deployment, start_run, upload
from tests.backend.platform import TOKEN, start_backend

pytestmark = pytest.mark.anyio


def line(seq: int, width: int = 100) -> str:
    """Line `seq` of a test log: its number first, padded to `width` characters."""
    head = f"line {seq:08d} é ✓ "
    return head + "x" * max(width - len(head), 0)


async def store_lines(db: Database, run_id: int, sizes: list[int], first: int = 1) -> list[str]:
    """Store chunks of `sizes` lines each from seq `first` on; the lines stored."""
    stored: list[str] = []
    seq = first
    async with db.session() as session:
        for n in sizes:
            lines = [line(s) if s % 17 else "" for s in range(seq, seq + n)]  # some empty
            chunk = LogBatch(seq, seq + n - 1, "\n".join(lines))
            await executions.store_chunk(session, run_id, 0, chunk)
            stored += lines
            seq += n
    return stored


def as_text(lines: list[str]) -> str:
    return "".join(text + "\n" for text in lines)


@pytest.fixture
async def run_id(client: httpx.AsyncClient, db: Database) -> int:
    await new_deployment(client, "web")
    await upload(client, "web")
    run, _ = await start_run(db, "web", RunStatus.SUCCEEDED)
    return run


async def test_a_log_of_many_chunks_downloads_whole_and_identical(
    client: httpx.AsyncClient, db: Database, run_id: int
) -> None:
    rng = random.Random(7)
    sizes = [rng.choice([1, 2, 3, 50, 400, 2000]) for _ in range(PAGE_ROWS * 12 + 5)]
    stored = await store_lines(db, run_id, sizes)
    response = await client.get(f"/api/v1/runs/{run_id}/logs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["x-last-seq"] == str(len(stored))
    assert response.text == as_text(stored)
    # From any seq: a chunk's first line, its middle, its last, the end, past the end.
    boundaries = [sum(sizes[:i]) for i in (1, 9, 40)]
    for after in [0, 1, boundaries[0], boundaries[1] - 1, boundaries[2] + 1, len(stored) - 1]:
        part = await client.get(f"/api/v1/runs/{run_id}/logs", params={"after": after})
        assert part.text == as_text(stored[after:]), after
        assert part.headers["x-last-seq"] == str(len(stored))
    beyond = await client.get(f"/api/v1/runs/{run_id}/logs", params={"after": len(stored) + 5})
    assert beyond.text == "" and beyond.headers["x-last-seq"] == str(len(stored) + 5)
    assert (await client.get("/api/v1/runs/999/logs")).status_code == 404


async def test_a_download_is_the_log_as_stored_when_it_was_asked_for(
    db: Database, run_id: int, live_url: str
) -> None:
    """Lines stored while a download is under way are not in it: the body matches its
    X-Last-Seq (a client resumes with ?after= or follows with SSE)."""
    stored = await store_lines(db, run_id, [2000] * (PAGE_ROWS * 4))
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with (
        httpx.AsyncClient(base_url=live_url, headers=headers) as http,
        http.stream("GET", f"/api/v1/runs/{run_id}/logs") as response,
    ):
        assert response.headers["x-last-seq"] == str(len(stored))
        received = bytearray()
        more: list[str] = []
        async for piece in response.aiter_bytes():
            received += piece
            if not more:
                more = await store_lines(db, run_id, [5, 5], first=len(stored) + 1)
    assert more
    assert received.decode() == as_text(stored)


def vm_hwm_kb(pid: int) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def download(url: str, run_id: int) -> tuple[int, str, int]:
    """Stream a run's log: (lines, sha256 of the text, X-Last-Seq), holding none of it."""
    digest = hashlib.sha256()
    newlines = 0
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.stream(
        "GET", f"{url}/api/v1/runs/{run_id}/logs", headers=headers, timeout=120
    ) as response:
        assert response.status_code == 200
        for piece in response.iter_bytes():
            digest.update(piece)
            newlines += piece.count(b"\n")
        return newlines, digest.hexdigest(), int(response.headers["x-last-seq"])


@pytest.mark.slow
def test_downloading_a_million_lines_takes_no_more_memory_than_a_hundred_thousand(
    tool_env: dict[str, str], tmp_path: Path
) -> None:
    """The backend's peak RSS (VmHWM) after downloading a 1,000,000-line log is within a
    few MB of its peak after a 100,000-line one (it was +600 MB when the log was built in
    memory). The lines are stored through the store into the backend's own database."""
    db_url = f"sqlite:///{tmp_path / 'iac.db'}"
    backend = start_backend(tmp_path, tool_env, db_url)
    try:
        backend.deploy("big", {"main.tf": "# no runner: the runs stay queued\n"})
        small, large = backend.start("big", "plan"), backend.start("big", "plan")
        expected = {}

        async def fill() -> None:
            db = Database(db_url)
            try:
                for run, n in ((small, 100_000), (large, 1_000_000)):
                    lines = await store_lines(db, run["id"], [2000] * (n // 2000))
                    expected[run["id"]] = (n, hashlib.sha256(as_text(lines).encode()).hexdigest())
            finally:
                await db.dispose()

        asyncio.run(fill())
        # Twice each: the first download also loads code and warms the allocator.
        for _ in range(2):
            got = download(backend.url, small["id"])
            assert got == (*expected[small["id"]], 100_000)
        after_small = vm_hwm_kb(backend.pid)
        got = download(backend.url, large["id"])
        assert got == (*expected[large["id"]], 1_000_000)
        after_large = vm_hwm_kb(backend.pid)
        growth_mb = (after_large - after_small) / 1024
        print(
            f"backend VmHWM: {after_small / 1024:.1f} MB after 100,000 lines, "
            f"{after_large / 1024:.1f} MB after 1,000,000 (+{growth_mb:.1f} MB)"
        )
        assert growth_mb < 5, (after_small, after_large)
    finally:
        backend.stop()
