"""`iac notifications` as a subprocess against a backend process (no runner: the test
event and queued runs are what is sent) and a real receiver on loopback."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.backend.platform import start_backend
from tests.backend.receiver import Receiver, signature_ok
from tests.conftest import wait_for
from tests.iac_cli.conftest import Platform, assert_one_line_error, json_of, session_tool_env
from tests.iac_cli.test_cli_e2e import on_terminal


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as started:
        yield started


@pytest.fixture(scope="module")
def notify_platform(
    tf_cli_config: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("cli-notify")
    env = {
        **session_tool_env(tf_cli_config),
        "ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "IAC_NOTIFY_ALLOW": "127.0.0.1",
        "IAC_NOTIFY_POLL_INTERVAL": "0.05",
    }
    backend = start_backend(tmp, env, f"sqlite:///{tmp / 'db' / 'iac.db'}")
    home = tmp / "home"
    home.mkdir()
    try:
        yield Platform(backend, {}, home)
    finally:
        backend.stop()


def test_add_list_test_deliveries_disable_remove(
    notify_platform: Platform, receiver: Receiver, tmp_path: Path
) -> None:
    iac = notify_platform.iac
    added = iac("notifications", "add", "ops", "--url", receiver.url("/ops/credential")).ok()
    lines = added.stdout.splitlines()
    assert re.fullmatch(
        rf"added webhook destination ops \(id \d+\) to 127\.0\.0\.1:{receiver.port} for every "
        "deployment, events: all",
        lines[0],
    ), lines
    secret = lines[1]
    assert len(secret) >= 32 and "not shown again" in added.stderr
    chat = iac(
        "notifications", "add", "chat", "--kind", "slack", "--url", receiver.url("/chat"),
        "--event", "run.failed", "--event", "run.succeeded", "--json",
    )  # fmt: skip
    assert json_of(chat)["events"] == ["run.succeeded", "run.failed"]
    assert json_of(chat)["secret"] is None

    listed = iac("notifications", "list").ok().stdout
    assert "ops" in listed and "chat" in listed and "run.succeeded,run.failed" in listed
    assert "credential" not in listed and secret not in listed
    rows = json_of(iac("notifications", "list", "--json"))
    assert [r["name"] for r in rows] == ["chat", "ops"]

    sent = iac("notifications", "test", "ops").ok().stdout
    assert sent.startswith("test notification queued for ops: delivery ")
    (got,) = receiver.wait(lambda r: len(r) == 1)
    assert got.path == "/ops/credential" and signature_ok(secret, got)
    assert got.json()["message"].startswith("a test notification from iac-runner")
    done = wait_for(
        lambda: [
            d
            for d in json_of(iac("notifications", "deliveries", "ops", "--json"))
            if d["status"] == "delivered"
        ]
    )
    assert isinstance(done, list) and done[0]["event"] == "test"
    table = iac("notifications", "deliveries", "ops").ok().stdout
    assert "test" in table and "delivered" in table and "200" in table

    assert iac("notifications", "disable", "ops").ok().stdout == (
        "disabled notification destination ops\n"
    )
    assert_one_line_error(iac("notifications", "test", "ops"), 2, "is disabled", "(HTTP 409)")
    iac("notifications", "enable", "ops").ok()
    assert iac("notifications", "remove", "chat", "--force").ok().stdout.startswith("removed")
    assert [r["name"] for r in json_of(iac("notifications", "list", "--json"))] == ["ops"]
    # Nothing the CLI printed holds the URL's path.
    assert not any("credential" in text for text in notify_platform.transcript)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["remove", "nope"], ["no notification destination named 'nope'"]),
        (["test", "999"], ["no notification destination named '999'"]),
        (
            ["add", "x", "--url", "http://169.254.169.254/latest"],
            ["169.254.169.254 a link-local address", "(HTTP 400)"],
        ),
        (["add", "x", "--url", "http://localhost:1/"], []),  # allowed: 127.0.0.1 is
        (["add", "y", "--url", "ftp://127.0.0.1/"], ["must be http:// or https://", "(HTTP 422)"]),
        (["add", "z", "--url", "http://127.0.0.1/", "--secret", "short"], ["16 to 256"]),
        (["add", "w", "--url", "http://127.0.0.1/", "--deployment", "nope"], ["does not exist"]),
    ],
)
def test_bad_input_is_one_line(
    notify_platform: Platform, args: list[str], fragments: list[str]
) -> None:
    result = notify_platform.iac("notifications", *args)
    if not fragments:
        result.ok()
        notify_platform.iac("notifications", "remove", args[1], "--force").ok()
        return
    assert_one_line_error(result, 2, *fragments)
    listed = notify_platform.iac("notifications", "list", "--json").ok().stdout
    assert not {r["name"] for r in json.loads(listed or "[]")} & {"x", "y", "z", "w"}


def test_a_credential_url_and_secret_come_from_stdin_or_the_environment(
    notify_platform: Platform, receiver: Receiver
) -> None:
    """A Slack URL and a signing secret are credentials: never needed on the command line,
    where `ps` and the shell's history would show them."""
    iac = notify_platform.iac
    url = receiver.url("/services/T0/B0/credential-from-stdin")
    from_stdin = iac("notifications", "add", "piped", "--url", "-", input=url + "\n").ok()
    assert from_stdin.stdout.startswith("added webhook destination piped")
    own = "a-secret-that-was-piped-in"
    iac("notifications", "add", "signed", "--url", url, "--secret", "-", input=own).ok()
    env = notify_platform.env(IAC_DESTINATION_URL=url, IAC_DESTINATION_SECRET=own + "-env")
    by_env = iac("notifications", "add", "by-env", "--json", env=env).ok()
    assert json_of(by_env)["url_host"] == f"127.0.0.1:{receiver.port}"
    assert json_of(by_env)["secret"] == own + "-env"
    for name in ("signed", "by-env"):
        iac("notifications", "test", name).ok()
    path = "/services/T0/B0/credential-from-stdin"
    sent = receiver.wait(lambda r: len([x for x in r if x.path == path]) >= 2)
    secrets = {"signed": own, "by-env": own + "-env"}
    for got in (r for r in sent if r.path == path):
        assert signature_ok(secrets[got.json()["destination"]["name"]], got)
    assert_one_line_error(
        iac("notifications", "add", "both", "--url", "-", "--secret", "-", input="x"),
        2,
        "only one of --url and --secret can be read from stdin",
    )
    assert_one_line_error(
        iac("notifications", "add", "empty", "--url", "-", input=""), 2, "stdin", "was empty"
    )
    assert "IAC_DESTINATION_URL" in iac("notifications", "add", "--help").ok().stdout
    for name in ("piped", "signed", "by-env"):
        iac("notifications", "remove", name, "--force").ok()
    assert not any("credential-from-stdin" in text for text in notify_platform.transcript)


def test_remove_is_confirmed_and_keeps_what_waits_without_force(
    notify_platform: Platform,
) -> None:
    iac = notify_platform.iac
    iac("notifications", "add", "gone", "--url", "http://127.0.0.1:9/nobody").ok()
    assert_one_line_error(
        iac("notifications", "remove", "gone"), 2, "stdin is not a terminal", "--force"
    )
    code, screen = on_terminal(
        notify_platform, "notifications", "remove", "gone", answer="gnoe", expect="Type gone"
    )
    assert code == 1 and "confirmation did not match" in screen, screen
    assert "iac notifications disable" in screen
    # A delivery waiting (nobody listens on port 9): removing would drop it.
    iac("notifications", "test", "gone").ok()
    assert_one_line_error(
        iac("notifications", "remove", "gone"),
        2,
        "has 1 deliveries waiting to be sent",
        "iac notifications disable gone",
    )
    names = [r["name"] for r in json_of(iac("notifications", "list", "--json"))]
    assert "gone" in names
    code, screen = on_terminal(notify_platform, "notifications", "add", "typed", "--url",
                               "http://127.0.0.1:9/x", answer=None, expect="added")  # fmt: skip
    assert code == 0, screen
    code, screen = on_terminal(
        notify_platform, "notifications", "remove", "typed", answer="typed", expect="Type typed"
    )
    assert code == 0 and "removed notification destination typed" in screen, screen
    iac("notifications", "remove", "gone", "--force").ok()
    names = [r["name"] for r in json_of(iac("notifications", "list", "--json"))]
    assert "gone" not in names and "typed" not in names
