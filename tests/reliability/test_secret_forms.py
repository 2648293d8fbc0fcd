"""Every form in which terraform prints a secret is masked, in every sink.

A table of secrets, each holding one character terraform escapes somewhere (`< > & " \\ '
$ % { }`, a newline, a tab, é, an emoji) and a random tag of hex digits. No escaping
changes the tag, so a secret that leaks in any form leaks its tag: searching the sinks
for the tags finds every form, known or not. Each secret goes through four routes a
configuration prints values by: a `local-exec` echo, a plain output, an output holding a
`jsonencode` (escaped twice when shown: a JSON string inside a quoted string), and a plan
diff (a `terraform_data` input that changes); then `output`, `output -json`,
`show -json` and `plan -json` print them once more. A failing command whose error names a
secret checks `error_msg`.

Sinks: `iac-runner`'s answer (secrets named in sensitive_env), its `--stream` events
(given as mask_values), and the gRPC stream of a real runner server (both ways).
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from protos.iacrunner.v1 import runner_pb2_grpc as pb_grpc
from runner_stdio.output import LineSplitter, mask_forms
from tests.backend.archives import tar_gz
from tests.conftest import IAC_RUNNER
from tests.procs import execute, result_of
from tests.reliability.harness import Counter, start_server

# name: the secret, "{t}" standing for its tag (8 hex digits).
SECRETS = {
    "lt": "Pw<Html{t}",
    "gt": "Pw>Html{t}",
    "amp": "Pw&Sec{t}",
    "dquote": 'Qu"ot{t}',
    "backslash": "Qu\\eXYZ{t}",
    "squote": "It's{t}",
    "dollar": "Do${{x}}{t}",
    "percent": "Pe%{{y}}{t}",
    "lbrace": "Br{{ace{t}",
    "rbrace": "Br}}ace{t}",
    "newline": "First{t}\nSecond{t}",
    "tab": "Ta\tb{t}",
    "eacute": "Caf\u00e9{t}",
    "emoji": "Em\U0001f600oji{t}",
}
# A secret in an argument terraform refuses, quoted in its error line.
TARGET = "Tgt<x>{t}"


def _config(names: list[str]) -> str:
    blocks = ['variable "gen" {\n  type    = string\n  default = "a"\n}\n']
    for name in names:
        blocks.append(
            f"""\
variable "{name}" {{ type = string }}

resource "terraform_data" "{name}" {{
  input = "${{var.gen}}-${{var.{name}}}"
  provisioner "local-exec" {{
    interpreter = ["/bin/echo"]
    command     = var.{name}
  }}
}}

output "{name}_plain" {{ value = var.{name} }}
output "{name}_json" {{ value = jsonencode({{ p = var.{name} }}) }}
"""
        )
    return "\n".join(blocks)


# (command, args, TF_VAR_gen, must succeed): create (colours on), update (plan diff of a
# changed input), outputs and state in every format, a JSON plan, and a refused target.
STEPS = [
    ("init", ["-no-color"], "a", True),
    ("apply", ["-auto-approve"], "a", True),
    ("apply", ["-auto-approve", "-no-color"], "b", True),
    ("output", [], "b", True),
    ("output", ["-json"], "b", True),
    ("show", ["-json"], "b", True),
    ("plan", ["-json"], "c", True),
    ("plan", ["-no-color", "-target=x.{target}"], "c", False),
]
SINKS = ["stdio", "stream", "grpc", "grpc-mask_values"]


@dataclass
class Printed:
    values: dict[str, str]
    target: str
    reference: str = ""  # what terraform printed, unmasked
    sinks: dict[str, str] = field(default_factory=dict)  # everything each sink carried
    error_msgs: dict[str, str] = field(default_factory=dict)  # of the refused target


def _tag(value: str) -> str:
    return value[-8:]


def _env(printed: Printed, gen: str) -> dict[str, str]:
    env = {f"TF_VAR_{name}": value for name, value in printed.values.items()}
    env["TARGET_SECRET"] = printed.target
    env["TF_VAR_gen"] = gen
    return env


def _args(args: list[str], printed: Printed) -> list[str]:
    return [a.replace("{target}", printed.target) for a in args]


def _stdio(printed: Printed, env: dict[str, str], work: Path, sink: str) -> None:
    stream = sink == "stream"
    texts: list[str] = []
    for command, args, gen, ok in STEPS:
        request_env = _env(printed, gen)
        request = {
            "tool": "terraform",
            "command": command,
            "work_dir": str(work),
            "args": _args(args, printed),
            "env_vars": request_env,
        }
        if sink == "reference":
            pass
        elif stream:
            request["mask_values"] = [*printed.values.values(), printed.target]
        else:
            request["sensitive_env"] = [k for k in request_env if k != "TF_VAR_gen"]
        proc = subprocess.run(
            [IAC_RUNNER, *(["--stream"] if stream else [])],
            input=json.dumps(request).encode(),
            capture_output=True,
            env=env,
            timeout=180,
            check=False,
        )
        assert proc.returncode == (0 if ok else 1), (command, proc.stdout[-3000:], proc.stderr)
        assert proc.stderr == b""
        last = json.loads(proc.stdout.splitlines()[-1])
        if not ok:
            printed.error_msgs[sink] = last["error_msg"]
        texts.append(last["output"] if sink == "reference" else proc.stdout.decode())
    if sink == "reference":
        printed.reference = "".join(texts)
    else:
        printed.sinks[sink] = "".join(texts)


def _grpc(printed: Printed, address: str, sink: str) -> None:
    texts: list[str] = []
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.RunnerStub(channel)
        for command, args, gen, ok in STEPS:
            request_env = _env(printed, gen)
            masking: dict[str, list[str]] = (
                {"mask_values": [*printed.values.values(), printed.target]}
                if sink == "grpc-mask_values"
                else {"sensitive_env": [k for k in request_env if k != "TF_VAR_gen"]}
            )
            events = execute(
                stub,
                None,
                tool="terraform",
                command=command,
                args=_args(args, printed),
                work_dir=sink,
                env_vars=request_env,
                workspace=tar_gz({"main.tf": _config(list(printed.values))})
                if command == "init"
                else b"",
                **masking,
            )
            result = result_of(events)
            assert result.success == ok, result
            if not ok:
                printed.error_msgs[sink] = result.error_msg
            texts.append(str(events))  # every field of every message, escaped as repr does
            texts += [line.text for e in events for line in e.output.lines]
    printed.sinks[sink] = "\n".join(texts)


@pytest.fixture(scope="module")
def printed(rel_env: dict[str, str], module_tmp: Path) -> Printed:
    values = {name: t.format(t=secrets.token_hex(4)) for name, t in SECRETS.items()}
    result = Printed(values, TARGET.format(t=secrets.token_hex(4)))
    for sink in ["reference", "stdio", "stream"]:
        work = module_tmp / sink
        work.mkdir()
        (work / "main.tf").write_text(_config(list(values)))
        _stdio(result, rel_env, work, sink)
    server = start_server(module_tmp, rel_env, "forms")
    try:
        for sink in ["grpc", "grpc-mask_values"]:
            _grpc(result, server.address, sink)
    finally:
        server.stop()
    result.sinks["runner server log"] = server.log.read_text()
    return result


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _block(lines: list[str], start: Callable[[str], bool], end: Callable[[str], bool]) -> str:
    """The lines from each one `start` accepts to the next one `end` accepts."""
    out: list[str] = []
    inside = False
    for line in lines:
        if start(line):
            inside = True
        elif inside and end(line):
            inside = False
        if inside:
            out.append(line)
    return "\n".join(out)


@pytest.mark.parametrize("name", list(SECRETS))
def test_terraform_prints_the_secret_through_every_route(printed: Printed, name: str) -> None:
    """The routes print the secret (else the sinks' test would prove nothing), and every
    place terraform printed it is one of mask_forms: masking the unmasked output leaves
    no tag."""
    value, tag = printed.values[name], _tag(printed.values[name])
    lines = ANSI.sub("", printed.reference).split("\n")
    routes = {
        "local-exec echo": _block(
            lines,
            lambda s: (
                s.startswith(f"terraform_data.{name} (local-exec): ") and "Executing:" not in s
            ),
            lambda s: not s.startswith(f"terraform_data.{name} (local-exec): "),
        ),
        "plain output": _block(
            lines, lambda s: s.startswith(f"{name}_plain = "), lambda s: " = " in s
        ),
        "jsonencode output": _block(
            lines, lambda s: s.startswith(f"{name}_json = "), lambda s: " = " in s
        ),
        "plan diff": _block(
            lines,
            lambda s: s.strip() == f"# terraform_data.{name} will be updated in-place",
            lambda s: s == "    }",
        ),
    }
    missing = [route for route, text in routes.items() if tag not in text]
    assert missing == [], (missing, routes)
    seen = {form for form in mask_forms(value) if form in printed.reference}
    Counter.add("secret forms terraform printed (forms x secrets)", len(seen))
    masked = LineSplitter([value]).mask(printed.reference)
    assert tag not in masked, [line for line in masked.split("\n") if tag in line]


@pytest.mark.parametrize("sink", [*SINKS, "runner server log"])
@pytest.mark.parametrize("name", list(SECRETS))
def test_every_form_is_masked_in_every_sink(printed: Printed, name: str, sink: str) -> None:
    tag = _tag(printed.values[name])
    text = printed.sinks[sink]
    assert tag not in text, [line for line in text.split("\n") if tag in line][:5]
    if sink != "runner server log":
        assert "***" in text
    Counter.add("secret x sink checks")


@pytest.mark.parametrize("sink", SINKS)
def test_error_msg_carries_terraform_s_error_line_masked(printed: Printed, sink: str) -> None:
    # Unmasked, the error line carries the secret ...
    assert f'"x.{printed.target}"' in printed.error_msgs["reference"]
    # ... masked, in every sink, it does not.
    message = printed.error_msgs[sink]
    assert message.startswith("terraform plan exited with code 1: Error: Invalid target"), message
    assert _tag(printed.target) not in message and '"x.***"' in message, message


WRAPPING_CONFIG = """\
variable "phrase" { type = string }

resource "terraform_data" "fails" {
  provisioner "local-exec" {
    command = "echo connecting with password ${var.phrase} to the database server now; exit 3"
  }
}
"""


@pytest.mark.parametrize("color", [False, True], ids=["no-color", "color"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_secret_terraform_wraps_across_lines_is_masked(
    rel_env: dict[str, str], tmp_path: Path, color: bool, stream: bool
) -> None:
    """terraform word-wraps a diagnostic at 78 columns: a failing local-exec's command
    shows a passphrase broken over two lines (in a box, coloured, or not)."""
    tag = secrets.token_hex(4)
    phrase = f"correct horse battery staple {tag}"
    (tmp_path / "main.tf").write_text(WRAPPING_CONFIG)
    base = {"tool": "terraform", "work_dir": str(tmp_path), "env_vars": {"TF_VAR_phrase": phrase}}
    outputs: dict[bool, str] = {}
    for command, masked in [("init", False), ("apply", False), ("apply", True)]:
        request = {**base, "command": command, "args": [] if color else ["-no-color"]}
        if command == "apply":
            request["args"] = [*request["args"], "-auto-approve"]
        if masked:
            request["sensitive_env"] = ["TF_VAR_phrase"]
        proc = subprocess.run(
            [IAC_RUNNER, *(["--stream"] if stream and masked else [])],
            input=json.dumps(request).encode(),
            capture_output=True,
            env=rel_env,
            timeout=120,
            check=False,
        )
        outputs[masked] = proc.stdout.decode()
    # Unmasked, the phrase is broken over two lines of the diagnostic ...
    raw = json.loads(outputs[False])["output"]
    broken = [line for line in raw.split("\n") if "correct horse" in line and tag not in line]
    assert broken, raw
    # ... and masked, nothing of it is left, nor in error_msg.
    assert tag not in outputs[True] and "correct horse" not in outputs[True], outputs[True]
    assert "Error running command" in outputs[True]
