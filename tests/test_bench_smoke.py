"""`make bench` cannot rot: a run of the whole harness at tiny sizes produces every figure.

Only that the numbers are there is checked, never their values: timing depends on the
machine and its load, and nothing in `make test` depends on timing.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIGURES = {"1", "2a", "2b", "2c", "3a", "3b", "4", "5", "6", "7", "8", "9", "10", "11"}


def postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(660)
def test_bench_small_run_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    argv = [sys.executable, "-m", "bench", "--scale", "small", "--large", "--json", str(out)]
    expected = FIGURES
    if not postgres_reachable():
        argv.append("--no-postgres")
        expected = FIGURES - {"11"}  # several backends on one PostgreSQL
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]

    results = json.loads(out.read_text())
    rows = results["figures"]
    assert {r["figure"] for r in rows} == expected, rows
    for row in rows:
        assert row["result"] in ("PASS", "MISS", "info"), row
        assert isinstance(row["project"], float | int) and math.isfinite(row["project"]), row
        assert row["project"] > 0, row
        assert row["baseline"] is None or row["baseline"] > 0, row
        assert row["target"] == "-" or row["result"] in ("PASS", "MISS"), row
    assert any("PG x2" in r["name"] for r in rows) == postgres_reachable()
    assert any("PostgreSQL" in r["name"] for r in rows if r["figure"] == "9") == (
        postgres_reachable()
    )
    points = results["scaling"]["points"]
    assert points and all(p["backend_runs_per_s"] > 0 < p["direct_runs_per_s"] for p in points)
    assert results["machine"]["cores"] >= 1

    # The table on stdout: a title, a header, one line per row (in order), the scaling table.
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("iac-runner bench") and "machine:" in lines[0]
    assert lines[1].split()[:3] == ["fig", "benchmark", "project"]
    for line, row in zip(lines[2:], rows, strict=False):
        assert line.startswith(row["figure"]) and row["name"] in line, (line, row)
        assert line.split()[-1] == row["result"], (line, row)
    assert any(line.startswith("figure 7:") for line in lines)
