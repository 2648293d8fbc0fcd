"""iac-runner-server's settings, through the real executable: every option with a bad value,
as a flag and as an environment variable, is one line naming both, exit 2; booleans read
the usual ways; a short token on a network address is refused; --help documents every
setting; the command line wins over the environment, which wins over the default."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from protos.iacrunner.v1 import runner_pb2 as pb
from runner_server.config import HealthConfig, ServerConfig
from runner_server.flags import ConfigError, env_name, flag_name, load
from tests.conftest import BIN
from tests.procs import start_runner


@dataclass(frozen=True)
class Bad:
    """A bad value of one setting and a fragment of the message it must give."""

    field: str
    value: str
    fragment: str
    health: bool = False  # a setting of `iac-runner-server health`
    extra: tuple[str, ...] = ()  # other flags the case needs
    forms: tuple[str, ...] = ("flag", "env")

    @property
    def model(self) -> type[ServerConfig] | type[HealthConfig]:
        return HealthConfig if self.health else ServerConfig


NETWORK = ("--listen", "0.0.0.0:0")
BAD_VALUES = [
    Bad("listen", "nonsense", "must be HOST:PORT"),
    Bad("listen", "127.0.0.1:65536", "port from 0 to 65535"),
    Bad("workspace_root", "{tmp}/a-file/ws", "is a file"),
    Bad("max_concurrent", "four", "'four' is not an integer"),
    Bad("max_concurrent", "0", "'0' must be at least 1"),
    Bad("max_concurrent", "2147483648", "must be at most 2147483647", forms=("flag",)),
    Bad("labels", "bad", "label 'bad' must be KEY=VALUE"),
    Bad("labels", "provider=a b", "label value 'a b' of 'provider'"),
    Bad("runner_id", "two words", "runner id 'two words'"),
    Bad(
        "token",
        "0123456789abcde",
        "at least 16: make one with `openssl rand -hex 16`",
        extra=NETWORK,
    ),
    Bad("token", "with space 0123456789", "printable ASCII without spaces"),
    Bad("tls_cert", "{tmp}/missing.pem", "does not exist"),
    Bad("tls_key", "{tmp}/missing.pem", "does not exist"),
    Bad("tls_client_ca", "{tmp}/missing.pem", "does not exist"),
    Bad("insecure", "maybe", "'maybe' is not a boolean", forms=("env",)),
    Bad("metrics_listen", "nonsense", "must be HOST:PORT"),
    Bad("grace", "soon", "'soon' is not a number"),
    Bad("grace", "0", "'0' must be more than 0"),
    Bad("grace", "1e12", "'1e12' must be at most 604800"),
    Bad("default_timeout", "-5", "'-5' must be more than 0"),
    Bad("default_timeout", "inf", "'inf' is not a finite number"),
    Bad("drain_timeout", "-1", "'-1' must be at least 0"),
    Bad("retention_seconds", "nan", "'nan' is not a finite number"),
    Bad("drain_timeout", "604801", "'604801' must be at most 604800", forms=("env",)),
    Bad("retention_bytes", "1.5", "'1.5' is not an integer"),
    Bad("retention_bytes", "0", "'0' must be more than 0"),
    Bad("state_hold", "0", "'0' must be more than 0"),
    Bad("runner_bin", "{tmp}/missing", "is not an executable file"),
    Bad("accept", "deploy", "'deploy' is not an operation; use: plan, apply, destroy"),
    Bad("tools", "terraform=/x", "must look like NAME@VERSION=PATH"),
    Bad("tools", "pulumi@1.0.0=/bin/true", "unknown tool 'pulumi'"),
    Bad("tools", "terraform@1.0.0={tmp}/missing", "not an executable file"),
    Bad("address", "nonsense", "must be HOST:PORT", health=True),
    Bad("address", "127.0.0.1:0", "port from 1 to 65535", health=True),
    Bad("tls_ca", "{tmp}/missing.pem", "does not exist", health=True),
    Bad("tls_cert", "{tmp}/missing.pem", "does not exist", health=True),
    Bad("tls_key", "{tmp}/missing.pem", "does not exist", health=True),
    Bad("timeout", "x", "'x' is not a number", health=True),
    Bad("timeout", "-1", "'-1' must be more than 0", health=True),
]
CASES = [(bad, form) for bad in BAD_VALUES for form in bad.forms]


def case_id(case: tuple[Bad, str]) -> str:
    bad, form = case
    return f"{'health-' if bad.health else ''}{bad.field}={bad.value}-{form}"


def run_server(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "iac-runner-server"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_usage_error(done: subprocess.CompletedProcess[str], *names: str) -> str:
    line = done.stderr.strip()
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert line and "\n" not in line, done.stderr
    assert "Traceback" not in done.stderr
    for name in names:
        assert name in line, (name, line)
    return line


def test_every_setting_has_a_bad_value_in_the_table() -> None:
    for model, health in ((ServerConfig, False), (HealthConfig, True)):
        covered = {bad.field for bad in BAD_VALUES if bad.health == health}
        assert covered == set(model.model_fields), set(model.model_fields) - covered


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_a_bad_value_is_one_line_naming_the_flag_and_the_variable(
    case: tuple[Bad, str], tool_env: dict[str, str], tmp_path: Path
) -> None:
    bad, form = case
    (tmp_path / "a-file").write_text("not a directory")
    value = bad.value.format(tmp=tmp_path)
    flag, env = flag_name(bad.model, bad.field), env_name(bad.model, bad.field)
    # Good values of the other settings the server checks, unless under test.
    base = {"listen": "127.0.0.1:0", "workspace_root": str(tmp_path / "ws")}
    args = ["health"] if bad.health else []
    if not bad.health:
        for name, good in base.items():
            if name != bad.field and flag_name(ServerConfig, name) not in bad.extra:
                args += [flag_name(ServerConfig, name), good]
    args += list(bad.extra)
    if form == "flag":
        done = run_server([*args, flag, value], tool_env)
    else:
        done = run_server(args, {**tool_env, env: value})
    line = assert_one_line_usage_error(done, flag, env)
    assert bad.fragment in line
    assert done.stdout == ""


RULES = [
    # (flags, the line names these flags and variables)
    (["--tls-cert", "{cert}"], ["--tls-key", "IAC_RUNNER_TLS_KEY", "must be given together"]),
    (["--tls-key", "{cert}"], ["--tls-cert", "IAC_RUNNER_TLS_CERT", "must be given together"]),
    (["--tls-client-ca", "{cert}"], ["--tls-cert", "IAC_RUNNER_TLS_CLIENT_CA", "mTLS"]),
    (["--listen", "0.0.0.0:0"], ["--token", "IAC_RUNNER_TOKEN", "--insecure", "without auth"]),
    (
        ["health", "--tls-cert", "{cert}", "--tls-key", "{cert}"],
        ["--tls-ca", "IAC_RUNNER_TLS_CA", "needs TLS"],
    ),
    (["health", "--tls-cert", "{cert}"], ["--tls-key", "IAC_RUNNER_HEALTH_TLS_KEY"]),
]


@pytest.mark.parametrize(("args", "names"), RULES, ids=[" ".join(a) for a, _ in RULES])
def test_settings_that_do_not_go_together_are_one_line_naming_them(
    args: list[str], names: list[str], tool_env: dict[str, str], tmp_path: Path
) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    argv = [a.format(cert=cert) for a in args]
    if argv[0] != "health" and "--listen" not in argv:
        argv += ["--listen", "127.0.0.1:0"]
    assert_one_line_usage_error(run_server(argv, tool_env), *names)


# -- booleans --------------------------------------------------------------------------

TRUE = ["true", "1", "yes", "on", "TRUE", "On", " yes "]
FALSE = ["false", "0", "no", "off", "", "FALSE", "Off"]
NOT_BOOLEAN = ["maybe", "2", "y", "t", "enabled", "truee"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [(t, True) for t in TRUE] + [(t, False) for t in FALSE] + [(t, None) for t in NOT_BOOLEAN],
)
def test_insecure_is_read_the_usual_ways(
    text: str, expected: bool | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in [n for n in os.environ if n.upper().startswith("IAC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("IAC_RUNNER_INSECURE", text)
    values = {"listen": "127.0.0.1:0", "workspace_root": str(tmp_path)}
    if expected is None:
        with pytest.raises(ConfigError, match="IAC_RUNNER_INSECURE") as err:
            load(ServerConfig, values)
        assert f"{text!r} is not a boolean" in str(err.value)
    else:
        assert load(ServerConfig, values).insecure is expected


@pytest.mark.parametrize("text", ["true", "on"])
def test_insecure_true_or_on_lets_the_server_listen_on_the_network(
    text: str, tool_env: dict[str, str], tmp_path: Path
) -> None:
    # These two were read as false: the server refused to start.
    server = start_runner(tmp_path, {**tool_env, "IAC_RUNNER_INSECURE": text}, host="0.0.0.0")
    try:
        assert server.stub().GetInfo(pb.GetInfoRequest(), timeout=10).runner_id == "runner"
    finally:
        server.stop()


@pytest.mark.parametrize("text", ["false", "off", ""])
def test_insecure_false_keeps_the_refusal(
    text: str, tool_env: dict[str, str], tmp_path: Path
) -> None:
    done = run_server(
        ["--listen", "0.0.0.0:0", "--workspace-root", str(tmp_path)],
        {**tool_env, "IAC_RUNNER_INSECURE": text},
    )
    assert "without auth" in assert_one_line_usage_error(done, "IAC_RUNNER_INSECURE")


# -- the token -------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["flag", "env"])
def test_a_short_token_is_refused_on_a_network_address(
    form: str, tool_env: dict[str, str], tmp_path: Path
) -> None:
    short = "s3cret-15-chars"
    assert len(short) == 15
    args = ["--listen", "0.0.0.0:0", "--workspace-root", str(tmp_path)]
    if form == "flag":
        done = run_server([*args, "--token", short], tool_env)
    else:
        done = run_server(args, {**tool_env, "IAC_RUNNER_TOKEN": short})
    line = assert_one_line_usage_error(done, "--token", "IAC_RUNNER_TOKEN")
    assert "is 15 characters" in line and "`openssl rand -hex 16`" in line
    assert short not in line  # the message never shows the token


def test_a_token_of_16_characters_serves_on_a_network_address(
    tool_env: dict[str, str], tmp_path: Path
) -> None:
    token = "0123456789abcdef"
    server = start_runner(tmp_path, tool_env, host="0.0.0.0", token=token)
    try:
        info = server.stub().GetInfo(
            pb.GetInfoRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=10
        )
        assert info.runner_id == "runner"
    finally:
        server.stop()


def test_a_short_token_is_allowed_on_loopback(tool_env: dict[str, str], tmp_path: Path) -> None:
    server = start_runner(tmp_path, tool_env, token="s3cret")
    try:
        info = server.stub().GetInfo(
            pb.GetInfoRequest(), metadata=[("authorization", "Bearer s3cret")], timeout=10
        )
        assert info.runner_id == "runner"
    finally:
        server.stop()


# -- --help ----------------------------------------------------------------------------


def help_blocks(text: str) -> dict[str, str]:
    """Each option's help, its wrapped lines joined: {"--listen": "HOST:PORT address ..."}."""
    blocks: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        m = re.match(r"^  (--[a-z-]+)(.*)$", line)
        if m:
            current = m.group(1)
            blocks[current] = m.group(2).strip()
        elif current and line.startswith("    "):
            blocks[current] += " " + line.strip()
        else:
            current = ""
    return blocks


@pytest.mark.parametrize("words", [[], ["health"]], ids=["serve", "health"])
def test_help_lists_every_setting_with_its_variable_and_default(
    words: list[str], tool_env: dict[str, str]
) -> None:
    model = HealthConfig if words else ServerConfig
    done = run_server([*words, "--help"], tool_env)
    assert done.returncode == 0, done.stderr
    blocks = help_blocks(done.stdout)
    for name, info in model.model_fields.items():
        block = blocks.get(flag_name(model, name))
        assert block is not None, f"{flag_name(model, name)} is not in --help"
        assert f"[{env_name(model, name)}" in block, block
        assert info.description and info.description.split(";")[0] in block
        default = info.get_default(call_default_factory=True)
        if isinstance(default, float):
            assert f"default: {default:g}" in block, block
        elif isinstance(default, int | bool) or default:
            assert f"default: {str(default).lower()}" in block.lower(), block
    assert set(blocks) == {flag_name(model, name) for name in model.model_fields}


# -- precedence ------------------------------------------------------------------------


def test_the_command_line_wins_over_the_environment_which_wins_over_the_default(
    tool_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **tool_env,
        "IAC_RUNNER_ID": "from-env",
        "IAC_RUNNER_MAX_CONCURRENT": "3",
        "IAC_RUNNER_LABELS": "provider=aws,env=staging",
        "IAC_RUNNER_ACCEPT": "plan,destroy",
    }
    # start_runner passes --runner-id runner; a --label adds to the variable's labels.
    server = start_runner(tmp_path, env, "--label", "env=prod", "--accept", "plan")
    try:
        info = server.stub().GetInfo(pb.GetInfoRequest(), timeout=10)
    finally:
        server.stop()
    assert info.runner_id == "runner"
    assert info.max_concurrent == 3
    assert dict(info.labels) == {"provider": "aws", "env": "prod"}
    assert list(info.accept) == ["plan"]
    server = start_runner(tmp_path, tool_env, name="plain")
    try:
        info = server.stub().GetInfo(pb.GetInfoRequest(), timeout=10)
    finally:
        server.stop()
    assert info.max_concurrent == ServerConfig.model_fields["max_concurrent"].default == 4
    assert (dict(info.labels), list(info.accept)) == ({}, [])
