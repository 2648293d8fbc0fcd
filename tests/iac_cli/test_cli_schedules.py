"""`iac schedules` against the CLI tests' real platform: add, list, show, disable, enable,
run now (a real plan on a runner), remove, and refusals as one line."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import OFFLINE_CONFIG
from tests.iac_cli.conftest import Platform, assert_one_line_error, json_of


def test_schedules_add_list_disable_enable_trigger_remove(
    platform: Platform, tmp_path: Path
) -> None:
    infra = tmp_path / "infra"
    infra.mkdir()
    (infra / "main.tf").write_text(OFFLINE_CONFIG)
    platform.iac("deployments", "create", "sched-web", "--dir", str(infra)).ok()

    added = platform.iac(
        "schedules",
        "add",
        "sched-web",
        "--cron",
        "30 2 * * *",
        "--timezone",
        "Europe/Paris",
        "--kind",
        "plan",
    ).ok()
    match = re.fullmatch(
        r"added schedule (\d+) of sched-web: plan at '30 2 \* \* \*' \(Europe/Paris\)\n",
        added.stdout,
    )
    assert match, added.stdout
    sid = match[1]
    assert "next run " in added.stderr and "At 02:30 every day" in added.stderr

    listed = platform.iac("schedules", "list", "sched-web").ok().stdout
    row = next(line for line in listed.splitlines() if line.startswith(sid + " "))
    assert re.search(r"sched-web\s+30 2 \* \* \*\s+Europe/Paris\s+plan\s+\d{4}-.+\s+-$", row), row
    [as_json] = json_of(platform.iac("schedules", "list", "sched-web", "--json"))
    assert (as_json["id"], as_json["kind"], len(as_json["upcoming"])) == (int(sid), "plan", 3)
    everywhere = json_of(platform.iac("schedules", "list", "--json"))
    assert int(sid) in [s["id"] for s in everywhere]
    shown = platform.iac("schedules", "show", "sched-web", sid).ok().stdout
    assert re.search(r"upcoming\s+\d{4}-\d\d-\d\d 0[23]:[03]0:00\+0[12]:00, ", shown), shown

    disabled = platform.iac("schedules", "disable", "sched-web", sid).ok().stdout
    assert disabled.startswith(f"disabled schedule {sid} of sched-web")
    assert json_of(platform.iac("schedules", "show", "sched-web", sid, "--json"))["upcoming"] == []
    assert "disabled" in platform.iac("schedules", "list", "sched-web").ok().stdout
    enabled = platform.iac("schedules", "enable", "sched-web", sid).ok().stdout
    assert enabled.startswith(f"enabled schedule {sid} of sched-web") and "next run" in enabled

    ran = platform.iac("schedules", "trigger", "sched-web", sid).ok()
    queued = re.fullmatch(r"queued run (\d+) \(plan of sched-web\)\n", ran.stdout)
    assert queued, ran.stdout
    assert f"iac logs {queued[1]} --follow" in ran.stderr
    done = platform.backend.wait(int(queued[1]), "succeeded", "failed", timeout=120)
    assert done["status"] == "succeeded", done
    last = platform.iac("schedules", "list", "sched-web").ok().stdout
    assert f"run {queued[1]} (" in last

    applied = json_of(
        platform.iac(
            "schedules",
            "add",
            "sched-web",
            "--cron",
            "@weekly",
            "--kind",
            "apply",
            "--auto-approve",
            "no-destroy",
            "--json",
        )
    )
    assert (applied["cron"], applied["auto_approve"]) == ("@weekly", "no-destroy")
    listed = platform.iac("schedules", "list", "sched-web").ok().stdout
    assert "apply (auto-approve no-destroy)" in listed

    removed = platform.iac("schedules", "remove", "sched-web", sid).ok()
    assert removed.stdout == f"removed schedule {sid} of sched-web\n"
    assert_one_line_error(
        platform.iac("schedules", "remove", "sched-web", sid),
        2,
        f"deployment 'sched-web' has no schedule {sid}",
        "HTTP 404",
    )


def test_schedule_refusals_are_one_line(platform: Platform) -> None:
    platform.backend.call("POST", "/deployments", 201, json={"name": "sched-bad"})
    for args, fragments in [
        (["--cron", "0 0 3 * * *"], ["a seconds field is not supported", "HTTP 422"]),
        (["--cron", "@reboot"], ["'@reboot' is not supported", "HTTP 422"]),
        (["--cron", "0 3 * * *", "--timezone", "Mars/Base"], ["time zone 'Mars/Base'"]),
        (
            ["--cron", "0 3 * * *", "--kind", "plan", "--auto-approve", "always"],
            ["applies to apply schedules only", "HTTP 422"],
        ),
    ]:
        assert_one_line_error(platform.iac("schedules", "add", "sched-bad", *args), 2, *fragments)
    assert_one_line_error(
        platform.iac("schedules", "add", "sched-nope", "--cron", "0 3 * * *"),
        2,
        "deployment 'sched-nope' does not exist",
        "HTTP 404",
    )
    assert_one_line_error(platform.iac("schedules", "add", "sched-bad"), 2, "--cron")
    assert_one_line_error(platform.iac("schedules", "trigger", "sched-bad", "0"), 2, "SCHEDULE_ID")
    assert json_of(platform.iac("schedules", "list", "sched-bad", "--json")) == []
