"""What each terraform/tofu subcommand may change, and which of its arguments name paths.

`COMMANDS` is the one table: every subcommand a runner runs (and each subcommand of
`state`, `workspace`, `providers` and `metadata`), the most it can change, whether its
positional arguments are paths, and why. An accept-limited runner (`--accept`) runs a
command only when it accepts what the command needs; anything not in the table is
refused. Path arguments (`-state`, `-out`, `-var-file`, a file to `show`, a directory to
`fmt`, ... and the same inside TF_CLI_ARGS) must resolve inside the workspace root.
"""

from __future__ import annotations

import os

from runner_stdio.protocol import RequestError

READ = "read-only"  # changes no state and no infrastructure; writes at most into work_dir
PLAN = "plan"
APPLY = "apply"
DESTROY = "destroy"
OPERATIONS = (PLAN, APPLY, DESTROY)
REFUSED = "refused"  # never run, whatever the runner accepts


class Entry:
    __slots__ = ("needs", "paths", "raised_by", "why")

    def __init__(
        self, needs: str, why: str, *, paths: bool = False, raised_by: dict[str, str] | None = None
    ) -> None:
        self.needs = needs
        self.why = why
        self.paths = paths  # its positional arguments name files or directories
        self.raised_by = raised_by or {}  # a boolean flag that, set, needs more


# The most each subcommand can change. `paths`: its positional arguments name files or
# directories; `raised_by`: a boolean flag that, set, needs more.
# fmt: off
COMMANDS: dict[str, Entry] = {
    "version":          Entry(READ, "prints versions"),
    "init":             Entry(READ, "installs providers and modules into work_dir; "
                                    "-migrate-state/-force-copy copy state to a new backend",
                              paths=True, raised_by={"migrate-state": APPLY, "force-copy": APPLY}),
    "get":              Entry(READ, "installs modules into work_dir", paths=True),
    "validate":         Entry(READ, "checks the configuration", paths=True),
    "fmt":              Entry(APPLY, "rewrites .tf files; read-only with -check (and only -diff, "
                                     "-list, -recursive, -no-color besides)", paths=True),
    "graph":            Entry(READ, "prints a graph", paths=True),
    "show":             Entry(READ, "prints a state or a saved plan", paths=True),
    "output":           Entry(READ, "prints outputs"),
    "modules":          Entry(READ, "prints the declared modules"),
    "providers":        Entry(READ, "prints the required providers"),
    "providers lock":   Entry(READ, "writes the lock file in work_dir"),
    "providers mirror": Entry(READ, "copies providers into a directory", paths=True),
    "providers schema": Entry(READ, "prints provider schemas"),
    "metadata functions": Entry(READ, "prints function signatures"),
    "plan":             Entry(PLAN, "reads state and infrastructure; writes its -out file",
                              paths=True),
    "apply":            Entry(APPLY, "changes infrastructure and state; -destroy destroys; a "
                                     "saved plan may do either (the file does not say which)",
                              paths=True, raised_by={"destroy": DESTROY}),
    "destroy":          Entry(DESTROY, "destroys every resource", paths=True),
    "refresh":          Entry(APPLY, "writes state", paths=True),
    "import":           Entry(APPLY, "writes state"),
    "taint":            Entry(APPLY, "writes state (the next apply replaces the resource)"),
    "untaint":          Entry(APPLY, "writes state"),
    "force-unlock":     Entry(APPLY, "releases a lock another run holds"),
    "test":             Entry(APPLY, "its run blocks apply (and then destroy) real resources"),
    "state list":       Entry(READ, "prints addresses"),
    "state show":       Entry(READ, "prints a resource"),
    "state pull":       Entry(READ, "prints the state"),
    "state mv":         Entry(APPLY, "writes state"),
    "state rm":         Entry(APPLY, "writes state (resources are forgotten, not destroyed)"),
    "state push":       Entry(APPLY, "overwrites the state with a file", paths=True),
    "state replace-provider": Entry(APPLY, "writes state"),
    "workspace list":   Entry(READ, "prints workspaces"),
    "workspace show":   Entry(READ, "prints the current workspace"),
    "workspace select": Entry(READ, "records the choice in work_dir; -or-create creates one",
                              raised_by={"or-create": APPLY}),
    "workspace new":    Entry(APPLY, "creates a state (-state copies one in)"),
    "workspace delete": Entry(APPLY, "deletes a state (-force: its resources are forgotten)"),
    "console":          Entry(REFUSED, "it is an interactive REPL"),
    "login":            Entry(REFUSED, "it is interactive and writes credentials to the "
                                       "runner's disk"),
    "logout":           Entry(REFUSED, "it is interactive and changes the runner's stored "
                                       "credentials"),
}
# fmt: on

# Subcommands that have subcommands: an unknown one is refused (`providers` alone is one).
GROUPS = frozenset(key.split()[0] for key in COMMANDS if " " in key)
# fmt -check reads only with these flags besides it.
_FMT_READ_FLAGS = frozenset({"check", "diff", "list", "recursive", "no-color"})

# Flags whose value names a file or directory (terraform and tofu; unknown ones are
# refused by the tool itself). -backend-config is a file only without "=" (else key=value);
# -from-module only when it is a local path rather than a module address.
PATH_FLAGS = frozenset(
    {
        "state", "state-out", "backup", "backup-out", "var-file", "out", "plugin-dir",
        "from-module", "backend-config", "generate-config-out", "test-directory", "json-into",
        "junit-xml", "config", "plan", "fs-mirror",
    }
)  # fmt: skip
# Flags that take a value which is not a path: `-var x=/y` must not read /y as an argument.
_VALUE_FLAGS = frozenset(
    {
        "var", "target", "replace", "exclude", "lock-timeout", "parallelism", "filter",
        "platform", "net-mirror", "type", "lockfile", "cloud-run", "provider", "deprecation",
    }
)  # fmt: skip
# Environment variables that name paths the tool writes or reads its settings from.
PATH_ENV = ("TF_DATA_DIR", "TF_LOG_PATH", "TF_PLUGIN_CACHE_DIR", "TF_CLI_CONFIG_FILE",
            "TERRAFORM_CONFIG")  # fmt: skip
CLI_ARGS_ENV = "TF_CLI_ARGS"
_FALSE = ("false", "0", "f", "F", "FALSE", "False")


def key_of(command: str, args: list[str]) -> str:
    """The table key: `state rm` for command "state" with args ["rm", ...] (a group's
    first argument, unless it is a flag, names its subcommand)."""
    if command in GROUPS and args and not args[0].startswith("-"):
        return f"{command} {args[0]}"
    return command


def _flag(arg: str) -> tuple[str, str | None] | None:
    """(name, value or None) of a Go-style flag: -name, --name, -name=value."""
    if not arg.startswith("-") or arg in ("-", "--") or arg.startswith("---"):
        return None
    name, eq, value = arg.lstrip("-").partition("=")
    return name, (value if eq else None)


def _flags(args: list[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for arg in args:
        flag = _flag(arg)
        if flag is not None:
            found[flag[0]] = flag[1]
    return found


def _set(flags: dict[str, str | None], name: str) -> bool:
    return name in flags and flags[name] not in _FALSE


def cli_args_env(command: str, args: list[str], env_vars: dict[str, str]) -> list[tuple[str, str]]:
    """(where, argument) for each argument terraform takes from TF_CLI_ARGS and
    TF_CLI_ARGS_<subcommand> (`state rm` -> TF_CLI_ARGS_state_rm) in `env_vars`."""
    names = [CLI_ARGS_ENV, f"{CLI_ARGS_ENV}_{key_of(command, args)}".replace(" ", "_")]
    names.append(names[1].replace("-", "_"))
    found: list[tuple[str, str]] = []
    for name in dict.fromkeys(names):
        value = env_vars.get(name)
        if not value:
            continue
        import shlex  # only when the request sets one (terraform splits them as a shell would)

        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise RequestError(
                f"env_vars[{name!r}] cannot be split into arguments: {exc}"
            ) from None
        found += [(f"env_vars[{name!r}]", word) for word in words]
    return found


def needs(command: str, args: list[str], env_vars: dict[str, str] | None = None) -> str:
    """What a runner must accept to run this command: READ, PLAN, APPLY, DESTROY,
    "apply|destroy" (a saved plan), REFUSED, or "" (not in the table)."""
    key = key_of(command, args)
    entry = COMMANDS.get(key)
    if entry is None:
        return ""
    every = [a for _, a in cli_args_env(command, args, env_vars or {})] + list(args)
    flags = _flags(every)
    needed = entry.needs
    for flag, raised in entry.raised_by.items():
        if _set(flags, flag):
            needed = raised
    if key == "fmt" and _set(flags, "check") and set(flags) <= _FMT_READ_FLAGS:
        needed = READ
    if key == "apply" and needed == APPLY and _positionals(every):
        needed = f"{APPLY}|{DESTROY}"
    return needed


def refusal(
    accept: list[str], command: str, args: list[str], env_vars: dict[str, str] | None = None
) -> str:
    """Why a runner that accepts `accept` (empty: every operation) must not run this
    command ("" when it may)."""
    if not accept:
        return ""
    needed = needs(command, args, env_vars)
    if needed == READ or needed in accept:
        return ""
    if needed == f"{APPLY}|{DESTROY}" and (APPLY in accept or DESTROY in accept):
        return ""
    what = key_of(command, args)
    has = ", ".join(accept)
    if not needed or needed == REFUSED:
        return f"this runner accepts only known subcommands ({has}); {what!r} is not one"
    needed = needed.replace("|", " or ")
    return f"this runner does not accept {needed} ({what!r}); it accepts: {has}"


def _values(pairs: list[tuple[str, str]]) -> list[tuple[str, str | None, str]]:
    """(where, flag, value) for every flag that takes a value (PATH_FLAGS, _VALUE_FLAGS:
    `-name=value` or `-name value`) and (where, None, arg) for every positional argument,
    parsed as Go's flag package does (`--` ends the flags)."""
    found: list[tuple[str, str | None, str]] = []
    i, rest = 0, False
    while i < len(pairs):
        where, arg = pairs[i]
        i += 1
        if arg == "--" and not rest:
            rest = True
            continue
        flag = None if rest else _flag(arg)
        if flag is None:
            if arg != "-":  # stdin, which is /dev/null
                found.append((where, None, arg))
            continue
        name, value = flag
        if name in PATH_FLAGS or name in _VALUE_FLAGS:
            if value is None and i < len(pairs):
                value, i = pairs[i][1], i + 1
            if value is not None:
                found.append((where, name, value))
    return found


def _positionals(args: list[str]) -> list[str]:
    return [value for _, flag, value in _values([("", a) for a in args]) if flag is None]


def _local_module(source: str) -> str | None:
    """The local path a -from-module source reads, or None for a remote address."""
    if source.startswith("file::"):
        return source[len("file::") :]
    if "file://" in source:
        return source.split("file://", 1)[1]
    if source in (".", "..") or source.startswith(("/", "./", "../", "~")):
        return source
    return None


def _inside(path: str, work_dir: str | None, real_root: str) -> bool:
    if work_dir is None:  # a fresh temporary directory: only what stays in it, or the root
        if not os.path.isabs(path):
            normal = os.path.normpath(path)
            return normal != ".." and not normal.startswith(".." + os.sep)
        base = "/"
    else:
        base = work_dir
    real = os.path.realpath(os.path.join(base, path))
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def check_paths(
    command: str,
    args: list[str],
    env_vars: dict[str, str],
    work_dir: str | None,
    root: str,
) -> None:
    """Refuse (RequestError, naming the argument) a path argument or path variable that
    does not resolve, symlinks followed, inside `root`. Relative paths are taken from
    `work_dir` (None: a fresh temporary directory)."""
    real_root = os.path.realpath(root)
    key = key_of(command, args)
    entry = COMMANDS.get(key)
    positional_paths = entry is not None and entry.paths
    pairs = [(f"args[{i}]", arg) for i, arg in enumerate(args)]
    if key != command:
        pairs = pairs[1:]  # the subcommand's name
    for where, flag, value in _values(cli_args_env(command, args, env_vars) + pairs):
        path: str | None = value
        if flag is None:
            path = value if positional_paths else None
        elif flag not in PATH_FLAGS or (flag == "backend-config" and "=" in value):
            path = None  # a value, not a path; -backend-config=key=value
        elif flag == "from-module":
            path = _local_module(value)
        elif value == "-" and flag in ("backup", "state-out", "backup-out"):  # "none"
            path = None
        if path is None or _inside(path, work_dir, real_root):
            continue
        what = f"-{flag} {value!r}" if flag else repr(value)
        raise RequestError(
            f"{where}: {what} is outside the workspace root {root!r}: paths must resolve "
            "inside it (relative ones from work_dir)"
        )
    for name in PATH_ENV:
        setting = env_vars.get(name)
        if setting and not _inside(setting, work_dir, real_root):
            raise RequestError(
                f"env_vars[{name!r}] {setting!r} is outside the workspace root {root!r}: "
                "paths must resolve inside it (relative ones from work_dir)"
            )
