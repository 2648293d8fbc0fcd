"""Which tools this runner has, with the version each binary reports about itself."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

from runner_stdio.tools import TOOLS, ToolError, find_binary


@dataclass(frozen=True)
class ToolInfo:
    name: str
    version: str
    path: str
    is_default: bool = True


def binary_version(path: str) -> str:
    """Ask the binary itself: `version -json` (terraform >= 0.13, tofu)."""
    proc = subprocess.run(
        [path, "version", "-json"],
        capture_output=True,
        timeout=30,
        env={"CHECKPOINT_DISABLE": "1", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    try:
        data = json.loads(proc.stdout)
        return str(data.get("terraform_version") or data.get("version") or "")
    except ValueError:
        return ""


def detect() -> list[ToolInfo]:
    found = []
    for spec in TOOLS.values():
        try:
            path = find_binary(spec)
        except ToolError:
            continue
        found.append(ToolInfo(spec.name, binary_version(path), path))
    return found
