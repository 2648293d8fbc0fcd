"""The phases of a run and what each sends to its runner: the terraform commands in order,
and the workspace archive (the configuration, the state-backend override, the saved plan).

    plan phase:  init, plan -out=tfplan -detailed-exitcode [-destroy | -refresh-only],
                 show -json tfplan  (stdout to tfplan.json; tfplan and tfplan.json collected)
    apply phase: init, apply tfplan  (tfplan shipped, its SHA-256 checked by the runner)

The plan's JSON is read into a review (backend.plans) by the backend, never logged.

Both phases' terraform keeps its state in the backend: the override configures Terraform's
`http` backend, which the runner points at its loopback state endpoint (ServeState).
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass

from backend.runner_ids import Phase
from protos.iacrunner.v1 import runner_pb2 as pb

# Merged into every configuration so terraform keeps its state in this backend.
BACKEND_OVERRIDE = 'terraform {\n  backend "http" {}\n}\n'
OVERRIDE_NAME = "zz_iac_backend_override.tf"
# What these steps need of a runner (GetInfo's features): the plan's JSON written to a file
# instead of the log, the saved plan's digest checked before apply, and outcomes as enums.
RUNNER_FEATURES = frozenset({"stdout_file", "verify_sha256", "typed_outcome"})
PLAN_FILE = "tfplan"
PLAN_JSON = "tfplan.json"
# `plan -detailed-exitcode`: 0 no changes, 2 changes, anything else an error.
PLAN_HAS_CHANGES = 2


@dataclass(frozen=True)
class Step:
    name: str
    command: str
    args: tuple[str, ...] = ()
    collect: tuple[str, ...] = ()
    cleanup: bool = False
    stdout_file: str = ""

    def succeeded(self, result: pb.Result) -> bool:
        return result.success or (self.name == "plan" and result.exit_code == PLAN_HAS_CHANGES)


def phase_steps(operation: str, phase: Phase) -> list[Step]:
    init = Step("init", "init")
    if phase == Phase.PLAN:
        args = ["-out=" + PLAN_FILE, "-detailed-exitcode"]
        if operation == "destroy":
            args.append("-destroy")
        elif operation == "drift":  # a drift check: what changed outside terraform
            args.append("-refresh-only")
        show = Step("show", "show", ("-json", PLAN_FILE), (PLAN_FILE, PLAN_JSON), True, PLAN_JSON)
        return [init, Step("plan", "plan", tuple(args)), show]
    return [init, Step("apply", "apply", (PLAN_FILE,), cleanup=True)]


def tf_files(config_archive: bytes) -> dict[str, str]:
    """The top-level *.tf files of a configuration archive, as text."""
    files = {}
    with tarfile.open(fileobj=io.BytesIO(config_archive), mode="r:gz") as tar:
        for member in tar:
            if member.isfile() and "/" not in member.name and member.name.endswith(".tf"):
                data = tar.extractfile(member)
                if data is not None:
                    files[member.name] = data.read().decode("utf-8", "replace")
    return files


def build_workspace(config_archive: bytes, plan_file: bytes | None) -> bytes:
    """The config archive plus the state-backend override (and the plan to apply)."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(config_archive), mode="r:gz") as src,
        tarfile.open(fileobj=out, mode="w:gz") as dst,
    ):
        for member in src:
            if member.name in (OVERRIDE_NAME, PLAN_FILE):
                continue
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        extra = {OVERRIDE_NAME: BACKEND_OVERRIDE.encode()}
        if plan_file is not None:
            extra[PLAN_FILE] = plan_file
        for name, data in extra.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            dst.addfile(info, io.BytesIO(data))
    return out.getvalue()
