"""Which tools this runner has, with the version each binary reports about itself."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from runner_stdio.tools import TOOLS, TOOLS_ENV, ToolError, binary_version, find_binary, get_spec

log = logging.getLogger("iac_runner_server")


@dataclass(frozen=True)
class ToolInfo:
    name: str
    version: str
    path: str
    is_default: bool = True


def detect(entries: list[tuple[str, str, str]] | None = None) -> list[ToolInfo]:
    """Every tool binary this runner can use: the default of each tool (its
    IAC_RUNNER_<TOOL>_BIN or PATH) and the explicitly configured ones (`--tool`). Each
    version is what the binary reports; a declared version that differs is only logged."""
    found: list[ToolInfo] = []
    seen: set[tuple[str, str]] = set()
    for spec in TOOLS.values():
        try:
            path = find_binary(spec)
        except ToolError:
            continue
        found.append(ToolInfo(spec.name, binary_version(path), path, is_default=True))
        seen.add((spec.name, os.path.realpath(path)))
    for name, declared, path in entries or []:
        spec = get_spec(name)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise ToolError(f"--tool {name}@{declared}={path}: not an executable file")
        if (spec.name, os.path.realpath(path)) in seen:
            continue
        seen.add((spec.name, os.path.realpath(path)))
        version = binary_version(path)
        if not version:
            raise ToolError(f"--tool {name}@{declared}={path}: `version -json` gave no version")
        if version != declared:
            log.warning(
                json.dumps(
                    {
                        "event": "tool_version_mismatch",
                        "tool": name,
                        "path": path,
                        "declared": declared,
                        "reported": version,
                    }
                )
            )
        has_default = any(t.name == spec.name for t in found)
        found.append(ToolInfo(spec.name, version, os.path.abspath(path), not has_default))
    return found


def tools_env(tools: list[ToolInfo]) -> dict[str, str]:
    """What iac-runner needs to pick the same binaries: IAC_RUNNER_TOOLS with the
    versions the binaries reported, and each tool's default binary."""
    env = {
        TOOLS_ENV: ",".join(f"{t.name}@{t.version}={t.path}" for t in tools if t.version),
    }
    for tool in tools:
        if tool.is_default:
            env[get_spec(tool.name).bin_env] = tool.path
    return env
