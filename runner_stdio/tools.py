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


def find_binary(spec: ToolSpec, environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """The absolute path of the tool's binary, from its env var or PATH."""
    explicit = environ.get(spec.bin_env)
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise ToolError(
                f"{spec.name} binary not found: {spec.bin_env}={explicit} is not an executable file"
            )
        return os.path.abspath(explicit)
    found = which(spec.binary, environ.get("PATH", os.defpath))
    if found is None:
        raise ToolError(
            f"{spec.name} is not installed: {spec.binary!r} is not on PATH "
            f"(install it or set {spec.bin_env} to its path)"
        )
    return os.path.abspath(found)
