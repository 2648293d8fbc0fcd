"""Routing by tool version and by the operations a runner accepts, end to end."""

from __future__ import annotations

from pathlib import Path

from tests.backend.platform import start_backend
from tests.conftest import wait_for
from tests.procs import make_fake_tool, start_runner

FAST_CONFIG = 'resource "terraform_data" "x" {}\n'
# timestamp() is known only when applied: every plan has a change, every run an apply.
CHANGING_CONFIG = 'resource "terraform_data" "x" {\n  input = timestamp()\n}\n'


def test_versions_and_accept_lists_route_runs(
    db_url: str, tool_env: dict[str, str], tmp_path: Path
) -> None:
    old_dir = tmp_path / "old-bin"
    old_dir.mkdir()
    old_env = {
        **tool_env,
        "IAC_RUNNER_TERRAFORM_BIN": make_fake_tool(old_dir),
        "FAKE_TF_VERSION": "1.9.8",
    }
    runners = {
        "new": start_runner(tmp_path, tool_env, "--label", "provider=aws", name="new"),
        "old": start_runner(tmp_path, old_env, "--label", "provider=aws", name="old"),
        "planner": start_runner(
            tmp_path, tool_env, "--label", "provider=aws", "--accept", "plan", name="planner"
        ),
    }
    backend = start_backend(tmp_path, tool_env, db_url)
    try:
        for name, runner in runners.items():
            backend.register(name, runner.address)
        backend.wait_runners_healthy(*runners)
        labels = {"provider": "aws"}

        # A pinned constraint only the old runner satisfies.
        backend.deploy(
            "legacy",
            {"main.tf": FAST_CONFIG},
            required_labels=labels,
            version_constraint="~> 1.9.0",
        )
        legacy = backend.wait(backend.start("legacy", "plan")["id"], "succeeded", "failed")
        assert legacy["status"] == "succeeded", legacy
        assert (legacy["runner_id"], legacy["tool_version"]) == ("old", "1.9.8")

        # No deployment constraint: the configuration's required_version rules out 1.9.8.
        # (Its resource changes at every apply, so every run has an apply phase.)
        config = 'terraform {\n  required_version = ">= 1.10"\n}\n' + CHANGING_CONFIG
        backend.deploy("modern", {"main.tf": config}, required_labels=labels)
        for _ in range(3):
            run = backend.wait(
                backend.start("modern", "apply", auto_approve=True)["id"], "succeeded", "failed"
            )
            assert run["status"] == "succeeded", run
            assert run["tool_version"] != "1.9.8"
            phases = [e["message"] for e in run["events"] if e["kind"] == "dispatched"]
            assert len(phases) == 2, phases
            plan_runner = phases[0].split(" on runner ")[1].split()[0]
            apply_runner = phases[-1].split(" on runner ")[1].split()[0]
            assert plan_runner in ("new", "planner")
            assert apply_runner == "new", phases  # the plan-only runner never applies

        # Nothing satisfies: the run waits and says why.
        backend.deploy(
            "future", {"main.tf": FAST_CONFIG}, required_labels=labels, version_constraint=">= 2.0"
        )
        future = backend.start("future", "plan")
        wait_for(lambda: "satisfying" in backend.run(future["id"])["wait_reason"])
        reason = backend.run(future["id"])["wait_reason"]
        assert reason.startswith("no healthy runner has terraform satisfying '>= 2.0'; available: ")
        assert "1.9.8" in reason
        assert backend.run(future["id"])["status"] == "queued"

        # A constraint in terraform's syntax is validated on the deployment.
        response = backend.client.post(
            "/deployments", json={"name": "bad", "version_constraint": "=> 1.0"}
        )
        assert response.status_code == 422 and "'=> 1.0' is malformed" in response.json()["detail"]
    finally:
        backend.stop()
        for runner in runners.values():
            runner.stop()
