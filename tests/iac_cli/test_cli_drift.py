"""`iac drift` against real processes: a check in sync (exit 0), the world changed outside
terraform (exit 2, what drifted named), the fleet view for CI, one deployment's history."""

from __future__ import annotations

import json
from pathlib import Path

from tests.backend.engine.test_drift import CONFIG, world_state
from tests.iac_cli.conftest import Platform


def test_drift_check_fleet_and_history(platform: Platform, tmp_path: Path) -> None:
    world = tmp_path / "world.tfstate"
    world.write_text(world_state("blue"))
    infra = tmp_path / "drifty"
    infra.mkdir()
    (infra / "main.tf").write_text(CONFIG)
    platform.iac(
        "deployments", "create", "drifty", "--dir", str(infra), "--label", "provider=aws"
    ).ok()
    platform.iac("vars", "set", "drifty", "world", str(world)).ok()
    platform.iac("apply", "drifty", "--auto-approve").ok()

    in_sync = platform.iac("drift", "check", "drifty").ok()
    assert "drifty: in_sync" in in_sync.stderr, in_sync

    world.write_text(world_state("green"))
    drifted = platform.iac("drift", "check", "drifty")
    assert drifted.returncode == 2, drifted
    assert "drifty: drifted (output.colour)" in drifted.stderr, drifted

    fleet = platform.iac("drift")
    assert fleet.returncode == 2, fleet
    line = next(line for line in fleet.stdout.splitlines() if line.startswith("drifty"))
    assert "drifted" in line and "output.colour" in line, fleet.stdout
    as_json = platform.iac("drift", "--json")
    assert as_json.returncode == 2
    found = {d["deployment"]: d for d in json.loads(as_json.stdout)}
    assert found["drifty"]["detail"]["outputs"] == ["colour"]

    shown_json = platform.iac("drift", "show", "drifty", "--json")
    assert shown_json.returncode == 2
    history = json.loads(shown_json.stdout)
    assert [c["status"] for c in history["history"]] == ["drifted", "in_sync"]
    shown = platform.iac("drift", "show", "drifty")
    assert shown.returncode == 2 and "output.colour" in shown.stdout

    missing = platform.iac("drift", "show", "nowhere")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
