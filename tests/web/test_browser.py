"""The web UI in a real browser (headless Chromium) against a real backend, real runner
servers and real terraform: sign in, watch a log stream live and resume after the backend
restarts, approve, cancel, the runners page, and a refused token."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Dialog, Page, Request, expect

from tests.backend.archives import tar_gz
from tests.backend.platform import TOKEN
from tests.conftest import OFFLINE_CONFIG, pids_matching, wait_for
from tests.web.conftest import Platform, screenshot, sign_in

LINES_CONFIG = """\
resource "terraform_data" "lines" {
  provisioner "local-exec" {
    command = "for i in $(seq 1 %d); do echo line-$i; sleep %s; done"
  }
}
"""

LONG_CONFIG = """\
resource "terraform_data" "slow" {
  provisioner "local-exec" {
    command = "echo started; sleep %s"
  }
}
"""

PROVISIONER = """\
resource "terraform_data" "%s" {
  provisioner "local-exec" {
    command = "%s"
  }
}
"""

FAST_CONFIG = 'resource "terraform_data" "x" {}\n'
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log_lines(page: Page) -> list[str]:
    return page.locator("#log .line").all_inner_texts()


def stored_lines(platform: Platform, run_id: int) -> list[str]:
    """The run's stored log as the page should show it: colours gone, text as printed."""
    return [ANSI.sub("", line) for line in platform.backend.log_text(run_id).splitlines()]


def printed(lines: list[str]) -> list[int]:
    found = (re.search(r"\(local-exec\): line-(\d+)$", line) for line in lines)
    return [int(m.group(1)) for m in found if m]


def accept_next_dialog(page: Page) -> list[str]:
    """Accept the next confirm() and keep its text."""
    messages: list[str] = []

    def accept(dialog: Dialog) -> None:
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    return messages


def at_bottom(page: Page) -> Any:
    return page.evaluate(
        "() => { const b = document.getElementById('log');"
        " return b.scrollHeight - b.scrollTop - b.clientHeight < 24; }"
    )


def test_sign_in_then_the_overview_shows_new_runs_without_a_reload(
    platform: Platform, page: Page
) -> None:
    platform.backend.deploy(
        "overview", {"main.tf": FAST_CONFIG}, required_labels={"provider": "gcp"}
    )
    page.goto(platform.url + "/")
    page.wait_for_url("**/login?reason=missing&next=%2F")
    expect(page.locator("#login-message")).to_have_text("Sign in with an API token to continue.")
    page.fill("#token", TOKEN)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(platform.url + "/")
    assert TOKEN not in page.url
    assert page.evaluate("sessionStorage.getItem('iac.apiToken')") == TOKEN
    assert page.evaluate("document.cookie") == ""

    # Started after the page was opened: the overview's polling picks it up.
    run = platform.backend.start("overview", "plan")
    row = page.locator(f"#runs tr[data-run-id='{run['id']}']")
    expect(row.locator(".status")).to_have_text("succeeded")
    cells = row.locator("td").all_inner_texts()
    assert cells[1:6] == ["overview", "plan", "succeeded", "+1 ~0 -0", "gcp-1"], cells
    assert cells[7] and cells[8] and cells[9], cells  # queued, started, ended
    assert re.fullmatch(r"\d+\.\d s", cells[10]), cells
    row.locator("a").first.click()
    page.wait_for_url(f"{platform.url}/runs/{run['id']}")
    expect(page.locator("#run-status")).to_have_text("succeeded")


def test_the_run_page_streams_the_log_live_and_follows_the_tail(
    platform: Platform, page: Page
) -> None:
    n = 60
    platform.backend.deploy(
        "stream", {"main.tf": LINES_CONFIG % (n, "0.2")}, required_labels={"provider": "aws"}
    )
    sign_in(page, platform.url)
    run = platform.backend.start("stream", "apply", auto_approve=True)
    page.goto(f"{platform.url}/runs/{run['id']}")
    log = page.locator("#log")
    expect(log).to_contain_text("(local-exec): line-3", timeout=60_000)
    # The loop has ~11 s to go: the lines after this one arrive while the page watches.
    assert f"line-{n}" not in log.inner_text()
    expect(page.locator("#stream-state")).to_have_text("live")
    expect(page.locator("#run-status")).to_have_text("applying")
    expect(page.locator("#force-cancel")).to_be_visible()
    screenshot(page, "run-streaming")

    # The page follows the tail while the user stays at the bottom (60 lines overflow the
    # box; the page's CSP forbids wait_for_function's eval, so wait on elements)...
    expect(page.locator("#log .line").nth(60)).to_be_attached()
    assert page.evaluate("(b => b.scrollHeight > b.clientHeight)(document.getElementById('log'))")
    assert at_bottom(page)
    # ...and stops following when the user scrolls up, while lines keep arriving.
    page.evaluate("document.getElementById('log').scrollTop = 0")
    expect(page.locator("#follow")).to_be_visible()
    seen = len(log_lines(page))
    expect(page.locator("#log .line").nth(seen + 5)).to_be_attached()
    assert page.evaluate("document.getElementById('log').scrollTop") == 0
    page.click("#follow")
    expect(page.locator("#follow")).to_be_hidden()
    assert at_bottom(page)

    expect(log).to_contain_text(f"(local-exec): line-{n}", timeout=60_000)
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator("#stream-state")).to_contain_text("end of log")
    assert at_bottom(page)
    shown = log_lines(page)
    assert shown == stored_lines(platform, run["id"])
    assert printed(shown) == list(range(1, n + 1))
    seqs = page.locator("#log .line").evaluate_all("ls => ls.map(l => Number(l.dataset.seq))")
    assert seqs == list(range(1, len(shown) + 1))
    # terraform's colours are rendered as spans, never shown as escape codes.
    assert page.locator("#log span.ansi-bold").count() > 0
    assert "\x1b" not in log.inner_text()
    expect(page.locator("#events li[data-kind='succeeded']")).to_have_count(1)
    with page.expect_download() as download:
        page.click("#download")
    assert download.value.suggested_filename == f"run-{run['id']}.log"
    assert Path(download.value.path()).read_text().splitlines() == shown


def test_a_long_log_keeps_its_tail_on_the_page_and_downloads_whole(
    platform: Platform, page: Page
) -> None:
    n = 120
    platform.backend.deploy(
        "tail", {"main.tf": LINES_CONFIG % (n, "0")}, required_labels={"provider": "gcp"}
    )
    sign_in(page, platform.url)
    page.evaluate("sessionStorage.setItem('iac.maxLogLines', '50')")
    run = platform.backend.wait(
        platform.backend.start("tail", "apply", auto_approve=True)["id"], "succeeded"
    )
    page.goto(f"{platform.url}/runs/{run['id']}")
    expect(page.locator("#stream-state")).to_contain_text("end of log")
    stored = stored_lines(platform, run["id"])
    assert log_lines(page) == stored[-50:]
    expect(page.locator("#log-trimmed")).to_contain_text(f"{len(stored) - 50} earlier lines")
    with page.expect_download() as download:
        page.click("#download")
    assert Path(download.value.path()).read_text().splitlines() == stored


def test_the_log_resumes_with_last_event_id_after_the_backend_restarts(
    platform: Platform, page: Page
) -> None:
    # Lines 1-20, then the provisioner waits for the gate file, then lines 21-40: the
    # backend is back before terraform saves its state (a restart takes seconds under load).
    gate = platform.tmp / "resume-gate"
    command = (
        "for i in $(seq 1 20); do echo line-$i; sleep 0.05; done; "
        f"while [ ! -e {gate} ]; do sleep 0.1; done; "
        "for i in $(seq 21 40); do echo line-$i; sleep 0.05; done"
    )
    config = PROVISIONER % ("gated", command)
    platform.backend.deploy("resume", {"main.tf": config}, required_labels={"provider": "aws"})
    sign_in(page, platform.url)
    run = platform.backend.start("resume", "apply", auto_approve=True)
    streams: list[Request] = []
    page.on("request", lambda r: streams.append(r) if "/logs?follow=true" in r.url else None)
    page.goto(f"{platform.url}/runs/{run['id']}")
    expect(page.locator("#log")).to_contain_text("(local-exec): line-5", timeout=60_000)
    platform.restart_backend()
    gate.touch()
    expect(page.locator("#log")).to_contain_text("(local-exec): line-40", timeout=90_000)
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=60_000)

    shown = log_lines(page)
    assert shown == stored_lines(platform, run["id"])  # every line once, in order
    assert printed(shown) == list(range(1, 41))
    assert page.locator("#log .gap").count() == 0
    resumed_from = [r.all_headers().get("last-event-id") for r in streams[1:]]
    assert resumed_from and all(h is not None and int(h) >= 5 for h in resumed_from), resumed_from
    assert streams[0].all_headers().get("last-event-id") is None
    for request in streams:
        assert request.all_headers()["authorization"] == f"Bearer {TOKEN}"


def test_approve_a_plan_from_the_page(platform: Platform, page: Page) -> None:
    platform.backend.deploy(
        "approve", {"main.tf": OFFLINE_CONFIG}, required_labels={"provider": "aws"}
    )
    platform.backend.call(
        "PUT", "/deployments/approve/variables/greeting", 201, json={"value": "hi from the web"}
    )
    sign_in(page, platform.url)
    run = platform.backend.start("approve", "apply")
    page.goto(f"{platform.url}/runs/{run['id']}")
    expect(page.locator("#run-status")).to_have_text("awaiting approval", timeout=60_000)
    expect(page.locator("#log")).to_contain_text("1 to add")
    approve = page.locator("#approve")
    expect(approve).to_be_visible()
    screenshot(page, "run-awaiting-approval")

    # Dismissing the confirmation changes nothing.
    page.once("dialog", lambda dialog: dialog.dismiss())
    approve.click()
    expect(page.locator("#run-status")).to_have_text("awaiting approval")
    assert platform.backend.run(run["id"])["status"] == "awaiting_approval"

    messages = accept_next_dialog(page)
    approve.click()
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=60_000)
    assert messages and f"Approve run {run['id']}" in messages[0], messages
    expect(page.locator("#log")).to_contain_text("provisioned hi from the web")
    expect(page.locator("#log")).to_contain_text("Apply complete! Resources: 1 added")
    expect(page.locator("#events li[data-kind='approved']")).to_have_count(1)
    expect(approve).to_be_hidden()
    expect(page.locator("#cancel")).to_be_hidden()
    done = platform.backend.run(run["id"])
    assert done["status"] == "succeeded"
    # The approval wait is waiting time, not running time; together they are the run's life.
    times = {e["kind"]: datetime.fromisoformat(e["at"]) for e in done["events"]}
    approval_wait = (times["approved"] - times["planned"]).total_seconds()
    assert done["waiting_seconds"] >= approval_wait > 0, done
    life = datetime.fromisoformat(done["ended_at"]) - datetime.fromisoformat(done["created_at"])
    total = done["running_seconds"] + done["waiting_seconds"]
    assert abs(total - life.total_seconds()) < 0.5, (done, life)
    expect(page.locator("dd[data-fact='running']")).to_have_text(re.compile(r"^\d+\.\d s$"))
    expect(page.locator("dd[data-fact='waiting']")).to_contain_text("queued and awaiting approval")


@pytest.mark.parametrize("force", [False, True], ids=["graceful", "force"])
def test_cancel_a_long_run_from_the_page(platform: Platform, page: Page, force: bool) -> None:
    marker = "74.0202" if force else "74.0101"
    name = "long-force" if force else "long"
    platform.backend.deploy(
        name, {"main.tf": LONG_CONFIG % marker}, required_labels={"provider": "aws"}
    )
    sign_in(page, platform.url)
    run = platform.backend.start(name, "apply", auto_approve=True)
    page.goto(f"{platform.url}/runs/{run['id']}")
    expect(page.locator("#log")).to_contain_text("(local-exec): started", timeout=60_000)
    wait_for(lambda: pids_matching(f"sleep {marker}"), timeout=30)
    button = page.locator("#force-cancel" if force else "#cancel")
    expect(button).to_be_visible()

    page.once("dialog", lambda dialog: dialog.dismiss())
    button.click()
    expect(page.locator("#run-status")).to_have_text("applying")
    assert platform.backend.run(run["id"])["cancel_requested"] is None

    messages = accept_next_dialog(page)
    button.click()
    expect(page.locator("#run-status")).to_have_text("canceled", timeout=60_000)
    assert messages and ("Force-cancel" if force else "Cancel") in messages[0], messages
    expect(page.locator("#run-error")).to_contain_text("SIGKILL" if force else "SIGINT")
    expect(page.locator("#events li[data-kind='cancel_requested']")).to_have_count(1)
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#force-cancel")).to_be_hidden()
    expect(page.locator("#stream-state")).to_contain_text("end of log")
    wait_for(lambda: not pids_matching(f"sleep {marker}"))
    assert platform.backend.call("GET", f"/deployments/{name}/state", 200)["lock"] is None
    screenshot(page, f"run-canceled-{'force' if force else 'graceful'}")


def test_runners_page_lists_labels_health_and_load(platform: Platform, page: Page) -> None:
    sign_in(page, platform.url, "/runners")
    aws = page.locator("#runners tr[data-runner='aws-1']")
    gcp = page.locator("#runners tr[data-runner='gcp-1']")
    expect(aws.locator(".labels")).to_have_text("provider=aws")
    expect(gcp.locator(".labels")).to_have_text("provider=gcp")
    expect(aws.locator(".health")).to_have_text("healthy")
    expect(gcp.locator(".health")).to_have_text("healthy")
    expect(gcp.locator(".load")).to_have_text(re.compile(r"^\s*0 / 2$"))
    expect(gcp.locator(".draining")).to_have_text("no")
    expect(aws).to_contain_text("terraform 1.")
    expect(aws).to_contain_text(platform.runners["aws-1"].address)

    # A run on gcp-1 shows in its load while it runs.
    platform.backend.deploy(
        "busy", {"main.tf": LONG_CONFIG % "74.0303"}, required_labels={"provider": "gcp"}
    )
    run = platform.backend.start("busy", "apply", auto_approve=True)
    expect(gcp.locator(".load")).to_have_text(re.compile(r"^\s*1 / 2$"), timeout=60_000)
    screenshot(page, "runners")
    platform.backend.call("POST", f"/runs/{run['id']}/cancel", 200, params={"force": True})
    platform.backend.wait(run["id"], "canceled")
    expect(gcp.locator(".load")).to_have_text(re.compile(r"^\s*0 / 2$"))


def test_a_wrong_token_sends_you_back_to_login(platform: Platform, page: Page) -> None:
    page.goto(platform.url + "/login")
    page.fill("#token", "not-the-token")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-message")).to_contain_text("The API token was refused")
    assert page.url == platform.url + "/login"
    assert page.evaluate("sessionStorage.getItem('iac.apiToken')") is None
    screenshot(page, "login-refused")

    # A token that the API refuses later (revoked, expired, mistyped) leads back to /login.
    page.evaluate("sessionStorage.setItem('iac.apiToken', 'revoked-token')")
    page.goto(platform.url + "/runners")
    page.wait_for_url("**/login?reason=invalid&next=%2Frunners")
    expect(page.locator("#login-message")).to_contain_text("The API token was refused")
    assert page.evaluate("sessionStorage.getItem('iac.apiToken')") is None

    # Signing in returns to the page that asked.
    page.fill("#token", TOKEN)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(platform.url + "/runners")
    expect(page.locator("#runners tr[data-runner='aws-1']")).to_be_visible()

    page.click("#sign-out")
    page.wait_for_url("**/login?reason=signed_out")
    expect(page.locator("#login-message")).to_have_text("You are signed out.")
    assert page.evaluate("sessionStorage.getItem('iac.apiToken')") is None

    # `next` only ever leads to a path of this site.
    page.goto(platform.url + "/login?next=//example.invalid/x")
    page.fill("#token", TOKEN)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(platform.url + "/")


def test_log_lines_are_text_colours_are_spans(platform: Platform, page: Page) -> None:
    """Markup that terraform prints is shown as text; ANSI colours become classes."""
    config = """\
resource "terraform_data" "markup" {
  provisioner "local-exec" {
    command = "printf '\\\\033[31mred-text\\\\033[0m <img src=x id=injected> & done\\\\n'"
  }
}
"""
    platform.backend.deploy("markup", {"main.tf": config}, required_labels={"provider": "aws"})
    sign_in(page, platform.url)
    run = platform.backend.start("markup", "apply", auto_approve=True)
    page.goto(f"{platform.url}/runs/{run['id']}")
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=60_000)
    expect(page.locator("#log")).to_contain_text("red-text <img src=x id=injected> & done")
    assert page.locator("#injected").count() == 0
    expect(page.locator("#log .ansi-fg-1", has_text="red-text")).to_have_count(1)

    html = page.evaluate(
        "new IAC.AnsiRenderer().toHtml("
        "'\\x1b[1m\\x1b[32mok\\x1b[0m \\x1b[2K<script>x</script>\\x1b[4;91mu\\x1b[24m!')"
    )
    assert html == (
        '<span class="ansi-fg-2 ansi-bold">ok</span> &lt;script&gt;x&lt;/script&gt;'
        '<span class="ansi-fg-9 ansi-underline">u</span><span class="ansi-fg-9">!</span>'
    )


def test_the_sse_parser_handles_split_chunks_and_line_endings(
    platform: Platform, page: Page
) -> None:
    page.goto(platform.url + "/login")
    events = page.evaluate(
        """() => {
        const seen = [];
        const parser = new IAC.SseParser((e) => seen.push(e));
        for (const chunk of ['id: 4\\r', '\\ndata: {"seq": 1,', ' "lines": ["a"]}\\r\\n\\r\\n',
                             ': keep-alive\\n\\nevent: status\\nda', 'ta: {"status": "x"}\\n\\n',
                             'event: end\\rdata: {}\\r\\r']) {
          parser.feed(chunk);
        }
        return seen;
    }"""
    )
    assert events == [
        {"type": "message", "data": '{"seq": 1, "lines": ["a"]}', "lastEventId": "4"},
        {"type": "status", "data": '{"status": "x"}', "lastEventId": "4"},
        {"type": "end", "data": "{}", "lastEventId": "4"},
    ]


def test_the_overview_lists_every_run(platform: Platform, page: Page) -> None:
    """Last in the module, so the overview shows the runs of the tests above."""
    platform.backend.deploy(
        "waiting", {"main.tf": FAST_CONFIG}, required_labels={"provider": "azure"}
    )
    waiting = platform.backend.start("waiting", "plan", priority=5)
    sign_in(page, platform.url)
    runs = platform.backend.call("GET", "/runs", 200)
    expect(page.locator("#runs tbody tr")).to_have_count(len(runs))
    row = page.locator(f"#runs tr[data-run-id='{waiting['id']}']")
    expect(row.locator(".wait-reason")).to_contain_text("provider=azure")
    screenshot(page, "runs-overview")
    platform.backend.call("POST", f"/runs/{waiting['id']}/cancel", 200)
    expect(row.locator(".status")).to_have_text("canceled")


def test_the_api_docs_render_offline_under_the_csp(platform: Platform, page: Page) -> None:
    """/docs is Swagger UI from the backend's own files: it renders every operation with no
    request leaving the backend's origin and no Content-Security-Policy refusal."""
    console: list[str] = []
    elsewhere: list[str] = []
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    page.on(
        "request",
        lambda req: (
            None if req.url.startswith((platform.url, "data:")) else elsewhere.append(req.url)
        ),
    )
    page.goto(platform.url + "/docs")
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/runs").first).to_be_visible()
    assert page.locator(".opblock").count() >= 20
    expect(page.locator(".info .title")).to_contain_text("iac-runner backend")
    screenshot(page, "api-docs")
    assert elsewhere == [], elsewhere
    refused = [line for line in console if "Content Security Policy" in line or "Refused" in line]
    assert refused == [], refused


REVIEW_V1 = """\
resource "terraform_data" "kept" { input = "v1" }
resource "terraform_data" "gone" { input = "bye" }
resource "terraform_data" "trigger" { input = "t1" }
resource "terraform_data" "replaced" {
  input = "stable"
  lifecycle { replace_triggered_by = [terraform_data.trigger] }
}
output "version" { value = "v1" }
"""
REVIEW_V2 = (
    REVIEW_V1.replace('input = "v1"', 'input = "v2"')
    .replace('resource "terraform_data" "gone" { input = "bye" }\n', "")
    .replace('input = "t1"', 'input = "t2"')
    .replace('value = "v1"', 'value = "v2"')
    + 'resource "terraform_data" "fresh" { input = "new" }\n'
)


def test_review_a_plan_on_the_page_then_discard_it(platform: Platform, page: Page) -> None:
    """The run page shows the plan's counts and its resource changes, replacements and
    deletions first, each with its changed attributes; Discard ends it unapplied."""
    backend = platform.backend
    backend.deploy("review", {"main.tf": REVIEW_V1}, required_labels={"provider": "aws"})
    first = backend.start("review", "apply", auto_approve="always")
    assert backend.wait(first["id"], "succeeded", "failed")["status"] == "succeeded"
    # After an apply its page shows the outputs.
    sign_in(page, platform.url, f"/runs/{first['id']}")
    expect(page.locator("#outputs tr[data-output='version']")).to_contain_text("v1")
    expect(page.locator("#unlock")).to_be_hidden()  # it released its lock
    backend.call(
        "POST", "/deployments/review/config", 201, content=tar_gz({"main.tf": REVIEW_V2}),
        headers={"Content-Type": "application/gzip"},
    )  # fmt: skip
    run = backend.start("review", "apply", comment="release 2")
    page.goto(f"{platform.url}/runs/{run['id']}")
    expect(page.locator("#run-status")).to_have_text("awaiting approval", timeout=60_000)
    expect(page.locator("#plan")).to_be_visible()
    expect(page.locator("#plan-counts")).to_have_text("+1 ~2 -1 ±1")
    rows = page.locator("#changes tbody tr")
    expect(rows).to_have_count(5)
    actions = [rows.nth(i).get_attribute("data-action") for i in range(5)]
    assert actions == ["replace", "delete", "update", "update", "create"], actions
    assert rows.nth(0).get_attribute("data-address") == "terraform_data.replaced"
    expect(rows.nth(0)).to_contain_text("replace_by_triggers")
    kept = page.locator("#changes tr[data-address='terraform_data.kept']")
    kept.locator("summary").click()
    expect(kept.locator(".diff").first).to_have_text("v1 → v2")
    expect(page.locator("#output-changes")).to_contain_text("version: v1 → v2")
    expect(page.locator("#plan-digest")).to_contain_text(backend.run(run["id"])["plan_sha256"])
    expect(page.locator("#events li[data-kind='queued'] q.comment")).to_have_text("release 2")
    screenshot(page, "run-plan-review")

    messages = accept_next_dialog(page)
    page.locator("#discard").click()
    expect(page.locator("#run-status")).to_have_text("discarded", timeout=10_000)
    assert messages and f"Discard run {run['id']}" in messages[0], messages
    expect(page.locator("#events li[data-kind='discarded'] .actor")).to_contain_text("by ")
    expect(page.locator("#discard")).to_be_hidden()
    page.goto(platform.url + "/")
    row = page.locator(f"#runs tr[data-run-id='{run['id']}']")
    expect(row.locator("td.changes")).to_have_text("+1 ~2 -1 ±1")


def test_a_planner_sees_its_team_s_runs_and_no_buttons_it_may_not_use(
    platform: Platform, page: Page
) -> None:
    backend = platform.backend
    for name, team in (("team-a-app", "a"), ("team-b-app", "b")):
        backend.deploy(
            name, {"main.tf": FAST_CONFIG}, required_labels={"provider": "aws"},
            labels={"team": team},
        )  # fmt: skip
    mine = backend.start("team-a-app", "apply")
    theirs = backend.start("team-b-app", "apply")
    backend.wait(mine["id"], "awaiting_approval")
    backend.wait(theirs["id"], "awaiting_approval")
    body = {"name": "ci-plan", "role": "planner", "scope": {"labels": {"team": "a"}}}
    token = backend.call("POST", "/tokens", 201, json=body)["token"]

    sign_in(page, platform.url, "/", token=token)
    expect(page.locator("#whoami")).to_have_text("ci-plan · planner · labels team=a")
    expect(page.locator(f"#runs tr[data-run-id='{mine['id']}']")).to_have_count(1)
    expect(page.locator(f"#runs tr[data-run-id='{theirs['id']}']")).to_have_count(0)
    page.goto(f"{platform.url}/runs/{mine['id']}")
    expect(page.locator("#run-status")).to_have_text("awaiting approval")
    expect(page.locator("#plan")).to_be_visible()
    expect(page.locator("#approve")).to_be_hidden()
    expect(page.locator("#discard")).to_be_hidden()
    expect(page.locator("#cancel")).to_be_hidden()
    screenshot(page, "run-as-planner")
    # The API decides: the same approval from this token is refused.
    refused = page.evaluate(
        "async ([id, token]) => (await fetch(`/api/v1/runs/${id}/approve`, {method: 'POST',"
        " headers: {Authorization: `Bearer ${token}`}})).status",
        [mine["id"], token],
    )
    assert refused == 403
    page.goto(f"{platform.url}/runs/{theirs['id']}")
    expect(page.locator("#flash")).to_contain_text(f"Run {theirs['id']} does not exist.")


def test_the_audit_page_shows_who_did_what_to_an_admin_only(platform: Platform, page: Page) -> None:
    backend = platform.backend
    body = {"name": "viewer-x", "role": "viewer"}
    viewer = backend.call("POST", "/tokens", 201, json=body)["token"]
    refused = httpx.delete(
        f"{platform.url}/api/v1/deployments/nope", headers={"Authorization": f"Bearer {viewer}"}
    )
    assert refused.status_code == 403
    sign_in(page, platform.url, "/audit")
    expect(page.locator("#nav-audit")).to_be_visible()
    expect(page.locator("#chain")).to_contain_text("hash chain holds")
    row = page.locator("#audit tr[data-actor='viewer-x']")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("DELETE /deployments/{name}")
    expect(row.locator(".result")).to_contain_text("403: this needs the admin role")
    # New entries appear without a reload.
    backend.call("POST", "/tokens", 201, json={"name": "later"})
    expect(page.locator("#audit tbody tr").first).to_contain_text("POST /tokens")
    screenshot(page, "audit-log")

    page.evaluate("() => sessionStorage.clear()")
    sign_in(page, platform.url, "/audit", token=viewer)
    expect(page.locator("#nav-audit")).to_be_hidden()
    expect(page.locator("#flash")).to_contain_text("not yours to read")


def test_the_drift_page_checks_and_shows_what_drifted(
    platform: Platform, page: Page, tmp_path: Path
) -> None:
    from tests.backend.engine.test_drift import CONFIG, world_state

    world = tmp_path / "world.tfstate"
    world.write_text(world_state("blue"))
    backend = platform.backend
    backend.deploy("drift-web", {"main.tf": CONFIG}, required_labels={"provider": "aws"})
    body = {"value": str(world), "category": "terraform"}
    backend.call("PUT", "/deployments/drift-web/variables/world", 201, json=body)
    applied = backend.start("drift-web", "apply", auto_approve="always")
    assert backend.wait(applied["id"], "succeeded", "failed")["status"] == "succeeded"

    sign_in(page, platform.url, "/drift")
    row = page.locator("#drift tr[data-deployment='drift-web']")
    expect(row.locator(".drift-status")).to_have_text("unknown")
    row.get_by_role("button", name="Check now").click()
    expect(row.locator(".drift-status")).to_have_text("in sync", timeout=60_000)

    world.write_text(world_state("red"))
    row.get_by_role("button", name="Check now").click()
    expect(row.locator(".drift-status")).to_have_text("drifted", timeout=60_000)
    expect(row.locator(".what")).to_have_text("output.colour")
    # Drifted deployments come first.
    expect(page.locator("#drift tbody tr").first).to_have_attribute("data-deployment", "drift-web")
    screenshot(page, "drift")
