"""`iac` against real processes: a backend on SQLite, two runner servers, real terraform."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

from tests.backend.platform import TOKEN
from tests.conftest import OFFLINE_CONFIG, wait_for
from tests.iac_cli.conftest import IAC, Platform, assert_one_line_error, json_of
from tests.procs import start_runner

SECRET = "s3cr3t-VALUE-never-shown-7f3a"

FAILING_CONFIG = """\
resource "terraform_data" "broken" {
  provisioner "local-exec" {
    command = "echo about to fail; exit 3"
  }
}
"""


def config_dir(tmp_path: Path, name: str, text: str) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "main.tf").write_text(text)
    return directory


def test_runners_list_add_remove(platform: Platform) -> None:
    listed = platform.iac("runners", "list").ok().stdout
    assert re.search(r"aws-1\s+127\.0\.0\.1:\d+\s+healthy\s+provider=aws", listed), listed
    assert re.search(r"gcp-1\s+127\.0\.0\.1:\d+\s+healthy\s+provider=gcp", listed), listed
    rows = {r["name"]: r for r in json_of(platform.iac("runners", "list", "--json"))}
    assert rows["aws-1"]["labels"] == {"provider": "aws"}
    assert rows["gcp-1"]["status"] == "healthy"

    added = platform.iac(
        "runners",
        "add",
        "spare",
        "127.0.0.1:9",
        "--label",
        "provider=azure",
        "--label",
        "env=dev",
        "--token",
        "runner-secret-token",
    ).ok()
    assert "registered runner spare at 127.0.0.1:9" in added.stdout
    spare = json_of(platform.iac("runners", "show", "spare", "--json"))
    assert spare["labels"] == {"provider": "azure", "env": "dev"}
    assert spare["has_token"] is True
    assert "runner-secret-token" not in "".join(platform.transcript[-4:])
    assert_one_line_error(
        platform.iac("runners", "add", "spare", "127.0.0.1:9"), 2, "already registered", "HTTP 409"
    )
    assert platform.iac("runners", "remove", "spare").ok().stdout == "removed runner spare\n"
    assert "spare" not in platform.iac("runners", "list").ok().stdout
    assert_one_line_error(
        platform.iac("runners", "remove", "spare"), 2, "not registered", "HTTP 404"
    )


def test_tokens_create_list_revoke(platform: Platform) -> None:
    created = platform.iac(
        "tokens", "create", "ci-bot", "--expires-in-days", "7", "--role", "admin"
    ).ok()
    token = created.stdout.strip()
    assert len(token) >= 32 and "\n" not in token  # stdout is the token alone: $(iac ...)
    assert "not shown again" in created.stderr
    listed = platform.iac("tokens", "list").ok().stdout
    row = next(line for line in listed.splitlines() if "ci-bot" in line)
    assert re.search(r"^(\d+)\s+ci-bot\s+admin\s+all\s+.+\s+valid$", row), listed
    assert token not in listed
    token_id = re.match(r"\d+", row)
    assert token_id is not None

    with_new = platform.env(IAC_TOKEN=token)
    assert platform.iac("runners", "list", env=with_new).ok()
    # Revoking the token one is using is refused: it would lock the caller out.
    assert_one_line_error(
        platform.iac("tokens", "revoke", token_id[0], env=with_new), 2, "HTTP 409"
    )
    revoked = platform.iac("tokens", "revoke", token_id[0]).ok()
    assert revoked.stdout == f"revoked API token {token_id[0]}\n"
    assert_one_line_error(
        platform.iac("runners", "list", env=with_new), 2, "expired or revoked", "HTTP 401"
    )
    rows = {t["name"]: t for t in json_of(platform.iac("tokens", "list", "--json"))}
    assert rows["ci-bot"]["revoked"] is True and "token" not in rows["ci-bot"]
    assert_one_line_error(platform.iac("tokens", "revoke", "0"), 2, "TOKEN_ID")
    assert_one_line_error(platform.iac("tokens", "revoke", "999999"), 2, "HTTP 404")
    assert_one_line_error(platform.iac("tokens", "create", "x", "--expires-in-days", "0"), 2)


def test_plan_approve_apply_destroy(platform: Platform, tmp_path: Path) -> None:
    infra = config_dir(tmp_path, "infra", OFFLINE_CONFIG)
    # What must never travel: init's downloads and any local state.
    (infra / ".terraform").mkdir()
    (infra / ".terraform" / "junk.bin").write_bytes(b"\0" * 1000)
    (infra / "terraform.tfstate").write_text("{}")
    (infra / "terraform.tfstate.backup").write_text("{}")

    created = platform.iac(
        "deployments",
        "create",
        "web",
        "--dir",
        str(infra),
        "--label",
        "provider=aws",
        "--priority",
        "5",
    ).ok()
    assert "created deployment web" in created.stdout
    assert "uploaded configuration version 1 of web (1 files," in created.stdout

    # A sensitive value flows into terraform's output; the backend masks it as ***.
    platform.iac("vars", "set", "web", "greeting", SECRET, "--sensitive").ok()
    platform.iac("vars", "set", "web", "MY_SETTING", "plainly-visible", "--env").ok()
    from_stdin = platform.iac("vars", "set", "web", "db_password", "--sensitive", "-", input=SECRET)
    assert "set terraform variable db_password (sensitive) of web" in from_stdin.ok().stdout
    listed = platform.iac("vars", "list", "web").ok().stdout
    assert re.search(r"greeting\s+terraform\s+\(sensitive\)", listed), listed
    assert re.search(r"MY_SETTING\s+env\s+plainly-visible", listed), listed
    variables = {v["key"]: v for v in json_of(platform.iac("vars", "list", "web", "--json"))}
    assert variables["greeting"] == {
        "key": "greeting",
        "category": "terraform",
        "sensitive": True,
        "value": None,
    }
    assert variables["db_password"]["value"] is None
    platform.iac("vars", "unset", "web", "db_password").ok()

    apply = platform.iac("apply", "web").ok()
    assert "1 to add" in apply.stdout
    hint = re.search(r"iac runs approve (\d+) --follow", apply.stderr)
    assert hint, apply.stderr
    run_id = int(hint.group(1))
    assert "Apply complete" not in apply.stdout
    run = json_of(platform.iac("runs", "show", str(run_id), "--json"))
    assert run["status"] == "awaiting_approval"
    assert run["priority"] == 5 and run["runner_id"] == "aws-1"
    # The review: the counts as the plan ends, then the resource changes.
    assert "Plan: 1 to add, 0 to change, 0 to destroy; 0 to replace" in apply.stderr
    review = platform.iac("runs", "plan", str(run_id)).ok().stdout
    assert "Plan: 1 to add" in review and "+ terraform_data.example  create" in review, review
    assert SECRET not in review
    counts = json_of(platform.iac("runs", "plan", str(run_id), "--json"))["counts"]
    assert counts["add"] == 1 and counts["destroy"] == 0

    approved = platform.iac("runs", "approve", str(run_id), "--follow").ok()
    assert "Apply complete! Resources: 1 added" in approved.stdout
    assert "provisioned ***" in approved.stdout
    assert "1 to add" not in approved.stdout  # the plan was shown by `iac apply` already
    assert f"run {run_id} succeeded" in approved.stderr

    runs = json_of(platform.iac("runs", "list", "--deployment", "web", "--json"))
    assert [r["id"] for r in runs] == [run_id] and runs[0]["status"] == "succeeded"
    shown = platform.iac("runs", "show", str(run_id)).ok().stdout
    assert re.search(r"status\s+succeeded", shown) and "approved" in shown
    # The approval wait is waiting time, not running time.
    assert re.search(r"running\s+\d+\.\ds\n", shown), shown
    assert re.search(r"waiting\s+\d+\.\ds \(queued and awaiting approval\)", shown), shown
    assert runs[0]["waiting_seconds"] > 0 and runs[0]["running_seconds"] > 0
    table = platform.iac("runs", "list", "--deployment", "web").ok().stdout
    assert re.search(r"RUNNING\s+WAITED", table) and re.search(r"\d+\.\ds\s+\d+\.\ds", table)
    assert re.search(r"succeeded\s+\+1 ~0 -0\s", table), table
    assert json_of(platform.iac("outputs", "web", "--json")) == {"greeting": "(sensitive value)"}
    assert platform.iac("state", "list", "web").ok().stdout == "terraform_data.example\n"
    unlock = platform.iac("state", "unlock", "web")
    assert unlock.returncode == 2 and "the state of 'web' is not locked" in unlock.stderr
    log = json_of(platform.iac("logs", str(run_id), "--json"))
    assert log["last_seq"] == len(log["lines"]) > 0
    assert platform.iac("logs", str(run_id)).ok().stdout.splitlines() == log["lines"]

    deployment = json_of(platform.iac("deployments", "show", "web", "--json"))
    assert deployment["required_labels"] == {"provider": "aws"}
    assert deployment["default_priority"] == 5
    assert [v["version"] for v in deployment["config_versions"]] == [1]
    assert deployment["recent_runs"][0]["id"] == run_id
    assert "web" in [d["name"] for d in json_of(platform.iac("deployments", "list", "--json"))]

    # The admin may reveal a sensitive value in the outputs; nobody else sees it.
    revealed = json_of(platform.iac("outputs", "web", "--reveal", "--json"))
    assert revealed == {"greeting": SECRET}
    del platform.transcript[-2:]  # the one output asked to show it (checked below: no other)
    # A destroy that waits for approval, discarded: nothing is destroyed.
    waiting = platform.iac("destroy", "web", "--comment", "cleanup?").ok()
    assert "Plan: 0 to add, 0 to change, 1 to destroy; 0 to replace" in waiting.stderr
    held = re.search(r"iac runs discard (\d+)", waiting.stderr)
    assert held, waiting.stderr
    discarded = platform.iac("runs", "discard", held.group(1), "--comment", "not today").ok()
    assert discarded.stdout == f"run {held.group(1)} discarded\n"
    shown = platform.iac("runs", "show", held.group(1)).ok().stdout
    assert re.search(r"status\s+discarded", shown) and "not today" in shown and "cleanup?" in shown
    assert platform.iac("state", "list", "web").ok().stdout == "terraform_data.example\n"

    destroy = platform.iac("destroy", "web", "--auto-approve").ok()
    assert "Apply complete! Resources: 0 added, 0 changed, 1 destroyed." in destroy.stdout
    assert "succeeded" in destroy.stderr

    # A new configuration version, then a plan with --json: the run on stdout, the log on stderr.
    (infra / "extra.tf").write_text('output "extra" {\n  value = "x"\n}\n')
    uploaded = json_of(platform.iac("deployments", "upload", "web", "--dir", str(infra), "--json"))
    assert uploaded["version"] == 2 and uploaded["files"] == 2
    planned = json_of(platform.iac("plan", "web", "--json"))
    assert planned["status"] == "succeeded" and planned["config_version"] == 2

    assert all(SECRET not in text for text in platform.transcript)


def test_failing_apply_exits_1(platform: Platform, tmp_path: Path) -> None:
    broken = config_dir(tmp_path, "broken", FAILING_CONFIG)
    platform.iac("deployments", "create", "broken", "--dir", str(broken)).ok()
    result = platform.iac("apply", "broken", "--auto-approve")
    assert result.returncode == 1, result
    assert "about to fail" in result.stdout
    assert re.search(r"run \d+ failed", result.stderr), result.stderr
    assert "Traceback" not in result.stderr

    bad_syntax = config_dir(tmp_path, "syntax", 'resource "terraform_data" "x" {\n')
    platform.iac("deployments", "create", "syntax", "--dir", str(bad_syntax)).ok()
    plan = platform.iac("plan", "syntax")
    assert plan.returncode == 1, plan
    assert "Error" in plan.stdout


def test_no_follow_and_queue_status_then_cancel(platform: Platform, tmp_path: Path) -> None:
    infra = config_dir(tmp_path, "azure", OFFLINE_CONFIG)
    platform.iac(
        "deployments", "create", "azure-only", "--dir", str(infra), "--label", "provider=azure"
    ).ok()
    started = json_of(platform.iac("plan", "azure-only", "--no-follow", "--json"))
    assert started["status"] == "queued"

    # Following a queued run shows its state and why it waits; cancelling ends it with 1.
    follower = platform.spawn("logs", str(started["id"]), "--follow")
    try:
        line = follower.wait_for_line(r"no registered runner has the labels provider=azure", "err")
        assert re.search(rf"run {started['id']} queued [\d.]+s?", line), line
        canceled = platform.iac("runs", "cancel", str(started["id"])).ok()
        assert f"run {started['id']} canceled" in canceled.stdout
        result = follower.finish()
    finally:
        follower.kill()
    assert result.returncode == 1, result
    assert f"run {started['id']} canceled" in result.stderr
    assert "Traceback" not in result.stderr
    assert_one_line_error(
        platform.iac("runs", "cancel", str(started["id"])), 2, "already ended", "HTTP 409"
    )


def test_bad_input_is_one_line(platform: Platform, tmp_path: Path) -> None:
    assert_one_line_error(
        platform.iac("plan", "no-such-deployment"), 2, "no-such-deployment", "HTTP 404"
    )
    assert_one_line_error(platform.iac("deployments", "show", "nope"), 2, "HTTP 404")
    assert_one_line_error(platform.iac("vars", "list", "nope", "--json"), 2, "HTTP 404")
    assert_one_line_error(platform.iac("runs", "show", "999999"), 2, "HTTP 404")
    assert_one_line_error(platform.iac("runs", "approve", "999999"), 2, "HTTP 404")
    assert_one_line_error(platform.iac("logs", "999999", "--follow"), 2, "HTTP 404")
    infra = config_dir(tmp_path, "infra", OFFLINE_CONFIG)
    assert_one_line_error(
        platform.iac("deployments", "create", "x", "--dir", str(infra), "--label", "provider"),
        2,
        "--label",
        "KEY=VALUE",
    )
    assert_one_line_error(platform.iac("runners", "add", "r", "nohostport"), 2, "host:port")
    assert_one_line_error(platform.iac("runs", "show", "abc"), 2, "not a valid integer")
    assert_one_line_error(platform.iac("deployments", "create"), 2, "Missing argument")
    assert_one_line_error(platform.iac("runs", "list", "--status", "sleeping"), 2, "--status")
    assert_one_line_error(
        platform.iac("deployments", "create", "nodir", "--dir", str(tmp_path / "missing")),
        2,
        "not a directory",
    )
    assert "nodir" not in platform.iac("deployments", "list").ok().stdout  # nothing half-made

    no_token = platform.iac("runners", "list", env=platform.env(IAC_TOKEN=None))
    assert_one_line_error(no_token, 2, "no API token", "IAC_TOKEN", "HTTP 401")
    bad_token = platform.iac("--token", "wrong-token", "runners", "list")
    assert_one_line_error(bad_token, 2, "invalid, expired or revoked API token", "HTTP 401")

    from tests.procs import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    for argv in (["runners", "list"], ["apply", "web"], ["logs", "1", "--follow"]):
        result = platform.iac("--url", dead, *argv)
        assert_one_line_error(result, 1, f"cannot reach the backend at {dead}")
    assert_one_line_error(platform.iac("--url", "ftp://x", "runners", "list"), 2, "http://")


def test_config_file_env_and_flags(platform: Platform, tmp_path: Path) -> None:
    config = tmp_path / "iac.toml"
    config.write_text(f'url = "{platform.url}"\ntoken = "{TOKEN}"\n')
    # The file alone.
    from_file = platform.env(IAC_URL=None, IAC_TOKEN=None, IAC_CONFIG=str(config))
    assert "aws-1" in platform.iac("runners", "list", env=from_file).ok().stdout
    # The default place: $XDG_CONFIG_HOME/iac/config.toml.
    default = platform.home / "xdg" / "iac" / "config.toml"
    default.parent.mkdir(parents=True, exist_ok=True)
    default.write_text(config.read_text())
    try:
        env = platform.env(IAC_URL=None, IAC_TOKEN=None)
        assert "aws-1" in platform.iac("runners", "list", env=env).ok().stdout
    finally:
        default.unlink()

    # Env beats the file: the file's URL is dead, IAC_URL is right.
    config.write_text('url = "http://127.0.0.1:9"\ntoken = "file-token"\n')
    env = platform.env(IAC_CONFIG=str(config))
    assert "aws-1" in platform.iac("runners", "list", env=env).ok().stdout
    # Flags beat env: a wrong --token loses although IAC_TOKEN is right.
    assert_one_line_error(
        platform.iac("--token", "flag-token", "runners", "list", env=env), 2, "HTTP 401"
    )
    assert "aws-1" in platform.iac("--url", platform.url, "runners", "list").ok().stdout

    config.write_text("url = [\n")
    assert_one_line_error(
        platform.iac("runners", "list", env=platform.env(IAC_CONFIG=str(config))),
        2,
        "not valid TOML",
    )
    missing = platform.env(IAC_CONFIG=str(tmp_path / "absent.toml"))
    assert_one_line_error(platform.iac("runners", "list", env=missing), 2, "does not exist")


def read_pty_until(fd: int, pattern: str, timeout: float = 60) -> str:
    """What the terminal showed, up to the first match of `pattern` (or its end)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, seen.decode(errors="replace")):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {pattern!r} on the terminal: {seen!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side closed
            chunk = b""
        if not chunk:
            break
        seen += chunk
    return seen.decode(errors="replace")


def test_queue_status_line_on_a_terminal(platform: Platform, tmp_path: Path) -> None:
    """On a terminal the queued run is one live line: spinner, elapsed time, state, reason."""
    infra = config_dir(tmp_path, "tty", OFFLINE_CONFIG)
    platform.iac(
        "deployments", "create", "tty-queued", "--dir", str(infra), "--label", "provider=nowhere"
    ).ok()
    main_fd, terminal = pty.openpty()
    env = platform.env(COLUMNS=None, TERM="xterm-256color")
    proc = subprocess.Popen(
        [IAC, "plan", "tty-queued"], env=env, stdout=subprocess.DEVNULL, stderr=terminal
    )
    os.close(terminal)
    try:
        # Redrawn in place: after a second of waiting, still one line on the screen.
        screen = read_pty_until(
            main_fd, r"queued [1-9]\.\ds: no registered runner has the labels provider=nowhere"
        )
        assert screen.count("\n") <= 1, screen
        run = json_of(platform.iac("runs", "list", "--deployment", "tty-queued", "--json"))[0]
        platform.iac("runs", "cancel", str(run["id"])).ok()
        assert proc.wait(60) == 1
        rest = read_pty_until(main_fd, "canceled")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main_fd)
    assert f"run {run['id']} canceled" in rest
    assert "Traceback" not in screen + rest


def on_terminal(platform: Platform, *args: str, answer: str | None, expect: str) -> tuple[int, str]:
    """Run `iac ARGS` with a terminal as stdin, stdout and stderr; when the screen shows
    `expect`, type `answer` (if any); the exit code and everything the terminal showed."""
    main_fd, terminal = pty.openpty()
    env = platform.env(COLUMNS=None, TERM="xterm-256color")
    proc = subprocess.Popen([IAC, *args], env=env, stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    try:
        screen = read_pty_until(main_fd, expect)
        if answer is not None:
            os.write(main_fd, answer.encode() + b"\n")
        code = proc.wait(60)
        screen += read_pty_until(main_fd, "(?!)", timeout=10)  # (?!) never matches: to the end
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main_fd)
    return code, screen


def test_delete_is_confirmed_kept_restored_and_purged(platform: Platform, tmp_path: Path) -> None:
    infra = config_dir(tmp_path, "keep", OFFLINE_CONFIG)
    platform.iac("deployments", "create", "keep", "--dir", str(infra)).ok()
    applied = platform.iac("apply", "keep", "--auto-approve").ok()
    assert "Resources: 1 added" in applied.stdout
    run_ids = [
        r["id"] for r in json_of(platform.iac("runs", "list", "--deployment", "keep", "--json"))
    ]
    assert json_of(platform.iac("deployments", "show", "keep", "--json"))["managed_resources"] == 1

    # Live resources need --force, with or without a terminal.
    assert_one_line_error(
        platform.iac("deployments", "delete", "keep", input=""),
        2,
        "deployment keep still manages 1 resource in its latest state",
        "iac destroy keep",
        "--force",
    )
    code, screen = on_terminal(
        platform, "deployments", "delete", "keep", answer=None, expect="resource"
    )
    assert code == 2 and "still manages 1 resource" in screen, screen
    assert "keep" in [d["name"] for d in json_of(platform.iac("deployments", "list", "--json"))]

    deleted = platform.iac("deployments", "delete", "keep", "--force").ok()
    assert deleted.stdout.startswith("deleted deployment keep: kept until ")
    assert "restore it with: iac deployments restore keep" in deleted.stdout
    assert "keep" not in platform.iac("deployments", "list").ok().stdout
    assert re.search(
        r"keep\s+terraform\s+\S+ \S+\s+\S+ \S+",
        platform.iac("deployments", "list", "--deleted").ok().stdout,
    )
    assert json_of(platform.iac("runs", "list", "--deployment", "keep", "--json")) == []
    assert_one_line_error(
        platform.iac("deployments", "show", "keep"),
        2,
        "was deleted",
        "iac deployments restore keep",
        "HTTP 404",
    )
    assert_one_line_error(platform.iac("plan", "keep"), 2, "HTTP 404")
    assert_one_line_error(
        platform.iac("logs", str(run_ids[0])), 2, "deleted deployment 'keep'", "HTTP 404"
    )
    assert_one_line_error(
        platform.iac("deployments", "create", "keep", "--dir", str(infra)),
        2,
        "a deleted deployment named 'keep' exists",
        "HTTP 409",
    )
    assert_one_line_error(platform.iac("deployments", "restore", "nope"), 2, "HTTP 404")

    assert (
        platform.iac("deployments", "restore", "keep").ok().stdout == "restored deployment keep\n"
    )
    back = json_of(platform.iac("runs", "list", "--deployment", "keep", "--json"))
    assert [r["id"] for r in back] == run_ids
    assert json_of(platform.iac("deployments", "show", "keep", "--json"))["managed_resources"] == 1
    assert_one_line_error(
        platform.iac("deployments", "delete", "keep", "--purge", "--force"),
        2,
        "not deleted",
        "HTTP 409",
    )
    destroyed = platform.iac("destroy", "keep", "--auto-approve").ok()
    assert "1 destroyed" in destroyed.stdout

    # Nothing managed any more: without a terminal nobody can confirm, so --force it is; on
    # one, typing the name deletes, anything else does not.
    assert_one_line_error(
        platform.iac("deployments", "delete", "keep", input=""),
        2,
        "stdin is not a terminal",
        "--force",
    )
    code, screen = on_terminal(
        platform, "deployments", "delete", "keep", answer="kep", expect="Type keep"
    )
    assert code == 1, screen
    assert "iac deployments restore keep" in screen  # it said what would happen
    assert "confirmation did not match: deployment keep was not deleted" in screen
    code, screen = on_terminal(
        platform, "deployments", "delete", "keep", answer="keep", expect="Type keep"
    )
    assert code == 0, screen
    assert "deleted deployment keep: kept until" in screen
    # Purging: two explicit steps, confirmed the same way.
    code, screen = on_terminal(
        platform, "deployments", "delete", "keep", "--purge", answer="keep", expect="Type keep"
    )
    assert code == 0, screen
    assert "cannot be undone" in screen and "purged deployment keep" in screen
    assert "keep" not in platform.iac("deployments", "list", "--deleted").ok().stdout
    assert_one_line_error(platform.iac("runs", "show", str(run_ids[0])), 2, "HTTP 404")


def test_runners_show_the_labels_routing_uses_and_where_each_came_from(
    platform: Platform, tool_env: dict[str, str], tmp_path: Path
) -> None:
    """A runner server started with --label provider=aws --label zone=a, registered with
    provider=gcp and team=x: routing matches provider=aws (what it reports wins), team=x
    and zone=a, and that is what `iac runners list/show` shows, with each label's source."""
    server = start_runner(
        tmp_path, tool_env, "--label", "provider=aws", "--label", "zone=a", name="mixed"
    )
    try:
        platform.iac(
            "runners",
            "add",
            "mixed",
            server.address,
            "--label",
            "provider=gcp",
            "--label",
            "team=x",
        ).ok()
        platform.backend.wait_runners_healthy("mixed")
        shown = json_of(platform.iac("runners", "show", "mixed", "--json"))
        assert shown["labels"] == {"provider": "gcp", "team": "x"}
        assert shown["effective_labels"] == [
            {"key": "provider", "value": "aws", "source": "reported", "registered_value": "gcp"},
            {"key": "team", "value": "x", "source": "registered", "registered_value": None},
            {"key": "zone", "value": "a", "source": "reported", "registered_value": None},
        ]
        text = platform.iac("runners", "show", "mixed").ok().stdout
        assert re.search(
            r"labels\s+provider=aws \(reported, registered: gcp\), team=x \(registered\), "
            r"zone=a \(reported\)",
            text,
        ), text
        assert re.search(r"registered labels\s+provider=gcp,team=x", text), text
        listed = platform.iac("runners", "list").ok().stdout
        assert re.search(r"mixed\s+127\.0\.0\.1:\d+\s+healthy\s+provider=aws,team=x,zone=a", listed)
        aws = json_of(platform.iac("runners", "show", "aws-1", "--json"))["effective_labels"]
        assert aws == [
            {"key": "provider", "value": "aws", "source": "both", "registered_value": None}
        ]

        # Routing uses the same labels: zone=a + team=x runs there, provider=gcp + team=x waits.
        infra = config_dir(tmp_path, "routed", OFFLINE_CONFIG)
        platform.iac(
            "deployments",
            "create",
            "routed",
            "--dir",
            str(infra),
            "--label",
            "zone=a",
            "--label",
            "team=x",
        ).ok()
        planned = json_of(platform.iac("plan", "routed", "--json"))
        assert planned["status"] == "succeeded" and planned["runner_id"] == "mixed"
        platform.iac(
            "deployments",
            "create",
            "nowhere",
            "--dir",
            str(infra),
            "--label",
            "provider=gcp",
            "--label",
            "team=x",
        ).ok()
        queued = json_of(platform.iac("plan", "nowhere", "--no-follow", "--json"))
        reason = wait_for(lambda: platform.backend.run(queued["id"])["wait_reason"], timeout=30)
        assert reason == "no registered runner has the labels provider=gcp, team=x", reason
        platform.iac("runs", "cancel", str(queued["id"])).ok()
    finally:
        platform.iac("runners", "remove", "mixed")
        server.stop()


def test_a_planner_token_for_one_team_plans_and_nothing_more(
    platform: Platform, tmp_path: Path
) -> None:
    """The README's CI recipe: an admin makes a planner token scoped to one team's label;
    with it `iac plan` works, `iac apply` and approving are refused, and other teams'
    deployments do not exist."""
    infra = config_dir(tmp_path, "infra", OFFLINE_CONFIG)
    for name, team in (("pay-api", "payments"), ("web-shop", "shop")):
        platform.iac(
            "deployments", "create", name, "--dir", str(infra), "--label", "provider=aws",
            "--tag", f"team={team}",
        ).ok()  # fmt: skip
    token = (
        platform.iac(
            "tokens", "create", "ci-payments", "--role", "planner", "--scope-label", "team=payments"
        )
        .ok()
        .stdout.strip()
    )
    ci = platform.env(IAC_TOKEN=token)
    me = json_of(platform.iac("me", "--json", env=ci))
    assert me["role"] == "planner" and me["scope"] == {"names": [], "labels": {"team": "payments"}}
    shown = platform.iac("me", env=ci).ok().stdout
    assert re.search(r"scope\s+labels team=payments", shown), shown
    assert "Plan: 1 to add" in platform.iac("plan", "pay-api", env=ci).ok().stderr
    assert_one_line_error(
        platform.iac("apply", "pay-api", env=ci), 2, "needs the operator role", "HTTP 403"
    )
    assert_one_line_error(
        platform.iac("plan", "web-shop", env=ci), 2, "'web-shop' does not exist", "HTTP 404"
    )
    listed = json_of(platform.iac("deployments", "list", "--json", env=ci))
    assert [d["name"] for d in listed] == ["pay-api"]
    assert_one_line_error(
        platform.iac("tokens", "create", "more", "--role", "admin", env=ci), 2, "HTTP 403"
    )
    # Every refusal is in the audit log, which only an unscoped admin reads.
    refusals = json_of(platform.iac("audit", "--actor", "ci-payments", "--json"))
    assert [(e["action"], e["result"][:3]) for e in refusals] == [
        ("POST /runs", "201"),
        ("POST /runs", "403"),
        ("POST /runs", "404"),
        ("POST /tokens", "403"),
    ], refusals
    assert_one_line_error(platform.iac("audit", env=ci), 2, "HTTP 403")
    following = platform.spawn("audit", "--follow", "--action", "DELETE")
    platform.iac("vars", "unset", "pay-api", "nothing-here")  # a refused DELETE (404)
    line = following.wait_for_line(r"name=pay-api key=nothing-here")
    assert "DELETE /deployments/{name}/variables/{key}" in line and "404" in line, line
    following.proc.send_signal(signal.SIGINT)
    assert following.finish().returncode == 130
    verified = platform.iac("audit", "verify").ok().stdout
    assert re.match(r"audit log verified: \d+ entries, the chain holds", verified), verified
