"""What an ExecuteRequest may ask, checked before anything runs: every string passable to
the OS, the same rules as iac-runner's stdin, then this runner's root, accept list, tools
and journal. A refusal is a `RunnerError` whose kind the transport maps to a status.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from protos.iacrunner.v1 import runner_pb2 as pb
from runner_server import workspace
from runner_server.config import ServerConfig
from runner_server.journal import Journal
from runner_server.toolinfo import ToolInfo
from runner_stdio.commands import check_paths, refusal
from runner_stdio.protocol import DEFAULT_MAX_TIMEOUT, MAX_TIMEOUT_ENV, RequestError, parse_request
from runner_stdio.tools import ToolError, check_command, get_spec

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_RUN_ID_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
_CHANNEL_OK = _RUN_ID_OK | frozenset(":/")


def check_channel(name: str) -> None:
    if len(name) > 200 or not set(name) <= _CHANNEL_OK:
        raise RunnerError("invalid", "state_channel must be 1-200 characters of [A-Za-z0-9._:/-]")


class RunnerError(Exception):
    """A call that cannot be served. `kind` names the class of problem."""

    # invalid | precondition | exhausted | unavailable | not_found | exists | out_of_range
    # | permission
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def check_strings(message: Message) -> None:
    """Every string of a request (fields, repeated fields, map keys and values) must be
    passable to the OS: no NUL, no lone surrogate. Checked before any of them is used
    (a NUL in work_dir made realpath raise)."""
    for field, value in message.ListFields():
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if field.type != field.TYPE_STRING and not is_map:
            continue
        if is_map:  # map<string, string>
            items = [(f"{field.name}[{k!r}]", x) for k, v in value.items() for x in (k, v)]
        elif field.is_repeated:
            items = [(f"{field.name}[{i}]", v) for i, v in enumerate(value)]
        else:
            items = [(f"field {field.name!r}", value)]
        for where, text in items:
            if not isinstance(text, str):
                continue
            if "\x00" in text:
                raise RunnerError("invalid", f"{where} must not contain NUL bytes")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise RunnerError(
                    "invalid", f"{where} is not valid Unicode (lone surrogate)"
                ) from None


def max_timeout() -> float:
    """The largest timeout iac-runner accepts: what IAC_RUNNER_MAX_TIMEOUT (which it
    inherits) says, else its default. Refused here with iac-runner's own message."""
    try:
        value = float(os.environ.get(MAX_TIMEOUT_ENV) or DEFAULT_MAX_TIMEOUT)
    except ValueError:
        return DEFAULT_MAX_TIMEOUT
    return value if 0 < value < float("inf") else DEFAULT_MAX_TIMEOUT


@dataclass
class Prepared:
    run_id: str
    tool: ToolInfo
    work_dir: str
    body: dict[str, Any]  # iac-runner's request
    request: pb.ExecuteRequest


def prepare(
    req: pb.ExecuteRequest,
    config: ServerConfig,
    installed: list[ToolInfo],
    in_use: Container[str],
    journal: Journal,
) -> Prepared:
    """An ExecuteRequest checked as iac-runner checks its stdin (so both entry points refuse
    alike), then against this runner: its root, accept list, tools, journal."""
    check_strings(req)
    run_id = req.run_id or uuid.uuid4().hex
    if len(run_id) > 128 or not set(run_id) <= _RUN_ID_OK:
        raise RunnerError("invalid", "run_id must be 1-128 characters of [A-Za-z0-9._-]")
    if run_id in in_use:
        raise RunnerError("exists", f"run_id {run_id!r} is already in use on this runner")
    # The same validation as iac-runner's stdin, so both entry points refuse alike.
    args, env_vars = list(req.args), dict(req.env_vars)
    body: dict[str, Any] = {
        "tool": req.tool,
        "work_dir": req.work_dir or f"run-{run_id}",  # resolved below
        "command": req.command,
        "args": args,
        "env_vars": env_vars,
        "timeout": req.timeout,
        "sensitive_env": list(req.sensitive_env),
        "mask_values": list(req.mask_values),
    }
    if req.stdout_file:
        body["stdout_file"] = req.stdout_file
    try:
        parse_request(json.dumps(body).encode(), max_timeout=max_timeout())
        spec = get_spec(req.tool)
        check_command(spec, req.command, args)
        work_dir = workspace.work_dir_path(config.workspace_root, req.work_dir, f"run-{run_id}")
        check_paths(req.command, args, env_vars, work_dir, config.workspace_root)
    except (RequestError, ToolError) as exc:
        raise RunnerError("invalid", str(exc)) from None
    refused = refusal(config.accept, req.command, args, env_vars)
    if refused:
        raise RunnerError("permission", refused)
    tools = [t for t in installed if t.name == spec.name]
    if not tools:
        raise RunnerError("precondition", f"{spec.name} is not installed on this runner")
    if req.tool_version:
        tool = next((t for t in tools if t.version == req.tool_version), None)
        if tool is None:
            have = ", ".join(sorted({t.version for t in tools}))
            raise RunnerError(
                "invalid",
                f"tool_version: {spec.name} {req.tool_version} is not on this runner; "
                f"it has: {have}",
            )
        body["tool_version"] = tool.version
    else:
        tool = next((t for t in tools if t.is_default), tools[0])
    for name, paths in (
        ("collect", list(req.collect)),
        ("verify_sha256", [*req.verify_sha256]),
    ):
        for rel in paths:
            if not rel or os.path.isabs(rel) or ".." in rel.split("/") or "\x00" in rel:
                raise RunnerError("invalid", f"{name} path {rel!r} must be relative to work_dir")
    for rel, digest in req.verify_sha256.items():
        if not _SHA256.fullmatch(digest):
            raise RunnerError("invalid", f"verify_sha256[{rel!r}] must be 64 hex digits")
    if journal.owns(work_dir):
        raise RunnerError("invalid", f"work_dir {req.work_dir!r} is the runner's own journal")
    if req.state_channel:
        check_channel(req.state_channel)
        taken = sorted(k for k in req.env_vars if k.startswith("TF_HTTP_"))
        if taken:
            raise RunnerError(
                "invalid",
                f"env_vars {', '.join(taken)} clash with state_channel: the runner sets "
                "TF_HTTP_* itself for a run whose state it relays",
            )
    body["work_dir"] = work_dir
    return Prepared(run_id, tool, work_dir, body, req)
