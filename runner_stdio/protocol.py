"""The stdio wire format: parsing and validating a request, shaping a response.

Request (one JSON object on stdin):
    {"tool", "work_dir", "command", "args", "env_vars", "timeout", "sensitive_env",
     "tool_version", "mask_values", "stdout_file"}
Response (one JSON object on stdout), exactly these fields:
    {"success", "output", "exit_code", "error_msg", "started_at", "ended_at"}
"""

from __future__ import annotations

import json
import math
import re
import time

TYPE_CHECKING = False  # typing itself costs ~4 ms of start-up
if TYPE_CHECKING:
    from typing import Any

MAX_REQUEST_BYTES = 1024 * 1024

# Exit statuses of `iac-runner` itself.
EXIT_OK = 0  # the tool ran and succeeded
EXIT_TOOL_FAILED = 1  # the tool ran and failed, timed out or was canceled
EXIT_INVALID = 2  # the request was refused: malformed, disallowed, or the tool is missing
EXIT_INTERNAL = 3  # iac-runner itself failed

# Variables that would let a request inject code into the tool process.
FORBIDDEN_ENV = frozenset({"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT"})
# stdout_file: one plain file name inside work_dir.
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Arguments that would move the tool out of work_dir.
_FORBIDDEN_ARGS = ("chdir",)

FIELDS = (
    "tool",
    "work_dir",
    "command",
    "args",
    "env_vars",
    "timeout",
    "sensitive_env",
    "tool_version",
    "mask_values",
    "stdout_file",
)
MAX_ARGS = 1000
MAX_ENV_VARS = 1000
MAX_MASK_VALUES = 1000
# The largest timeout a request may ask for, unless IAC_RUNNER_MAX_TIMEOUT says otherwise.
# The runner server refuses what its iac-runner would, with the same message.
MAX_TIMEOUT_ENV = "IAC_RUNNER_MAX_TIMEOUT"
DEFAULT_MAX_TIMEOUT = 86400.0


class RequestError(Exception):
    """The request is invalid; the message names the field and what was wrong."""


def valid_env_name(name: str) -> bool:
    """[A-Za-z_][A-Za-z0-9_]*, checked without `re` (it costs start-up time here)."""
    return name.isascii() and name.isidentifier()


def forbidden_arg(arg: str) -> bool:
    """-chdir / --chdir[=...]: the tool must stay in work_dir."""
    if not arg.startswith("-") or arg.startswith("---"):
        return False
    name = arg.lstrip("-").split("=", 1)[0]
    return name in _FORBIDDEN_ARGS


class Request:
    """A validated request. (A plain class: dataclasses cost ~9 ms of start-up.)"""

    __slots__ = (
        "args",
        "command",
        "env_vars",
        "mask_values",
        "sensitive_env",
        "stdout_file",
        "timeout",
        "tool",
        "tool_version",
        "work_dir",
    )

    def __init__(
        self,
        tool: str,
        command: str,
        work_dir: str | None = None,
        args: list[str] | None = None,
        env_vars: dict[str, str] | None = None,
        timeout: float = 0,
        sensitive_env: list[str] | None = None,
        tool_version: str = "",
        mask_values: list[str] | None = None,
        stdout_file: str = "",
    ) -> None:
        self.tool = tool
        self.command = command
        self.work_dir = work_dir
        self.args = args or []
        self.env_vars = env_vars or {}
        self.timeout = timeout
        self.sensitive_env = sensitive_env or []
        self.tool_version = tool_version
        self.mask_values = mask_values or []
        self.stdout_file = stdout_file

    def secrets(self) -> list[str]:
        """The values to mask in every line of output: the sensitive env_vars' and
        mask_values (values not in the environment, e.g. a variable's past values)."""
        values = [self.env_vars[name] for name in self.sensitive_env]
        return [value for value in values + self.mask_values if value]


def now_iso() -> str:
    """UTC timestamp in RFC 3339 with milliseconds, e.g. 2025-12-16T10:00:00.123Z."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def _no_nul(value: str, where: str) -> str:
    """`value`, checked to be passable to the OS: no NUL bytes, no lone surrogates
    (JSON allows "\\ud800"; it cannot be encoded into an argv, env or path)."""
    if "\x00" in value:
        raise RequestError(f"{where} must not contain NUL bytes")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"{where} is not valid Unicode (lone surrogate)") from None
    return value


def _string(obj: dict[str, Any], key: str, *, required: bool) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise RequestError(f"missing required field {key!r}")
        return None
    if not isinstance(value, str):
        raise RequestError(f"field {key!r} must be a string, got {type(value).__name__}")
    if required and not value:
        raise RequestError(f"field {key!r} must not be empty")
    return _no_nul(value, f"field {key!r}")


def parse_request(raw: bytes, *, max_timeout: float) -> Request:
    """Parse and validate one request. Raises RequestError with a specific message."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise RequestError(f"request is larger than {MAX_REQUEST_BYTES} bytes")
    if not raw.strip():
        raise RequestError("empty request: send one JSON object on stdin")
    try:
        obj = json.loads(raw)
    except UnicodeDecodeError:
        raise RequestError("request is not valid UTF-8") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or an int of >4300 digits
        raise RequestError(f"request is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RequestError(f"request must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise RequestError(
            f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(FIELDS)}"
        )

    tool = _string(obj, "tool", required=True)
    command = _string(obj, "command", required=True)
    work_dir = _string(obj, "work_dir", required=False) or None
    tool_version = _string(obj, "tool_version", required=False) or ""
    assert tool is not None and command is not None

    # Absent or null means the default; any other falsy value ("", 0, false) is a type error.
    args = obj.get("args")
    args = [] if args is None else args
    if not isinstance(args, list):
        raise RequestError(f"field 'args' must be a list of strings, got {type(args).__name__}")
    if len(args) > MAX_ARGS:
        raise RequestError(f"field 'args' has more than {MAX_ARGS} items")
    for i, arg in enumerate(args):
        if not isinstance(arg, str):
            raise RequestError(f"args[{i}] must be a string, got {type(arg).__name__}")
        _no_nul(arg, f"args[{i}]")
        if forbidden_arg(arg):
            raise RequestError(f"args[{i}] {arg!r} is not allowed: work_dir sets the directory")

    env_vars = obj.get("env_vars")
    env_vars = {} if env_vars is None else env_vars
    if not isinstance(env_vars, dict):
        raise RequestError(
            f"field 'env_vars' must be an object of strings, got {type(env_vars).__name__}"
        )
    if len(env_vars) > MAX_ENV_VARS:
        raise RequestError(f"field 'env_vars' has more than {MAX_ENV_VARS} entries")
    for name, value in env_vars.items():
        if not valid_env_name(name):
            raise RequestError(f"env_vars name {name!r} is not a valid identifier")
        if name in FORBIDDEN_ENV:
            raise RequestError(f"env_vars name {name!r} is not allowed")
        if not isinstance(value, str):
            raise RequestError(f"env_vars[{name!r}] must be a string, got {type(value).__name__}")
        _no_nul(value, f"env_vars[{name!r}]")

    timeout = obj.get("timeout")
    timeout = 0 if timeout is None else timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise RequestError(
            f"field 'timeout' must be a number of seconds, got {type(timeout).__name__}"
        )
    try:
        seconds = float(timeout)
    except OverflowError:  # an integer of hundreds of digits
        raise RequestError("field 'timeout' is out of range") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise RequestError(f"field 'timeout' must be a positive number of seconds, got {seconds:g}")
    if seconds > max_timeout:
        raise RequestError(f"field 'timeout' {seconds:g} exceeds the maximum of {max_timeout:g} s")

    sensitive = obj.get("sensitive_env")
    sensitive = [] if sensitive is None else sensitive
    if not isinstance(sensitive, list) or not all(isinstance(s, str) for s in sensitive):
        raise RequestError("field 'sensitive_env' must be a list of env_vars names")
    missing = [name for name in sensitive if name not in env_vars]
    if missing:
        raise RequestError(f"sensitive_env names {missing} are not in env_vars")

    mask_values = obj.get("mask_values")
    mask_values = [] if mask_values is None else mask_values
    if not isinstance(mask_values, list):
        raise RequestError(
            f"field 'mask_values' must be a list of strings, got {type(mask_values).__name__}"
        )
    if len(mask_values) > MAX_MASK_VALUES:
        raise RequestError(f"field 'mask_values' has more than {MAX_MASK_VALUES} items")
    for i, value in enumerate(mask_values):
        if not isinstance(value, str):
            raise RequestError(f"mask_values[{i}] must be a string, got {type(value).__name__}")
        _no_nul(value, f"mask_values[{i}]")

    stdout_file = _string(obj, "stdout_file", required=False) or ""
    if stdout_file:
        if not _FILE_NAME.fullmatch(stdout_file):
            raise RequestError(
                f"field 'stdout_file' {stdout_file!r} must be a file name in work_dir "
                "(letters, digits, '.', '_', '-'; not starting with '.')"
            )
        if work_dir is None:
            raise RequestError("field 'stdout_file' needs a work_dir to write it in")

    return Request(
        tool=tool,
        command=command,
        work_dir=work_dir,
        args=list(args),
        env_vars=dict(env_vars),
        timeout=seconds,
        sensitive_env=list(sensitive),
        tool_version=tool_version,
        mask_values=list(mask_values),
        stdout_file=stdout_file,
    )


def response(
    *,
    success: bool,
    output: str,
    exit_code: int,
    error_msg: str,
    started_at: str,
    ended_at: str,
) -> dict[str, Any]:
    """The seed's response object, field for field."""
    return {
        "success": success,
        "output": output,
        "exit_code": exit_code,
        "error_msg": error_msg,
        "started_at": started_at,
        "ended_at": ended_at,
    }
