"""Hypothesis strategies for hostile requests: random JSON shapes, types, sizes, unicode
(lone surrogates, NUL, other planes) and values chosen to probe the validation's edges."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.reliability.harness import size


def fuzz_settings(quick: int, soak: int) -> settings:
    """Bounded example counts; no example database (nothing written into the tree)."""
    return settings(
        max_examples=size(quick, soak),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Values that found bugs or sit on the validation's edges: NUL, lone surrogates (JSON can
# carry them, an argv or a path cannot), very long strings.
NASTY_TEXT = ["\x00", "w\x00", "a\x00b", "x" * 100_000, "\u00e9" * 40_000, "\n" * 1000]
LONE_SURROGATES = ["\ud800", "\udcff", "a\udfffb", "\ud83d"]  # "\ud83d": half an emoji
# Any text: every plane, NUL, lone surrogates (hypothesis makes none by itself), long ones.
any_text = (
    st.text(max_size=40)
    | st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
    | st.sampled_from(NASTY_TEXT + LONE_SURROGATES)
)
# What a protobuf string can hold (valid UTF-8): lone surrogates reach a runner only as
# bad bytes, made by `bad_utf8_messages`.
proto_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40) | st.sampled_from(
    NASTY_TEXT
)
# Numbers no timeout may be: not finite, negative, beyond any maximum.
NON_FINITE = [float("nan"), float("inf"), float("-inf"), 1e12, 1e309, -1.0, 1e-320]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)

TOOLS = ["terraform", "tofu", "Terraform", "pulumi", "/bin/sh", "bash", "", "terraform\x00"]
COMMANDS = [
    "version", "plan", "init", "show", "validate", "fmt", "output", "console", "login",
    "metadata", "rm", "-version", "apply", "", "sh -c id", "../terraform",
]  # fmt: skip
WORK_DIRS = [
    "w", "", ".", "..", "../..", "/", "/etc", "w/../..", "w/../../outside", "link-out",
    "link-out/..", "w\x00", "/tmp", "outside", "w/./", "//", "~",
]  # fmt: skip
ARGS = ["-chdir=/", "--chdir=/etc", "-chdir", "-json", "-no-color", "-input=true", "-out=x"]
ENV_NAMES = ["LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "PATH", "TF_VAR_x", "1BAD", "A=B", ""]


def _not_a_fake_tool_flag(arg: str) -> bool:
    # The fake terraform takes --lines/--sleep/--write...: random args must not drive it.
    return not arg.startswith("--") or arg.startswith("--chdir")


args = st.lists(st.sampled_from(ARGS) | any_text.filter(_not_a_fake_tool_flag), max_size=6)
env_vars = st.dictionaries(st.sampled_from(ENV_NAMES) | any_text, any_text, max_size=5)
timeouts = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.sampled_from([0, 0.001, 1, 5, 10, 11, 86400, *NON_FINITE])
)

FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "tool": st.sampled_from(TOOLS) | json_values,
    "command": st.sampled_from(COMMANDS) | json_values,
    "work_dir": st.sampled_from(WORK_DIRS) | json_values,
    "args": args | json_values,
    "env_vars": env_vars | json_values,
    "timeout": timeouts | json_values,
    "sensitive_env": st.lists(st.sampled_from(ENV_NAMES) | any_text, max_size=3) | json_values,
    "tool_version": st.sampled_from(["", "1.11.4", "0.0.0", "1.11.4\x00"]) | json_values,
    "mask_values": st.lists(any_text, max_size=3) | json_values,
}

# Request-shaped objects: a random subset of the fields, each well or badly typed,
# sometimes with an unknown field.
request_objects = st.fixed_dictionaries(
    {"tool": st.just("terraform") | FIELDS["tool"], "command": st.sampled_from(COMMANDS)},
    optional={k: v for k, v in FIELDS.items() if k not in ("tool", "command")}
    | {"extra": json_values},
)


def _encode(obj: Any, ascii_only: bool) -> bytes:
    text = json.dumps(obj, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")


stdin_bodies = st.one_of(
    st.tuples(request_objects, st.booleans()).map(lambda t: _encode(*t)),
    st.tuples(json_values, st.booleans()).map(lambda t: _encode(*t)),
    st.binary(max_size=300),
    st.builds(
        lambda n, c: b'{"tool":"terraform","command":"version","args":["' + c * n + b'"]}',
        st.integers(min_value=0, max_value=1_100_000),
        st.sampled_from([b"a", b"\\u0000", b"\xf0\x9f\x92\xa5", b"\\ud800"]),
    ),
    st.sampled_from([b"", b"{", b"[" * 200_000, b"\x00" * 10, b"\xff\xfe{}", b"{}" * 1000]),
    # One field of a valid request replaced by a lone surrogate, NUL or a long string.
    st.builds(
        lambda field, value: json.dumps(
            {"tool": "terraform", "command": "version", field: value}
        ).encode("utf-8", "surrogatepass"),
        st.sampled_from(["tool", "command", "work_dir", "tool_version"]),
        st.sampled_from(NASTY_TEXT + LONE_SURROGATES),
    ),
    st.builds(
        lambda field, value: json.dumps(
            {"tool": "terraform", "command": "version", "env_vars": {"A": "1"}, field: [value]}
        ).encode("utf-8", "surrogatepass"),
        st.sampled_from(["args", "mask_values", "sensitive_env"]),
        st.sampled_from(NASTY_TEXT + LONE_SURROGATES),
    ),
)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


# Invalid UTF-8 in a string field (field numbers of ExecuteRequest's, AttachRequest's and
# CancelRequest's strings): "\xed\xa0\x80" is a lone surrogate as CESU-8 writes it.
BAD_UTF8 = [b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xff", b"ok\xc3", b"\xc0\x80"]
bad_utf8_messages = st.builds(
    lambda number, value: _varint(number << 3 | 2) + _varint(len(value)) + value,
    st.sampled_from([1, 2, 3, 4, 5, 8, 10, 13, 15]),
    st.sampled_from(BAD_UTF8),
)
