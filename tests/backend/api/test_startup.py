"""Start-up: the secrets check, the bootstrap token, and the ``iac-backend`` command."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from backend.app import create_app, prepare
from backend.crypto import SecretsUnreadable
from backend.db import Database
from backend.models import ApiToken
from backend.store import tokens
from tests.backend.archives import tar_gz
from tests.backend.conftest import API_TOKEN, make_settings
from tests.conftest import IAC_BACKEND, wait_for
from tests.procs import free_port, start_runner

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

pytestmark = pytest.mark.anyio


async def _store_secret(db_url: str, tmp_path: Path) -> None:
    app = create_app(make_settings(db_url, tmp_path))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://t",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        ) as c:
            assert (await c.post("/api/v1/deployments", json={"name": "web"})).status_code == 201
            r = await c.put(
                "/api/v1/deployments/web/variables/pw", json={"value": "s", "sensitive": True}
            )
            assert r.status_code == 201


async def test_refuses_to_start_without_the_key_when_secrets_exist(
    db_url: str, tmp_path: Path
) -> None:
    # With no secrets stored, no key is needed.
    database, _ = await prepare(make_settings(db_url, tmp_path, encryption_key=None))
    await database.dispose()
    await _store_secret(db_url, tmp_path)
    with pytest.raises(
        SecretsUnreadable, match="ENCRYPTION_KEY is not set.*generate-encryption-key.sh"
    ):
        await prepare(make_settings(db_url, tmp_path, encryption_key=None))
    with pytest.raises(SecretsUnreadable, match="does not decrypt"):
        await prepare(
            make_settings(db_url, tmp_path, encryption_key=Fernet.generate_key().decode())
        )


async def test_bootstrap_token_is_stored_hashed_once(db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    for _ in range(2):
        database, _ = await prepare(settings)
        await database.dispose()
    database = Database(db_url)
    try:
        async with database.session() as s:
            rows = await tokens.list_tokens(s)
            assert len(rows) == 1
            assert rows[0].token_hash == tokens.hash_token(API_TOKEN)
            assert API_TOKEN not in repr(rows[0].__dict__)
            assert await tokens.authenticate(s, API_TOKEN) is not None
            assert isinstance(rows[0], ApiToken)
    finally:
        await database.dispose()


def _cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IAC_")}
    for name in ("DATABASE_URL", "ENCRYPTION_KEY"):
        env.pop(name, None)
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ENCRYPTION_KEY": "not-a-key"}, "ENCRYPTION_KEY is malformed"),
        ({"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}, "is unreachable"),
        ({"DATABASE_URL": "mysql://x/y"}, "not supported"),
        ({"IAC_PORT": "many"}, "port"),
    ],
)
def test_cli_fails_fast_with_one_line(tmp_path: Path, env: dict[str, str], message: str) -> None:
    proc = subprocess.run(
        [IAC_BACKEND, "serve"],
        cwd=tmp_path,
        env=_cli_env(IAC_DATA_DIR=str(tmp_path / "data"), **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iac-backend: "), proc.stderr
    assert message in lines[0]


def test_cli_refuses_unreadable_secrets(db_url: str, tmp_path: Path) -> None:
    import asyncio

    asyncio.run(_store_secret(db_url, tmp_path))
    proc = subprocess.run(
        [IAC_BACKEND, "serve"],
        cwd=tmp_path,
        env=_cli_env(DATABASE_URL=db_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "generate-encryption-key.sh" in proc.stderr


def test_cli_migrate_then_serve(db_url: str, tmp_path: Path) -> None:
    env = _cli_env(
        DATABASE_URL=db_url, IAC_API_TOKEN=API_TOKEN, ENCRYPTION_KEY=Fernet.generate_key().decode()
    )
    migrated = subprocess.run(
        [IAC_BACKEND, "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert migrated.returncode == 0, migrated.stderr
    assert "latest schema" in migrated.stdout

    proc = subprocess.Popen(
        [IAC_BACKEND, "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        # uvicorn announces the bound address once it serves: read until then.
        address = None
        for line in proc.stderr:
            if "Uvicorn running on" in line:
                address = line.split("running on ")[1].split()[0]
                break
        assert address, "the server did not start"
        health = httpx.get(f"{address}/healthz")
        assert health.json() == {"status": "ok"}
        runners = httpx.get(
            f"{address}/api/v1/runners", headers={"Authorization": f"Bearer {API_TOKEN}"}
        )
        assert runners.status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "encryption_key = ********" in out
    assert API_TOKEN not in out


def test_generate_encryption_key_script(tmp_path: Path) -> None:
    script = str(Path(__file__).resolve().parents[3] / "generate-encryption-key.sh")
    printed = subprocess.run([script], capture_output=True, text=True, check=True).stdout.strip()
    Fernet(printed.encode())
    env_file = tmp_path / ".env"
    env_file.write_text("IAC_PORT=9000")
    subprocess.run([script, str(env_file)], capture_output=True, check=True)
    first = env_file.read_text()
    assert first.startswith("IAC_PORT=9000\nENCRYPTION_KEY=")
    refused = subprocess.run([script, str(env_file)], capture_output=True, text=True)
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert env_file.read_text() == first
    subprocess.run([script, "--force", str(env_file)], capture_output=True, check=True)
    replaced = env_file.read_text()
    assert replaced != first and replaced.count("ENCRYPTION_KEY=") == 1
    Fernet(replaced.split("ENCRYPTION_KEY=")[1].strip().encode())
    assert sys.executable  # the script needs no Python package of the project


def _serve(tmp_path: Path, name: str, *args: str) -> tuple[subprocess.Popen[bytes], Path, str]:
    """`iac-backend serve ARGS` exactly as the README starts it: only IAC_API_TOKEN and
    ENCRYPTION_KEY set (no IAC_PUBLIC_URL), its data in ./.data of its working directory.
    The process, its output file, and its URL once /healthz answers."""
    port = free_port()
    out = tmp_path / f"{name}.out"
    env = _cli_env(IAC_API_TOKEN=API_TOKEN, ENCRYPTION_KEY=Fernet.generate_key().decode())
    workdir = tmp_path / name
    workdir.mkdir(exist_ok=True)
    with open(out, "ab") as log:
        proc = subprocess.Popen(
            [IAC_BACKEND, "serve", "--port", str(port), *args],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, out.read_text()
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=60)
    return proc, out, url


def test_serve_as_the_readme_shows_follows_its_port_and_runs(
    tmp_path: Path, tool_env: dict[str, str]
) -> None:
    """`iac-backend serve --port P`, as the README shows it: the public URL follows the port
    (it printed http://127.0.0.1:8000), and a real run (the offline example, a real runner
    server, terraform's state relayed by the runner) succeeds."""
    runner = start_runner(tmp_path, tool_env, "--label", "provider=local", name="local-1")
    proc, out, url = _serve(tmp_path, "readme")
    try:
        assert f"public_url = {url}\n" in out.read_text()
        api = httpx.Client(
            base_url=url + "/api/v1", headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30
        )
        with api:
            body = {"name": "local-1", "address": runner.address, "labels": {"provider": "local"}}
            assert api.post("/runners", json=body).status_code == 201
            wait_for(lambda: api.get("/runners/local-1").json()["status"] == "healthy", 30)
            created = api.post("/deployments", json={"name": "hello"})
            assert created.status_code == 201, created.text
            archive = tar_gz({"main.tf": (EXAMPLES / "hello" / "main.tf").read_text()})
            uploaded = api.post(
                "/deployments/hello/config",
                content=archive,
                headers={"Content-Type": "application/gzip"},
            )
            assert uploaded.status_code == 201, uploaded.text
            run = api.post(
                "/runs", json={"deployment": "hello", "operation": "apply", "auto_approve": True}
            ).json()
            done = wait_for(
                lambda: (
                    (r := api.get(f"/runs/{run['id']}").json())["status"]
                    in ("succeeded", "failed", "canceled", "timed_out")
                    and r
                ),
                timeout=120,
            )
            assert isinstance(done, dict) and done["status"] == "succeeded", done
            assert api.get("/deployments/hello").json()["managed_resources"] == 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        runner.stop()


def test_the_data_dir_and_database_are_the_users_alone(tmp_path: Path) -> None:
    """Started as the README shows it, the backend makes its data dir 0700 and its SQLite
    database (with its WAL and shared memory) 0600; a database left 0644 by an older
    version is made 0600 at start."""
    proc, _, url = _serve(tmp_path, "private")
    try:
        with httpx.Client(base_url=url + "/api/v1", timeout=30) as api:
            api.headers["Authorization"] = f"Bearer {API_TOKEN}"
            assert api.post("/deployments", json={"name": "p"}).status_code == 201
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    data = tmp_path / "private" / ".data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = [p for p in data.iterdir() if p.name.startswith("iac.db")]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files), files
    database = data / "iac.db"
    database.chmod(0o644)
    proc, _, _ = _serve(tmp_path, "private")
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    assert stat.S_IMODE(database.stat().st_mode) == 0o600


def test_a_second_backend_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    """SQLite serves one backend process (a second one would hold the write lock under the
    first's event loop): the second stops at once with the reason, the first serves on."""
    first, _, url = _serve(tmp_path, "one")
    try:
        database = tmp_path / "one" / ".data" / "iac.db"
        env = _cli_env(
            IAC_API_TOKEN=API_TOKEN,
            ENCRYPTION_KEY=Fernet.generate_key().decode(),
            DATABASE_URL=f"sqlite:///{database}",
        )
        second = subprocess.run(
            [IAC_BACKEND, "serve", "--port", str(free_port())],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2, second.stderr
        last = second.stderr.strip().splitlines()[-1]
        assert last == (
            f"iac-backend: another iac-backend serves {database}: SQLite serves one backend "
            "process; run several on PostgreSQL (see docs/scaling.md)"
        ), second.stderr
        assert httpx.get(url + "/healthz", timeout=5).status_code == 200
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(30)
