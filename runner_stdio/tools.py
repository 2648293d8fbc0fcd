"""The table of IaC tools `iac-runner` may run, and how each binary is found.

Adding a tool is one entry in `TOOLS`.
"""

from __future__ import annotations

import os

# Subcommands that make sense unattended. Interactive ones are refused with a reason.
_TF_COMMANDS = frozenset(
    {
        "version",
        "init",
        "validate",
        "plan",
        "apply",
        "destroy",
        "show",
        "output",
        "fmt",
        "providers",
        "state",
        "import",
        "refresh",
        "workspace",
        "graph",
        "get",
        "test",
        "force-unlock",
        "taint",
        "untaint",
    }
)
_TF_REFUSED = {
    "console": "it is an interactive REPL",
    "login": "it is interactive and writes credentials to the runner's disk",
    "logout": "it is interactive and changes the runner's stored credentials",
    "metadata": "it is not a command for unattended runs",
}


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


# Commands that change nothing (state or infrastructure); `plan` is its own operation.
READ_ONLY_COMMANDS = frozenset(
    {"version", "init", "validate", "show", "output", "fmt", "providers", "graph", "get", "test"}
)
OPERATIONS = ("plan", "apply", "destroy")
# Versioned binaries: "terraform@1.11.4=/opt/terraform/1.11.4/terraform,tofu@1.8.0=/usr/bin/tofu".
# iac-runner-server fills it with the versions each binary reported at start-up.
TOOLS_ENV = "IAC_RUNNER_TOOLS"


def operation_of(command: str, args: list[str]) -> str | None:
    """The operation a runner must accept to run this command (None: read-only).

    `plan` needs "plan"; `destroy` or `apply -destroy` needs "destroy"; applying a saved
    plan needs "apply" or "destroy" (the file does not say which; callers check both);
    every other state-changing command (import, state, taint, refresh, ...) needs "apply".
    """
    if command in READ_ONLY_COMMANDS or command == "workspace":
        return None
    if command == "plan":
        return "plan"
    if command == "destroy" or (command == "apply" and "-destroy" in args):
        return "destroy"
    return "apply"


def accepted(accept: list[str], command: str, args: list[str]) -> bool:
    """Whether a runner that accepts `accept` (empty: everything) may run this command."""
    needed = operation_of(command, args)
    if not accept or needed is None or needed in accept:
        return True
    saved_plan = command == "apply" and any(not a.startswith("-") for a in args)
    return saved_plan and "destroy" in accept


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


def check_command(spec: ToolSpec, command: str) -> None:
    if command in spec.commands:
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


def find_binary(
    spec: ToolSpec, version: str = "", environ: dict[str, str] | os._Environ[str] = os.environ
) -> str:
    """The absolute path of the tool's binary: of `version` from IAC_RUNNER_TOOLS when a
    version is asked for, else the default one from its env var or PATH."""
    if version:
        entries = [
            (v, path)
            for name, v, path in parse_tool_entries(environ.get(TOOLS_ENV, ""))
            if name == spec.name
        ]
        for v, path in entries:
            if v == version:
                return _executable(spec, path, f"{TOOLS_ENV} {spec.name}@{v}")
        available = ", ".join(v for v, _ in entries) or "none listed in " + TOOLS_ENV
        raise ToolError(
            f"{spec.name} {version} is not available on this runner; it has: {available}"
        )
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
