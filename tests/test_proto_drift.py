"""The committed generated code must equal what `make proto` writes from the .proto."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = "protos/iacrunner/v1/runner.proto"
GENERATED = ("runner_pb2.py", "runner_pb2.pyi", "runner_pb2_grpc.py")


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    (tmp_path / "protos/iacrunner/v1").mkdir(parents=True)
    shutil.copy(ROOT / PROTO, tmp_path / PROTO)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I.",
            "--python_out=.",
            "--pyi_out=.",
            "--grpc_python_out=.",
            PROTO,
        ],
        cwd=tmp_path,
        check=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "protos/iacrunner/v1" / name).read_text()
        committed = (ROOT / "protos/iacrunner/v1" / name).read_text()
        assert committed == fresh, (
            f"protos/iacrunner/v1/{name} is stale: run `make proto` and commit"
        )
