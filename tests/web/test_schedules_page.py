"""The Schedules page in headless Chromium: every schedule in the token's scope with its
deployment, expression, zone, kind, next and last run; "Run now" queues a real run; a
scoped viewer sees its team's schedules and no button."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.web.conftest import Platform, screenshot, sign_in

FAST_CONFIG = 'resource "terraform_data" "x" {}\n'


def test_the_schedules_page_lists_schedules_and_runs_one_now(
    platform: Platform, page: Page
) -> None:
    backend = platform.backend
    for name, team in (("sched-a", "a"), ("sched-b", "b")):
        backend.deploy(name, {"main.tf": FAST_CONFIG}, labels={"team": team})
    body: dict[str, object] = {"cron": "0 3 * * 1-5", "timezone": "Europe/Paris", "kind": "plan"}
    plan = backend.call("POST", "/deployments/sched-a/schedules", 201, json=body)
    body = {"cron": "@weekly", "kind": "apply", "auto_approve": "no-destroy", "enabled": False}
    apply = backend.call("POST", "/deployments/sched-a/schedules", 201, json=body)
    other = backend.call("POST", "/deployments/sched-b/schedules", 201, json={"cron": "30 2 * * *"})

    sign_in(page, platform.url, "/schedules")
    row = page.locator(f"#schedules tr[data-schedule='{plan['id']}']")
    expect(row).to_contain_text("sched-a")
    expect(row).to_contain_text("0 3 * * 1-5")
    expect(row).to_contain_text("Europe/Paris")
    expect(row.locator("td.kind")).to_have_text("plan")
    expect(row.locator("td.next time")).to_have_attribute("datetime", plan["next_run_at"])
    expect(row.locator("td.last")).to_have_text("-")
    off = page.locator(f"#schedules tr[data-schedule='{apply['id']}']")
    expect(off.locator("td.kind")).to_have_text("apply (auto-approve no-destroy)")
    expect(off.locator("td.next")).to_have_text("disabled")
    expect(page.locator(f"#schedules tr[data-schedule='{other['id']}']")).to_have_count(1)

    row.locator("button.run-now").click()
    expect(page.locator("#flash")).to_contain_text(f"Schedule {plan['id']} queued run #")
    link = row.locator("td.last a")
    expect(link).to_have_count(1)
    run_id = int((link.text_content() or "#0").lstrip("#"))
    assert backend.run(run_id)["created_by"] == "bootstrap (IAC_API_TOKEN)"
    backend.wait(run_id, "succeeded", "failed", timeout=120)
    screenshot(page, "schedules")

    body = {"name": "sched-viewer", "role": "viewer", "scope": {"labels": {"team": "a"}}}
    viewer = backend.call("POST", "/tokens", 201, json=body)["token"]
    page.evaluate("() => sessionStorage.clear()")
    sign_in(page, platform.url, "/schedules", token=viewer)
    expect(page.locator(f"#schedules tr[data-schedule='{plan['id']}']")).to_have_count(1)
    expect(page.locator(f"#schedules tr[data-schedule='{other['id']}']")).to_have_count(0)
    expect(page.locator("#schedules button.run-now")).to_have_count(0)
