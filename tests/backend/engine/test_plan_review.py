"""The review of a plan, end to end with real terraform on SQLite and PostgreSQL: counts and
resource changes (an update, a deletion, a replace_triggered_by replacement, a creation, an
output change, a sensitive attribute), nothing secret in what is served, the approval
policies deciding on real plans, the stale-plan guard, outputs and the state's resources."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backend.archives import tar_gz
from tests.backend.conftest import ENCRYPTION_KEY
from tests.backend.platform import Backend, start_backend
from tests.procs import RunnerProcess, start_runner

OLD_SECRET = "Sup3r-S3cret-XYZ123"
NEW_SECRET = "N3w-S3cret-ABC789"

V1 = """\
variable "secret" { type = string }
resource "terraform_data" "kept" { input = "v1" }
resource "terraform_data" "gone" { input = "bye" }
resource "terraform_data" "trigger" { input = "t1" }
resource "terraform_data" "replaced" {
  input = "stable"
  lifecycle { replace_triggered_by = [terraform_data.trigger] }
}
resource "terraform_data" "secretive" { input = sensitive(var.secret) }
resource "terraform_data" "plain" { input = "prefix-${var.secret}" }
output "version" { value = "v1" }
output "hidden" {
  value     = var.secret
  sensitive = true
}
"""

V2 = (
    V1.replace('input = "v1"', 'input = "v2"')
    .replace('resource "terraform_data" "gone" { input = "bye" }\n', "")
    .replace('input = "t1"', 'input = "t2"')
    .replace('value = "v1"', 'value = "v2"')
    + 'resource "terraform_data" "fresh" { input = "new" }\n'
)


@pytest.fixture
def backend(db_url: str, tool_env: dict[str, str], tmp_path: Path) -> Iterator[Backend]:
    runner: RunnerProcess = start_runner(tmp_path, tool_env, name="r1")
    server = start_backend(tmp_path, tool_env, db_url, ENCRYPTION_KEY=ENCRYPTION_KEY)
    server.register("r1", runner.address)
    server.wait_runners_healthy("r1")
    yield server
    server.stop()
    runner.stop()


def upload(backend: Backend, config: str) -> None:
    backend.call(
        "POST", "/deployments/web/config", 201, content=tar_gz({"main.tf": config}),
        headers={"Content-Type": "application/gzip"},
    )  # fmt: skip


def set_secret(backend: Backend, value: str) -> None:
    body = {"value": value, "sensitive": True, "category": "terraform"}
    backend.call("PUT", "/deployments/web/variables/secret", None, json=body)
    assert backend.client.get("/deployments/web/variables").json()[0]["sensitive"] is True


def test_a_plan_is_reviewed_before_it_is_applied(backend: Backend) -> None:
    backend.call("POST", "/deployments", 201, json={"name": "web"})
    upload(backend, V1)
    set_secret(backend, OLD_SECRET)
    first = backend.start("web", "apply", auto_approve="always")
    first = backend.wait(first["id"], "succeeded", "failed")
    assert first["status"] == "succeeded", (first["error_msg"], backend.log_text(first["id"]))
    assert first["changes"]["add"] == 6
    planned = next(e for e in first["events"] if e["kind"] == "planned")
    assert planned["message"] == "auto-approved (always)"

    upload(backend, V2)
    set_secret(backend, NEW_SECRET)
    run = backend.start("web", "apply", auto_approve="no-destroy", comment="release 2")
    run = backend.wait(run["id"], "awaiting_approval", "failed")
    assert run["status"] == "awaiting_approval", run
    note = next(e for e in run["events"] if e["kind"] == "planned")["message"]
    assert (
        note
        == "awaiting approval (not auto-applied: no-destroy: the plan destroys 1 and replaces 1)"
    )
    assert run["events"][0]["comment"] == "release 2"
    assert run["changes"] == {
        "add": 1, "change": 4, "destroy": 1, "replace": 1, "read": 0, "import": 0, "move": 0
    }  # fmt: skip
    plan = backend.call("GET", f"/runs/{run['id']}/plan", 200)
    by_address = {c["address"]: c for c in plan["resource_changes"]}
    assert [c["action"] for c in plan["resource_changes"][:2]] == ["replace", "delete"]
    assert plan["resource_changes"][0]["address"] == "terraform_data.replaced"
    assert by_address["terraform_data.replaced"]["reason"] == "replace_by_triggers"
    assert by_address["terraform_data.gone"]["action"] == "delete"
    assert by_address["terraform_data.fresh"]["action"] == "create"
    assert "input" in by_address["terraform_data.kept"]["changed"]
    assert by_address["terraform_data.kept"]["after"]["input"] == "v2"
    assert by_address["terraform_data.secretive"]["after"]["input"] == "(sensitive value)"
    assert by_address["terraform_data.plain"]["before"]["input"] == "(sensitive value)"
    outputs = {o["name"]: o for o in plan["output_changes"]}
    assert outputs["version"]["before"] == "v1" and outputs["version"]["after"] == "v2"
    assert outputs["hidden"]["after"] == "(sensitive value)"
    # No value a sensitive variable has, or had, is in anything served about the run.
    listed = backend.call("GET", "/runs?deployment=web", 200)
    assert listed[0]["changes"]["replace"] == 1
    served = json.dumps([plan, backend.run(run["id"]), listed]) + backend.log_text(run["id"])
    for secret in (OLD_SECRET, NEW_SECRET):
        assert secret not in served

    # What was approved is what is applied: the runner checks the plan's digest.
    approved = backend.call("POST", f"/runs/{run['id']}/approve", 200, json={"comment": "ok"})
    assert approved["plan_sha256"] == run["plan_sha256"]
    run = backend.wait(run["id"], "succeeded", "failed")
    assert run["status"] == "succeeded", run
    assert "Apply complete! Resources: 2 added, 4 changed, 2 destroyed." in backend.log_text(
        run["id"]
    )
    outputs_now = {o["name"]: o for o in backend.call("GET", "/deployments/web/outputs", 200)}
    assert outputs_now["version"]["value"] == "v2"
    assert outputs_now["hidden"] == {
        "name": "hidden", "value": "(sensitive value)", "type": "string", "sensitive": True
    }  # fmt: skip
    # Revealed only to an admin (state content); refused to anyone else.
    revealed = backend.call("GET", "/deployments/web/outputs?reveal=true", 200)
    assert {o["name"]: o["value"] for o in revealed}["hidden"] == NEW_SECRET
    viewer = backend.call("POST", "/tokens", 201, json={"name": "v", "role": "operator"})
    refused = backend.client.get(
        "/deployments/web/outputs",
        params={"reveal": "true"},
        headers={"Authorization": f"Bearer {viewer['token']}"},
    )
    assert refused.status_code == 403 and "needs the admin role" in refused.text
    resources = backend.call("GET", "/deployments/web/state/resources", 200)
    assert [r["address"] for r in resources] == [
        "terraform_data.fresh", "terraform_data.kept", "terraform_data.plain",
        "terraform_data.replaced", "terraform_data.secretive", "terraform_data.trigger",
    ]  # fmt: skip
    assert NEW_SECRET not in json.dumps(resources)

    # A plan made before a newer configuration is refused, and can be discarded.
    upload(backend, V2.replace('input = "new"', 'input = "newer"'))
    stale = backend.start("web", "apply")
    stale = backend.wait(stale["id"], "awaiting_approval", "failed")
    upload(backend, V2.replace('input = "new"', 'input = "newest"'))
    response = backend.client.post(f"/runs/{stale['id']}/approve")
    assert response.status_code == 409
    assert "a newer configuration (v4) was uploaded after this plan's (v3)" in response.text
    discarded = backend.call("POST", f"/runs/{stale['id']}/discard", 200)
    assert discarded["status"] == "discarded"

    # no-destroy applies a plan that only changes in place, as the deployment's default.
    backend.call("PATCH", "/deployments/web", 200, json={"auto_approve": "no-destroy"})
    safe = backend.start("web", "apply")
    safe = backend.wait(safe["id"], "succeeded", "failed", "awaiting_approval")
    assert safe["status"] == "succeeded", safe
    assert safe["auto_approve"] == "no-destroy"
    assert safe["changes"]["change"] == 1 and safe["changes"]["destroy"] == 0
