"""`iac-runner`: read one JSON request on stdin, run the tool, answer on stdout.

Exit statuses: 0 the tool succeeded; 1 it ran and failed, timed out or was
canceled; 2 the request was refused (invalid, disallowed, tool missing);
3 iac-runner itself failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable

from runner_stdio.commands import OPERATIONS, check_paths, refusal
from runner_stdio.executor import Execution, Outcome
from runner_stdio.output import BoundedOutput, NdjsonSink, StdoutError, write_response
from runner_stdio.protocol import (
    DEFAULT_MAX_TIMEOUT,
    EXIT_INTERNAL,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_TOOL_FAILED,
    MAX_REQUEST_BYTES,
    MAX_TIMEOUT_ENV,
    RequestError,
    now_iso,
    parse_request,
    response,
)
from runner_stdio.tools import ToolError, check_command, find_binary, get_spec
from runner_stdio.workdir import resolve_work_dir

TYPE_CHECKING = False  # typing itself costs ~4 ms of start-up
if TYPE_CHECKING:
    from typing import Any

EPILOG = """\
request (stdin):  {"tool": "terraform", "work_dir": "/tmp/iac-deployments/run-1",
                   "command": "plan", "args": ["-out=tfplan"],
                   "env_vars": {"TF_VAR_region": "us-east-1"}, "timeout": 30,
                   "sensitive_env": ["TF_VAR_password"], "tool_version": "1.11.4",
                   "mask_values": ["an-old-password"]}
response (stdout): {"success": true, "output": "...", "exit_code": 0, "error_msg": "",
                    "started_at": "...Z", "ended_at": "...Z"}

sensitive_env names env_vars whose values, and mask_values lists values (not in the
environment: e.g. a variable's past values), that are replaced by *** in all output and
in error_msg, in every form terraform or tofu prints a string (quoted, JSON-escaped,
escaped twice, line by line).

stdout_file (optional, a file name) sends the tool's stdout, unmasked, to that file in
work_dir (0600; never through a symlink) instead of the output: `show -json tfplan`,
whose document holds every value in the clear and is redacted by the backend.

tool_version (optional) picks a binary listed in IAC_RUNNER_TOOLS
("terraform@1.11.4=/opt/terraform/1.11.4/terraform,..."), or the default binary
(IAC_RUNNER_TERRAFORM_BIN / IAC_RUNNER_TOFU_BIN or PATH) when its `version -json` is that
version; without it the default binary runs.

--accept limits the operations (plan, apply, destroy) the runner runs: a command that
needs another one (apply, destroy, test, state rm, import, fmt without -check, ...) or
that is unknown is refused (exit 2). With --workspace-root, path arguments (-state,
-out, -var-file, a file to show, a directory to fmt, ..., also in TF_CLI_ARGS) and
TF_DATA_DIR-like variables must resolve inside the root (relative ones from work_dir).

exit status: 0 tool succeeded, 1 tool failed / timed out / canceled (error_msg then
             carries the tool's first "Error: ..." line), 2 request refused,
             3 internal error or stdout closed/full (one line on stderr)

signals: SIGINT or SIGTERM cancels gracefully (SIGINT to the tool's process group,
         SIGTERM after the grace period, SIGKILL 5 s later); a second one, or
         SIGUSR1, kills the group at once. A response is always written.

example:
  echo '{"tool":"terraform","work_dir":"/tmp","command":"version","args":[],"env_vars":{},"timeout":5}' | iac-runner
"""  # noqa: E501 - the README example, verbatim


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} must be a positive number")
    return number


def _operations(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    bad = [name for name in names if name not in OPERATIONS]
    if bad:
        raise argparse.ArgumentTypeError(
            f"{bad[0]!r} is not an operation; use: {', '.join(OPERATIONS)}"
        )
    return names


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="iac-runner",
        description="Run one terraform/tofu command described by a JSON request on stdin.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--stream",
        action="store_true",
        help="write NDJSON events (started, output, result) as they happen instead of one response",
    )
    p.add_argument(
        "--workspace-root",
        default=os.environ.get("IAC_RUNNER_WORKSPACE_ROOT") or None,
        help="work_dir and path arguments must resolve inside this directory "
        "[env IAC_RUNNER_WORKSPACE_ROOT]",
    )
    p.add_argument(
        "--grace",
        type=_positive,
        default=_env("IAC_RUNNER_GRACE", "20"),
        help="seconds between SIGINT and SIGTERM on cancel/timeout [env IAC_RUNNER_GRACE, 20]",
    )
    p.add_argument(
        "--default-timeout",
        type=_positive,
        default=_env("IAC_RUNNER_DEFAULT_TIMEOUT", "3600"),
        help="timeout when the request gives 0 or none [env IAC_RUNNER_DEFAULT_TIMEOUT, 3600]",
    )
    p.add_argument(
        "--max-timeout",
        type=_positive,
        default=_env(MAX_TIMEOUT_ENV, f"{DEFAULT_MAX_TIMEOUT:g}"),
        help="largest timeout a request may ask for [env IAC_RUNNER_MAX_TIMEOUT, 86400]",
    )
    p.add_argument(
        "--accept",
        type=_operations,
        action="append",
        help="an operation this runner accepts: plan, apply or destroy; repeatable or "
        "comma-separated; read-only commands always run [env IAC_RUNNER_ACCEPT, all]",
    )
    p.add_argument(
        "--output-cap",
        type=_positive,
        default=_env("IAC_RUNNER_OUTPUT_CAP", str(10 * 1024 * 1024)),
        help="bytes of output kept in the response, head and tail "
        "[env IAC_RUNNER_OUTPUT_CAP, 10 MiB]",
    )
    args = p.parse_args(argv)
    if args.accept is None:
        try:
            args.accept = [_operations(os.environ.get("IAC_RUNNER_ACCEPT", ""))]
        except argparse.ArgumentTypeError as exc:
            p.error(f"IAC_RUNNER_ACCEPT: {exc}")
    args.accept = list(dict.fromkeys(op for ops in args.accept for op in ops))
    return args


def _answer(
    stream: bool,
    fields: dict[str, Any],
    extra: dict[str, Any] | None = None,
    output: Iterable[str] = (),
) -> None:
    if stream:
        event = {"type": "result", **{k: v for k, v in fields.items() if k != "output"}}
        event.update(extra or {})
        NdjsonSink(1).event(event)
    else:
        write_response(1, fields, output)


def _refuse(stream: bool, message: str, code: int) -> int:
    now = now_iso()
    fields = response(
        success=False, output="", exit_code=-1, error_msg=message, started_at=now, ended_at=now
    )
    _answer(stream, fields, {"outcome": "refused" if code == EXIT_INVALID else "error"})
    return code


def _say(message: str) -> None:
    """One line on stderr, if there is a stderr."""
    try:
        os.write(2, f"iac-runner: {message}\n".encode(errors="replace"))
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except StdoutError as exc:
        # Whoever reads stdout is gone, or it is closed or full: there is no one to answer.
        # The tool's group has already been killed (Execution.run).
        _say(f"{exc}; no answer could be given")
        return EXIT_INTERNAL


def _read_request() -> bytes:
    """Up to one byte over the cap from stdin (fd 0), which may be closed."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_REQUEST_BYTES:
        chunk = os.read(0, MAX_REQUEST_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _die_with_parent() -> None:
    """Under the runner server (--stream): end with it. If it is SIGKILLed, the kernel
    SIGKILLs this process at once (PR_SET_PDEATHSIG) and the guard kills the tool's group;
    otherwise terraform would run on until its next line met the closed pipe."""
    parent = os.getppid()
    try:
        import ctypes  # 3-5 ms; only on the runner server's path, where the spare hides it

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, 9, 0, 0, 0)  # 9: SIGKILL
    except (OSError, AttributeError):  # not Linux: the closed pipe ends the run instead
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        raise StdoutError("the process that started iac-runner is gone")


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    try:
        os.fstat(1)
    except OSError as exc:
        _say(f"stdout is not open ({exc.strerror}): nowhere to answer")
        return EXIT_INTERNAL
    if args.stream:
        _die_with_parent()
    try:
        raw = _read_request()
    except OSError as exc:
        return _refuse(args.stream, f"could not read the request from stdin: {exc}", EXIT_INVALID)
    try:
        request = parse_request(raw, max_timeout=args.max_timeout)
        spec = get_spec(request.tool)
        check_command(spec, request.command, request.args)
        binary = find_binary(spec, request.tool_version)
        work_dir = resolve_work_dir(request.work_dir, args.workspace_root)
        if args.workspace_root:
            check_paths(
                request.command, request.args, request.env_vars, work_dir, args.workspace_root
            )
        refused = refusal(args.accept, request.command, request.args, request.env_vars)
        if refused:
            raise RequestError(refused)
    except (RequestError, ToolError) as exc:
        return _refuse(args.stream, str(exc), EXIT_INVALID)

    sink: NdjsonSink | BoundedOutput
    if args.stream:
        sink = events = NdjsonSink(1)

        def on_start(pid: int, started_at: str) -> None:
            events.event({"type": "started", "pid": pid, "started_at": started_at})
    else:
        sink = BoundedOutput(int(args.output_cap))
        on_start = None  # type: ignore[assignment]

    execution = Execution(
        request,
        spec,
        binary,
        work_dir,
        sink,
        timeout=request.timeout or args.default_timeout,
        grace=args.grace,
        on_start=on_start,
    )
    try:
        outcome: Outcome = execution.run()
    except OSError as exc:  # the tool could not be started (writes to stdout: StdoutError)
        return _refuse(args.stream, f"could not run {spec.name}: {exc}", EXIT_INTERNAL)

    fields = response(
        success=outcome.success,
        output="",  # written from the sink by _answer
        exit_code=outcome.exit_code,
        error_msg=outcome.error_msg,
        started_at=outcome.started_at,
        ended_at=outcome.ended_at,
    )
    truncated = isinstance(sink, BoundedOutput) and sink.truncated
    output = sink.pieces() if isinstance(sink, BoundedOutput) else ()
    extra = {
        "outcome": outcome.status,
        "output_truncated": truncated,
        "tool_version": request.tool_version,
    }
    _answer(args.stream, fields, extra, output)
    return EXIT_OK if outcome.success else EXIT_TOOL_FAILED


def entry() -> None:
    """The console script: main(), then exit without interpreter teardown (the response is
    already written with os.write; skipping finalisation saves several ms per command)."""
    code = main()
    for stream in (sys.stdout, sys.stderr):  # None when the fd was closed at start
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    os._exit(code)


if __name__ == "__main__":
    entry()
