"""The CLI's pure parts: config precedence, the archive it uploads, SSE parsing, resume
bookkeeping, and how API errors read."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from iac_cli.archive import pack_directory
from iac_cli.client import Api, ServerError, Unreachable, api_error
from iac_cli.config import DEFAULT_URL, Config, load_config
from iac_cli.errors import CliError, UsageError
from iac_cli.logstream import End, Event, Lines, LogStream, Status, StreamDropped, parse_sse
from iac_cli.main import main


def test_config_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IAC_URL", "IAC_TOKEN", "IAC_CONFIG", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    file = tmp_path / "config.toml"
    file.write_text('url = "http://from-file:1"\ntoken = "file-token"\n')
    monkeypatch.setenv("IAC_CONFIG", str(file))
    monkeypatch.setenv("IAC_DEBUG", "1")  # another IAC_ variable: not a setting of this model
    assert load_config() == Config("http://from-file:1", "file-token", file)
    monkeypatch.setenv("IAC_URL", "http://from-env:2/")
    monkeypatch.setenv("IAC_TOKEN", "env-token")
    assert load_config() == Config("http://from-env:2", "env-token", file)
    assert load_config("https://flag:3", "flag-token") == Config(
        "https://flag:3", "flag-token", file
    )
    monkeypatch.setenv("IAC_URL", "")  # empty: as if unset
    assert load_config().url == "http://from-file:1"
    for name in ("IAC_URL", "IAC_TOKEN", "IAC_CONFIG"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "none"))
    assert load_config() == Config(DEFAULT_URL, None, tmp_path / "none" / "iac" / "config.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("url = 1\n", "url must be a string"),
        ("token = true\n", "token must be a string"),
        ('colour = "red"\n', "unknown keys ['colour']"),
        ("url = [\n", "not valid TOML"),
        ('url = "localhost:8000"\n', "must start with http:// or https://"),
    ],
)
def test_bad_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    file = tmp_path / "config.toml"
    file.write_text(text)
    monkeypatch.setenv("IAC_CONFIG", str(file))
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config()


def test_config_named_but_missing_and_bad_url_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IAC_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(UsageError, match="nope.toml \\(from IAC_CONFIG\\) does not exist"):
        load_config()
    monkeypatch.delenv("IAC_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("IAC_URL", "ftp://x")
    with pytest.raises(UsageError, match="backend URL 'ftp://x' must start with http://"):
        load_config()


def test_archive_skips_terraform_dirs_and_state(tmp_path: Path) -> None:
    root = tmp_path / "infra"
    (root / "modules" / "net" / ".terraform").mkdir(parents=True)
    (root / ".terraform" / "providers").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "main.tf").write_text("# main\n")
    (root / "modules" / "net" / "net.tf").write_text("# net\n")
    (root / "modules" / "net" / ".terraform" / "x").write_text("x")
    (root / ".terraform" / "providers" / "p").write_text("p")
    (root / ".git" / "HEAD").write_text("ref")
    (root / ".terraform.lock.hcl").write_text("# lock\n")
    for name in ("terraform.tfstate", "terraform.tfstate.backup", "x.tfstate.1700000000.backup"):
        (root / name).write_text("{}")
    script = root / "hook.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    (root / "linked.tf").symlink_to(root / "main.tf")

    packed = pack_directory(root)
    assert sorted(packed.files) == [
        ".terraform.lock.hcl",
        "hook.sh",
        "linked.tf",
        "main.tf",
        "modules/net/net.tf",
    ]
    with tarfile.open(fileobj=io.BytesIO(packed.data), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {*packed.files, "modules", "modules/net"}
        assert all(m.isfile() or m.isdir() for m in members.values())
        assert members["hook.sh"].mode == 0o755 and members["main.tf"].mode == 0o644
        linked = tar.extractfile("linked.tf")
        assert linked is not None and linked.read() == b"# main\n"
    assert pack_directory(root).data == packed.data  # same tree, same bytes


def test_archive_refuses_what_it_cannot_pack(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a directory"):
        pack_directory(tmp_path / "missing")
    empty = tmp_path / "empty"
    (empty / ".terraform").mkdir(parents=True)
    with pytest.raises(UsageError, match="no files"):
        pack_directory(empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "main.tf").write_text("")
    (broken / "gone.tf").symlink_to(broken / "nowhere.tf")
    with pytest.raises(UsageError, match="broken symbolic link"):
        pack_directory(broken)


def test_parse_sse() -> None:
    text = (
        ": keep-alive\n\n"
        'id: 3\ndata: {"seq": 1, "lines": ["a", "b", "c"]}\n\n'
        'event: status\ndata: {"status": "running"}\n\n'
        "event: end\ndata: {}\n\n"
    )
    assert list(parse_sse(text.splitlines())) == [
        ("message", "3", '{"seq": 1, "lines": ["a", "b", "c"]}'),
        ("status", None, '{"status": "running"}'),
        ("end", None, "{}"),
    ]


def test_log_stream_trims_overlap_and_repeats_no_status() -> None:
    """A resumed connection may overlap what was seen and restate the status: the caller
    still gets each line once and each status change once."""
    connections: list[int] = []
    script: list[list[Event | Exception]] = [
        [Status("running"), Lines(1, "l1\nl2\nl3"), StreamDropped("cut")],
        [Status("running"), Lines(2, "l2\nl3\nl4"), httpx.ReadError("reset")],
        [ServerError("Bad Gateway (HTTP 502)")],
        [Status("running"), Lines(5, "l5"), Status("succeeded"), End()],
    ]

    def opener(_api: Api, _run_id: int, after: int) -> Iterator[Event]:
        connections.append(after)
        for item in script[len(connections) - 1]:
            if isinstance(item, Exception):
                raise item
            yield item

    api = Api(Config("http://127.0.0.1:9", "t", Path("/x")))
    retries: list[str] = []
    try:
        events = list(LogStream(api, 7, opener=opener, on_retry=retries.append, give_up_after=60))
    finally:
        api.close()
    assert connections == [0, 3, 4, 4]
    lines = [line for e in events if isinstance(e, Lines) for line in e.text.split("\n")]
    assert lines == ["l1", "l2", "l3", "l4", "l5"]
    assert [e.status for e in events if isinstance(e, Status)] == ["running", "succeeded"]
    assert isinstance(events[-1], End)
    assert len(retries) == 3 and retries[-1] == "Bad Gateway (HTTP 502)"


def test_log_stream_gives_up_on_a_dead_backend() -> None:
    api = Api(Config("http://127.0.0.1:9", "t", Path("/x")))

    def opener(_api: Api, _run_id: int, _after: int) -> Iterator[Event]:
        raise httpx.ConnectError("refused")
        yield End()  # pragma: no cover - makes this a generator

    try:
        with pytest.raises(Unreachable, match="gave up reconnecting"):
            list(LogStream(api, 7, opener=opener, give_up_after=0.3))
    finally:
        api.close()


def _response(status: int, **kwargs: object) -> httpx.Response:
    request = httpx.Request("GET", "http://h/api/v1/x")
    return httpx.Response(status, request=request, **kwargs)  # type: ignore[arg-type]


def test_api_errors_read_as_one_line() -> None:
    config = Config("http://h", "t", Path("/x"))
    error = api_error(_response(404, json={"detail": "deployment 'x' does not exist"}), config)
    assert (error.message, error.exit_code) == ("deployment 'x' does not exist (HTTP 404)", 2)
    validation = {"detail": [{"loc": ["body", "labels", "a"], "msg": "Input should be a string"}]}
    error = api_error(_response(422, json=validation), config)
    assert error.message == "labels.a: Input should be a string (HTTP 422)"
    error = api_error(_response(500, text="Internal Server Error\n  at line 3"), config)
    assert isinstance(error, ServerError)
    assert (error.message, error.exit_code) == ("Internal Server Error at line 3 (HTTP 500)", 1)
    error = api_error(_response(404, json={"detail": "Not Found"}), config)
    assert "is http://h an iac backend?" in error.message
    no_token = api_error(
        _response(401, json={"detail": "missing"}), Config("http://h", None, Path("/c.toml"))
    )
    assert "no API token" in no_token.message and "/c.toml" in no_token.message
    assert isinstance(no_token, CliError)


def test_usage_errors_without_a_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deployments", "create", "x", "--label", "=v"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("iac: error: Invalid value for '--label'") and err.count("\n") == 1
    assert main(["deployments", "create", "x", "--label", "a=1", "--label", "a=2"]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("iac, version ")


@pytest.mark.parametrize(
    ("error_msg", "exit_code", "expected"),
    [
        (
            "apply: canceled: terraform stopped after SIGINT (exit code 1)",
            1,
            "run 7 canceled: apply: canceled: terraform stopped after SIGINT (exit code 1)",
        ),
        (
            "plan: terraform plan exited with code 1: Error: Invalid reference",
            1,
            "run 7 canceled: plan: terraform plan exited with code 1: Error: Invalid reference",
        ),
        ("", 3, "run 7 canceled (exit code 3)"),
        (
            "lost contact with runner r1 for more than 15 s",
            None,
            "run 7 canceled: lost contact with runner r1 for more than 15 s",
        ),
    ],
)
def test_the_outcome_line_says_the_exit_code_once(
    error_msg: str, exit_code: int | None, expected: str
) -> None:
    from iac_cli.watch import outcome_line

    run = {"id": 7, "status": "canceled", "operation": "apply", "error_msg": error_msg}
    run["exit_code"] = exit_code  # type: ignore[assignment]
    assert outcome_line(run)[0] == expected
