"""The REST API fuzzed from its own OpenAPI schema with schemathesis: no 5xx, and every
error a 4xx whose body says what was wrong (`{"detail": ...}`).

The backend runs inside a network namespace that has nothing but a loopback interface:
a fuzzed runner address (any host name, any IP) can reach nothing, and no DNS query
leaves the machine. Without namespaces the runner registration is left out, with the
reason. Every operation is fuzzed with schema-conforming (positive) and non-conforming
(negative) cases, once with generated path parameters and once with ones that exist.

Schemathesis generates JSON a strict encoder can write: no NaN or Infinity, no lone
surrogate (it does generate NUL). A third mode takes its valid cases for every operation
with a JSON body and puts one of those values (NaN, Infinity, -Infinity, a lone surrogate,
a NUL, a 200,000-character string) into one of their fields, sent as JSON text written by
Python's encoder (which writes NaN bare and a surrogate as its escape): a 422 naming the
field, or a 4xx for the long string.

Left out: `follow=true` on the log endpoint (an SSE stream that lasts as long as the run;
test_load and the e2e tests cover it), and LOCK/UNLOCK of the state endpoint (Terraform's
own protocol with per-run credentials; test_state covers it; GET/POST/DELETE of it are
fuzzed here and must answer 401 to an API token).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.backend.platform import TOKEN, Backend, start_backend
from tests.conftest import skip_unless_strict
from tests.reliability.harness import Counter, inside_netns, ip, size

AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXISTING = {"name": "web", "run_id": 1, "version": 1, "key": "greeting", "version_id": 1}
HOSTILE = "hostile"  # the third mode: valid cases with one hostile value (module doc)
HOSTILE_VALUES: list[Any] = [
    float("nan"),
    float("inf"),
    float("-inf"),
    "\ud800",
    "a\udc80b",
    "a\x00b",
    "x" * 200_000,
]


@pytest.fixture(scope="module")
def fuzz_netns() -> Iterator[str]:
    """A namespace with only `lo`, or "" where namespaces cannot be made."""
    name = f"iacfuzz-{os.getpid()}"
    if ip("netns", "add", name, check=False).returncode != 0:
        yield ""
        return
    try:
        ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        ip("netns", "del", name, check=False)


@pytest.fixture(scope="module")
def api(
    rel_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, fuzz_netns: str
) -> Iterator[tuple[Backend, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("fuzz-api")
    with inside_netns(fuzz_netns) if fuzz_netns else _nowhere():
        backend = start_backend(tmp, rel_env, f"sqlite:///{tmp / 'iac.db'}", netns=fuzz_netns)
        try:
            backend.deploy("web", {"main.tf": 'variable "greeting" {}\n'})
            backend.call("PUT", "/deployments/web/variables/greeting", 201, json={"value": "hi"})
            backend.start("web", "plan")
            spec = httpx.get(backend.url + "/openapi.json", timeout=10).json()
        except BaseException:
            backend.stop()
            raise
    try:
        yield backend, spec
    finally:
        with inside_netns(fuzz_netns) if fuzz_netns else _nowhere():
            backend.stop()
        log = backend.log.read_text()
        assert "Traceback" not in log, log[-5000:]


class _nowhere:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _operations(spec: dict[str, Any], isolated: bool) -> list[tuple[str, str]]:
    found = []
    for path, ops in spec["paths"].items():
        for method in ops:
            if method not in ("get", "post", "put", "delete", "patch"):
                continue  # LOCK/UNLOCK: Terraform's state protocol, see the module doc
            if path == "/api/v1/runners" and method == "post" and not isolated:
                continue  # would dial fuzzed addresses: only inside the namespace
            found.append((method.upper(), path))
    return found


def _check(case: Any, base_url: str) -> None:
    if case.path == "/api/v1/runs/{run_id}/logs" and case.query:
        case.query["follow"] = "false"
    try:
        response = case.call(base_url=base_url, headers=AUTH, timeout=30)
    except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, ValueError) as exc:
        Counter.add(f"API cases the HTTP client would not send ({type(exc).__name__})")
        return  # nothing reached the server
    Counter.add("inputs fuzzed (REST API)")
    status = response.status_code
    where = f"{case.method} {case.formatted_path} query={case.query} body={case.body!r:.300}"
    assert status < 500, (where, status, response.text[:1000])
    if status >= 400:
        Counter.add(f"API answers {status // 100}xx")
        try:
            detail = response.json()["detail"]
        except (ValueError, KeyError, TypeError):
            raise AssertionError((where, status, "no detail", response.text)) from None
        assert detail, (where, status, response.text)
        if isinstance(detail, list):
            assert all(item.get("msg") for item in detail), detail
    else:
        Counter.add("API answers 2xx")


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every place in a JSON body a value can go (each field, each item)."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _leaves(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _leaves(item, (*path, i))
    return found


def _with(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(body) if isinstance(body, dict) else list(body)
    copy[path[0]] = _with(copy[path[0]], path[1:], value)  # type: ignore[index]
    return copy


def _check_hostile(case: Any, base_url: str, pick: int, value: Any) -> None:
    """`case`'s body with `value` in one of its fields, sent as Python's JSON text."""
    body = case.body if isinstance(case.body, dict) else {}
    places = _leaves(body)
    path = places[pick % len(places)] if places else ("name",)
    # An optional body left out (approve, discard, cancel): the value in a body of its own.
    hostile = _with(body, path, value) if places else {"name": value}
    response = requests.request(
        case.method,
        base_url + case.formatted_path,
        params=case.query,
        headers={**AUTH, "Content-Type": "application/json"},
        data=json.dumps(hostile, allow_nan=True),
        timeout=30,
    )
    Counter.add("hostile JSON values sent (REST API)")
    where = f"{case.method} {case.formatted_path} {'.'.join(map(str, path))}={value!r:.40}"
    assert 400 <= response.status_code < 500, (where, response.status_code, response.text[:500])
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail, (where, response.text[:500])
    if not (isinstance(value, str) and len(value) > 1000):
        # NaN, Infinity, a surrogate, a NUL: refused by the body's parsing, naming the field
        # (or another one: schemathesis's own cases may hold a NUL already).
        assert response.status_code == 422, (where, response.text[:500])
        assert str(path[0]) in detail or "\\x00" in repr(body), (where, detail)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE, HOSTILE])
def test_rest_api_fuzzed_from_its_openapi_schema(
    api: tuple[Backend, dict[str, Any]], fuzz_netns: str, mode: GenerationMode | str
) -> None:
    backend, spec = api
    if not fuzz_netns:
        print("network namespaces unavailable: POST /runners is not fuzzed")
    schema = schemathesis.openapi.from_dict(spec)
    operations = _operations(spec, isolated=bool(fuzz_netns))
    assert len(operations) >= 20
    if mode == HOSTILE:
        _fuzz_hostile(backend, spec, schema, operations, fuzz_netns)
        return
    assert isinstance(mode, GenerationMode)
    examples = size(6, 150) if mode == GenerationMode.POSITIVE else size(3, 100)
    with inside_netns(fuzz_netns) if fuzz_netns else _nowhere():
        for method, path in operations:
            operation = schema[path][method]
            known = {
                k: v for k, v in EXISTING.items() if "{" + k + "}" in path
            }  # existing resources, so the fuzz also reaches past the 404s
            for params in ({}, known) if known else ({},):
                strategy = operation.as_strategy(
                    generation_mode=mode, path_parameters=params or None
                )

                @given(case=strategy)
                @settings(
                    max_examples=examples,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                def fuzz(case: Any) -> None:
                    _check(case, backend.url)

                try:
                    fuzz()
                except Unsatisfiable:
                    # Nothing in this operation can be made invalid (no parameters, or
                    # all of them fixed): negative mode has nothing to try.
                    assert mode == GenerationMode.NEGATIVE, (method, path)


def _fuzz_hostile(
    backend: Backend,
    spec: dict[str, Any],
    schema: Any,
    operations: list[tuple[str, str]],
    fuzz_netns: str,
) -> None:
    with_json = [
        (method, path)
        for method, path in operations
        if "application/json"
        in spec["paths"][path][method.lower()].get("requestBody", {}).get("content", {})
    ]
    assert len(with_json) >= 4, with_json
    with inside_netns(fuzz_netns) if fuzz_netns else _nowhere():
        for method, path in with_json:
            known = {k: v for k, v in EXISTING.items() if "{" + k + "}" in path}
            strategy = schema[path][method].as_strategy(
                generation_mode=GenerationMode.POSITIVE, path_parameters=known or None
            )

            @given(
                case=strategy,
                pick=st.integers(min_value=0, max_value=1000),
                value=st.sampled_from(HOSTILE_VALUES),
            )
            @settings(
                max_examples=size(20, 300),
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: Any, pick: int, value: Any) -> None:
                _check_hostile(case, backend.url, pick, value)

            fuzz()


def test_schemathesis_reaches_the_backend_only_inside_its_namespace(
    api: tuple[Backend, dict[str, Any]], fuzz_netns: str
) -> None:
    """The isolation itself: from the root namespace the fuzzed backend is not there."""
    if not fuzz_netns:
        skip_unless_strict("network namespaces cannot be created here")
    backend, _ = api
    with pytest.raises(httpx.ConnectError):
        httpx.get(backend.url + "/healthz", timeout=5)
    routes = subprocess.run(
        ["ip", "-n", fuzz_netns, "-j", "route"], capture_output=True, text=True, check=True
    )
    assert json.loads(routes.stdout or "[]") == [], routes.stdout
    _ = Path  # the namespace has no route: nothing leaves it
