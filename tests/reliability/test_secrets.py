"""Secrets: sensitive values that the configuration itself prints, via a `local-exec` echo
and an output, appear in no log line (iac-runner's answer and stream, the gRPC stream,
the stored log, SSE, the runner server's and the backend's own logs) and in no database
column in plaintext.

Three secrets: a plain one (a terraform variable), an environment variable, and an
awkward one with a quote, a backslash, `${`, non-ASCII and a second line, which
terraform prints escaped ("a\\"b") in plans and in its `Executing: [...]` lines.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protos.iacrunner.v1 import runner_pb2_grpc as pb_grpc
from tests.backend.archives import tar_gz
from tests.backend.platform import TOKEN, Backend, start_backend
from tests.conftest import IAC_RUNNER
from tests.procs import RunnerProcess, execute, lines_of, result_of
from tests.reliability.harness import Counter, Follower, columns_holding, start_server

TERMINAL = ("succeeded", "failed", "canceled", "timed_out")
CONFIG = """\
variable "db_password" { type = string }
variable "awkward" { type = string }

resource "terraform_data" "leak" {
  input = "len-${length(var.db_password)}"
  provisioner "local-exec" {
    command = "echo pw=${var.db_password}; echo key=$API_KEY; echo both=${var.db_password}$API_KEY"
  }
  provisioner "local-exec" {
    command = "printf '%s\\\\n' \\"$AWKWARD_ENV\\""
    environment = { AWKWARD_ENV = var.awkward }
  }
  provisioner "local-exec" {
    command = "echo 'awkward=${replace(var.awkward, "'", "")}'"
  }
}

output "pw" { value = var.db_password }
output "awkward" { value = var.awkward }
"""


def _values() -> dict[str, str]:
    tag = [secrets.token_hex(6) for _ in range(3)]
    return {
        "db_password": f"S3cr3t-{tag[0]}",
        "API_KEY": f"K3y-{tag[1]}",
        "awkward": f'aw"k\\w${{ard}}-Ü-{tag[2]}\nsecond-line-{tag[2]}',
    }


def _leaks(text: str, values: dict[str, str]) -> list[str]:
    """Which secrets (or a recognisable part of one) appear in `text`."""
    found = []
    for name, value in values.items():
        parts = [value] + [line for line in value.split("\n") if len(line) >= 6]
        parts += [json.dumps(value, ensure_ascii=False)[1:-1]]  # as terraform quotes it
        parts.append(value.rsplit("-", 1)[-1])  # the random part alone
        if any(p in text for p in parts):
            found.append(name)
    Counter.add("texts searched for secrets")
    return found


def _request_env(values: dict[str, str]) -> dict[str, str]:
    return {
        "TF_VAR_db_password": values["db_password"],
        "API_KEY": values["API_KEY"],
        "TF_VAR_awkward": values["awkward"],
    }


def test_stdio_answer_and_stream_mask_every_secret(rel_env: dict[str, str], tmp_path: Path) -> None:
    values = _values()
    work = tmp_path / "w"
    work.mkdir()
    (work / "main.tf").write_text(CONFIG)
    env = _request_env(values)
    outputs = []
    for command, args, stream in [
        ("init", ["-no-color"], False),
        ("apply", ["-auto-approve", "-no-color"], False),
        ("apply", ["-auto-approve"], True),
        ("output", ["-json"], False),
    ]:
        request = {
            "tool": "terraform",
            "command": command,
            "work_dir": str(work),
            "args": args,
            "env_vars": env,
            "sensitive_env": list(env),
        }
        proc = subprocess.run(
            [IAC_RUNNER, *(["--stream"] if stream else [])],
            input=json.dumps(request).encode(),
            capture_output=True,
            env=rel_env,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc
        outputs.append(proc.stdout.decode() + proc.stderr.decode())
    everything = "\n".join(outputs)
    assert "pw=***" in everything and "key=***" in everything, everything
    assert _leaks(everything, values) == [], everything


@pytest.fixture(scope="module")
def vault(
    rel_env: dict[str, str], module_tmp: Path
) -> Iterator[tuple[Backend, RunnerProcess, str]]:
    runner = start_server(module_tmp, rel_env, "vault-runner")
    db_url = f"sqlite:///{module_tmp / 'iac.db'}"
    backend = start_backend(module_tmp, rel_env, db_url)
    try:
        backend.register("vault-runner", runner.address)
        backend.wait_runners_healthy("vault-runner")
        yield backend, runner, db_url
    finally:
        backend.stop()
        runner.stop()


def test_grpc_stream_masks_every_secret(vault: tuple[Backend, RunnerProcess, str]) -> None:
    _, runner, _ = vault
    values = _values()
    env = _request_env(values)
    workspace = tar_gz({"main.tf": CONFIG})
    texts: list[str] = []
    with grpc.insecure_channel(runner.address) as channel:
        stub = pb_grpc.RunnerStub(channel)
        for command, args in [("init", []), ("apply", ["-auto-approve"])]:
            events = execute(
                stub,
                tool="terraform",
                command=command,
                args=args,
                work_dir="grpc-secrets",
                env_vars=env,
                sensitive_env=list(env),
                workspace=workspace if command == "init" else b"",
            )
            assert result_of(events).success, result_of(events)
            texts += [line.text for line in lines_of(events)] + [str(events)]
    assert _leaks("\n".join(texts), values) == []


def test_a_backend_run_leaks_no_secret_to_logs_sse_or_the_database(
    vault: tuple[Backend, RunnerProcess, str],
) -> None:
    backend, runner, db_url = vault
    values = _values()
    backend.deploy("vault", {"main.tf": CONFIG})
    for key, value, category in [
        ("db_password", values["db_password"], "terraform"),
        ("API_KEY", values["API_KEY"], "env"),
        ("awkward", values["awkward"], "terraform"),
    ]:
        backend.call(
            "PUT",
            f"/deployments/vault/variables/{key}",
            201,
            json={"value": value, "sensitive": True, "category": category},
        )
    listed = backend.call("GET", "/deployments/vault/variables", 200)
    assert all(v["value"] is None for v in listed), listed

    run = backend.start("vault", "apply", auto_approve=True)
    follower = Follower(backend, run["id"]).start()
    run = backend.wait(run["id"], *TERMINAL, timeout=180)
    assert run["status"] == "succeeded", run
    stored = backend.log_text(run["id"])
    assert "pw=***" in stored and "key=***" in stored, stored
    follower.join()
    sse = "\n".join(text for _, text in follower.received)
    api = json.dumps(backend.call("GET", f"/runs/{run['id']}", 200))

    places: dict[str, str] = {
        "stored log": stored,
        "SSE": sse,
        "run in the API": api,
        "runner server log": runner.log.read_text(),
        "backend log": backend.log.read_text(),
    }
    leaks = {where: _leaks(text, values) for where, text in places.items()}
    assert all(found == [] for found in leaks.values()), leaks

    # The database: every text, bytes and JSON column of every table, compressed values
    # (the plan file is a zip, configurations are tar.gz) opened. Terraform writes every
    # variable into the saved plan and outputs into the state: both are stored encrypted.
    leaked: dict[str, list[str]] = {}
    for name, value in values.items():
        for form in {value.split("\n")[0], json.dumps(value, ensure_ascii=False)[1:-1]}:
            for column in columns_holding(db_url, form):
                leaked.setdefault(column, []).append(name)
    assert leaked == {}, leaked
    # ... and read back decrypted by those allowed to: terraform, and API users.
    versions = backend.call("GET", "/deployments/vault/state", 200)["versions"]
    state = backend.client.get(f"/deployments/vault/state/versions/{versions[0]['id']}")
    assert json.loads(state.content)["outputs"]["pw"]["value"] == values["db_password"]


ROTATED = """\
variable "db_password" { type = string }

resource "terraform_data" "x" {
  input = var.db_password
  provisioner "local-exec" {
    command     = "echo pw=$PW"
    environment = { PW = var.db_password }
  }
}

output "pw" { value = var.db_password }
output "pw_json" { value = jsonencode({ p = var.db_password }) }
"""


def test_every_value_a_secret_ever_held_stays_masked(
    vault: tuple[Backend, RunnerProcess, str], tmp_path: Path
) -> None:
    """A sensitive variable applied, then rotated, then deleted and set again as a public
    value: terraform prints the old values in its plan diffs (`"old" -> ...`) and outputs;
    none of them appears in the stored log, SSE, the API, the CLI, the processes' logs or
    any database column."""
    backend, runner, db_url = vault
    tag = secrets.token_hex(5)
    values = {
        "first": f"Sup3r-S3cret-{tag}<&>",
        "second": f"N3w-S3cret-{tag}\"q'",
    }
    backend.deploy("rotated", {"main.tf": ROTATED})
    url = "/deployments/rotated/variables/db_password"
    stored: list[str] = []
    sse: list[str] = []
    for value, sensitive, operation in [
        (values["first"], True, "apply"),
        (values["second"], True, "plan"),
        ("public-value", False, "plan"),
    ]:
        if not sensitive:
            backend.call("DELETE", url, 204)
        backend.call("PUT", url, None, json={"value": value, "sensitive": sensitive})
        run = backend.start("rotated", operation, auto_approve=True)
        follower = Follower(backend, run["id"]).start()
        run = backend.wait(run["id"], *TERMINAL, timeout=180)
        assert run["status"] == "succeeded", (run["error_msg"], backend.log_text(run["id"]))
        follower.join()
        stored.append(backend.log_text(run["id"]))
        sse.append("\n".join(text for _, text in follower.received))
    # The old values were printed (masked) where terraform shows what changes.
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", text) for text in stored]
    assert '"***" -> "***"' in plain[1], plain[1]
    assert '"***" -> "public-value"' in plain[2], plain[2]
    cli = subprocess.run(
        [str(Path(IAC_RUNNER).parent / "iac"), "logs", str(run["id"])],
        env={**backend.env, "IAC_URL": backend.url, "IAC_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "public-value" in cli
    places = {
        "stored logs": "\n".join(stored),
        "SSE": "\n".join(sse),
        "CLI": cli,
        "runs in the API": json.dumps(backend.call("GET", "/runs", 200)),
        "runner server log": runner.log.read_text(),
        "backend log": backend.log.read_text(),
    }
    leaks = {where: _leaks(text, values) for where, text in places.items()}
    assert all(found == [] for found in leaks.values()), leaks
    leaked = {
        name: columns_holding(db_url, value.split("<")[0].split('"')[0])
        for name, value in values.items()
    }
    assert leaked == {"first": [], "second": []}, leaked
