"""The table of IaC tools `iac-runner` may run, and how each binary is found.

Adding a tool is one entry in `TOOLS`.
"""

from __future__ import annotations

import os

from runner_stdio.commands import COMMANDS, GROUPS, REFUSED, key_of
from runner_stdio.commands import OPERATIONS as OPERATIONS  # runner_server.config reads it

# Subcommands that make sense unattended, from the one table of subcommands; the
# interactive ones are refused with a reason.
_TF_COMMANDS = frozenset(key.split()[0] for key, e in COMMANDS.items() if e.needs != REFUSED)
_TF_REFUSED = {key: e.why for key, e in COMMANDS.items() if e.needs == REFUSED}


class ToolSpec:
    __slots__ = ("bin_env", "binary", "commands", "env", "name", "refused")

    def __init__(
        self,
        name: str,
        binary: str,  # executable name looked up on PATH
        bin_env: str,  # environment variable holding an explicit path
        commands: frozenset[str],
        refused: dict[str, str] | None = None,
        env: dict[str, str] | None = None,  # tool env defaults; request env_vars override
    ) -> None:
        self.name = name
        self.binary = binary
        self.bin_env = bin_env
        self.commands = commands
        self.refused = refused or {}
        self.env = env or {}


_AUTOMATION_ENV = {"TF_IN_AUTOMATION": "1", "TF_INPUT": "0", "CHECKPOINT_DISABLE": "1"}

TOOLS: dict[str, ToolSpec] = {
    "terraform": ToolSpec(
        "terraform",
        "terraform",
        "IAC_RUNNER_TERRAFORM_BIN",
        _TF_COMMANDS,
        _TF_REFUSED,
        _AUTOMATION_ENV,
    ),
    "tofu": ToolSpec(
        "tofu", "tofu", "IAC_RUNNER_TOFU_BIN", _TF_COMMANDS, _TF_REFUSED, _AUTOMATION_ENV
    ),
}


# Versioned binaries: "terraform@1.11.4=/opt/terraform/1.11.4/terraform,tofu@1.8.0=/usr/bin/tofu".
# iac-runner-server fills it with the versions each binary reported at start-up.
TOOLS_ENV = "IAC_RUNNER_TOOLS"


def parse_tool_entries(text: str) -> list[tuple[str, str, str]]:
    """`name@version=path,...` into (name, version, path) triples."""
    entries = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name_version, sep, path = item.partition("=")
        name, at, version = name_version.partition("@")
        if not (sep and at and name and version and path):
            raise ToolError(
                f"tool entry {item!r} must look like NAME@VERSION=PATH, "
                "e.g. terraform@1.11.4=/opt/terraform/1.11.4/terraform"
            )
        entries.append((name.strip(), version.strip(), path.strip()))
    return entries


class ToolError(Exception):
    """The requested tool or command cannot be run here; the message says why."""


def check_command(spec: ToolSpec, command: str, args: list[str]) -> None:
    if command in spec.commands:
        if command in GROUPS and key_of(command, args) not in COMMANDS:
            subs = ", ".join(k.split()[1] for k in COMMANDS if k.startswith(command + " "))
            if args and not args[0].startswith("-"):
                raise ToolError(
                    f"command '{command} {args[0]}' is not allowed for {spec.name}; "
                    f"{command!r} takes one of: {subs}"
                )
            raise ToolError(
                f"command {command!r} is not allowed for {spec.name} without one of its "
                f"subcommands first in args: {subs}"
            )
        return
    if command in spec.refused:
        raise ToolError(
            f"command {command!r} is not allowed for {spec.name}: {spec.refused[command]}"
        )
    allowed = ", ".join(sorted(spec.commands))
    raise ToolError(f"command {command!r} is not allowed for {spec.name}; allowed: {allowed}")


def get_spec(tool: str) -> ToolSpec:
    spec = TOOLS.get(tool)
    if spec is None:
        raise ToolError(f"unknown tool {tool!r}; allowed tools: {', '.join(sorted(TOOLS))}")
    return spec


def which(name: str, path: str) -> str | None:
    """shutil.which without importing shutil (and its compression modules) at start-up."""
    for directory in path.split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _executable(spec: ToolSpec, path: str, where: str) -> str:
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise ToolError(f"{spec.name} binary not found: {where}={path} is not an executable file")
    return os.path.abspath(path)


def binary_version(path: str, environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """The version a binary reports (`version -json`: terraform >= 0.13, tofu); "" when it
    says none. Run in the environment a tool gets (no IAC_* settings), without update check."""
    import json
    import subprocess

    env = {k: v for k, v in environ.items() if not k.startswith("IAC_")}
    env["CHECKPOINT_DISABLE"] = "1"
    try:
        proc = subprocess.run(
            [path, "version", "-json"],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=30,
            env=env,
            check=False,
        )
        data = json.loads(proc.stdout)
    except (OSError, ValueError, subprocess.SubprocessError):
        return ""
    if not isinstance(data, dict):
        return ""
    return str(data.get("terraform_version") or data.get("version") or "")


def _default_binary(spec: ToolSpec, environ: dict[str, str] | os._Environ[str]) -> str:
    explicit = environ.get(spec.bin_env)
    if explicit:
        return _executable(spec, explicit, spec.bin_env)
    found = which(spec.binary, environ.get("PATH", os.defpath))
    if found is None:
        raise ToolError(
            f"{spec.name} is not installed: {spec.binary!r} is not on PATH "
            f"(install it or set {spec.bin_env} to its path)"
        )
    return os.path.abspath(found)


def find_binary(
    spec: ToolSpec, version: str = "", environ: dict[str, str] | os._Environ[str] = os.environ
) -> str:
    """The absolute path of the tool's binary: the default one (its env var, or PATH), or,
    when a version is asked for, the IAC_RUNNER_TOOLS entry of that version, else the
    default binary if `version -json` says it is that version."""
    if not version:
        return _default_binary(spec, environ)
    entries = [
        (v, path)
        for name, v, path in parse_tool_entries(environ.get(TOOLS_ENV, ""))
        if name == spec.name
    ]
    for v, path in entries:
        if v == version:
            return _executable(spec, path, f"{TOOLS_ENV} {spec.name}@{v}")
    try:
        default = _default_binary(spec, environ)
    except ToolError:
        default = ""
    default_version = binary_version(default, environ) if default else ""
    if default_version == version:
        return default
    have = [v for v, _ in entries]
    if default_version and default_version not in have:
        have.append(default_version)
    available = ", ".join(have) or "none (no IAC_RUNNER_TOOLS entry, no default binary)"
    raise ToolError(f"{spec.name} {version} is not available on this runner; it has: {available}")
