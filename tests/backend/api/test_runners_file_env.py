"""The runners file may take secrets from the environment: ``"token": "${RUNNER_AWS_TOKEN}"``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.errors import Invalid
from backend.store import runners

BIN = Path(sys.executable).parent


def write(tmp_path: Path, entries: list[dict[str, object]]) -> Path:
    path = tmp_path / "runners.json"
    path.write_text(json.dumps(entries))
    return path


def test_references_are_replaced_by_environment_variables(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            {
                "name": "runner-aws",
                "address": "${AWS_RUNNER_HOST}:50051",
                "token": "${RUNNER_AWS_TOKEN}",
                "tls_ca_pem": "${RUNNER_CA}",
                "labels": {"provider": "aws"},
            },
            {"name": "plain", "address": "h:1", "token": "literal-$HOME-and-$$-stay"},
        ],
    )
    env = {
        "AWS_RUNNER_HOST": "10.1.2.3",
        "RUNNER_AWS_TOKEN": "s3cret-token",
        "RUNNER_CA": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
    }
    aws, plain = runners.read_runners_file(path, env)
    assert aws.address == "10.1.2.3:50051"
    assert aws.token == "s3cret-token"
    assert aws.tls_ca_pem == env["RUNNER_CA"]
    assert aws.labels == {"provider": "aws"}
    # Only ${NAME} is a reference; other dollar signs are kept as written.
    assert plain.token == "literal-$HOME-and-$$-stay"


def test_the_process_environment_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_GCP_TOKEN", "from-os-environ")
    path = write(tmp_path, [{"name": "g", "address": "h:1", "token": "${RUNNER_GCP_TOKEN}"}])
    assert runners.read_runners_file(path)[0].token == "from-os-environ"


@pytest.mark.parametrize(("env", "state"), [({}, "is not set"), ({"TOK": ""}, "is empty")])
def test_an_unset_or_empty_variable_is_a_clear_error(
    tmp_path: Path, env: dict[str, str], state: str
) -> None:
    path = write(tmp_path, [{"name": "runner-azure", "address": "h:1", "token": "${TOK}"}])
    with pytest.raises(Invalid) as caught:
        runners.read_runners_file(path, env)
    message = str(caught.value)
    assert "runner-azure" in message
    assert "token refers to ${TOK}" in message
    assert f"environment variable TOK {state}" in message


def test_backend_start_names_the_missing_variable(tmp_path: Path) -> None:
    path = write(tmp_path, [{"name": "runner-aws", "address": "h:1", "token": "${NOT_SET_X}"}])
    env = {k: v for k, v in os.environ.items() if not k.startswith("IAC_")}
    env.pop("NOT_SET_X", None)
    env.pop("DATABASE_URL", None)
    env.pop("ENCRYPTION_KEY", None)
    env.update(
        {
            "IAC_DATA_DIR": str(tmp_path / "data"),
            "IAC_RUNNERS_FILE": str(path),
            "IAC_PORT": "1",  # never bound: start-up fails before the API listens
        }
    )
    done = subprocess.run(
        [str(BIN / "iac-backend")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("iac-backend: runners file")
    assert "environment variable NOT_SET_X is not set" in last
    assert "Traceback" not in done.stderr
