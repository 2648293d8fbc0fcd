#!/usr/bin/env python3
"""`iac-healthcheck`: the HEALTHCHECK of the iac-runner image. Exit 0 when healthy, else 1.

    iac-healthcheck [COMMAND...]

COMMAND is the container's main command, read from /proc/1/cmdline when not given. The
role is IAC_ROLE (`backend` or `runner`), else the one COMMAND names (`iac-backend` or
`iac-runner-server`). Flags of COMMAND beat environment variables, as in the servers.

- backend: GET http://127.0.0.1:PORT/healthz must answer 200. PORT is the `--port` of
  COMMAND, else IAC_PORT, else 8000.
- runner: `iac-runner-server health` (grpc.health.v1, needs no token) against 127.0.0.1 and
  the port of `--listen`, else of IAC_RUNNER_LISTEN, else 50051. When the runner serves TLS
  (IAC_RUNNER_TLS_CERT) only a TCP connection is tried: the probe has neither the host name
  in the server's certificate nor, for mTLS, a client certificate.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from collections.abc import Mapping, Sequence

WILDCARDS = ("", "0.0.0.0", "::", "[::]", "*")


def flag(argv: Sequence[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in argv, if given."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def role_of(environ: Mapping[str, str], argv: Sequence[str]) -> str:
    role = environ.get("IAC_ROLE", "").strip().lower()
    if role:
        return role
    names = [os.path.basename(a) for a in argv]
    if "iac-runner-server" in names:
        return "runner"
    if "iac-backend" in names:
        return "backend"
    return ""


def local_host(host: str) -> str:
    """Where to reach a server that listens on `host` from inside its container."""
    host = host.strip("[]") if host not in WILDCARDS else ""
    return host or "127.0.0.1"


def backend_url(environ: Mapping[str, str], argv: Sequence[str]) -> str:
    port = flag(argv, "--port") or environ.get("IAC_PORT") or "8000"
    host = local_host(flag(argv, "--host") or environ.get("IAC_HOST") or "")
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def runner_address(environ: Mapping[str, str], argv: Sequence[str]) -> str:
    listen = flag(argv, "--listen") or environ.get("IAC_RUNNER_LISTEN") or "127.0.0.1:50051"
    host, _, port = listen.rpartition(":")
    host = local_host(host)
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"


def check_backend(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status = response.status
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    print(f"{url}: {status}")
    return 0 if status == 200 else 1


def check_runner(address: str, tls: bool) -> int:
    if tls:
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
                pass
        except OSError as exc:
            print(f"unhealthy: {address}: {exc}", file=sys.stderr)
            return 1
        print(f"{address}: accepts connections (TLS: not probed further)")
        return 0
    from runner_server.cli import main

    return main(["health", "--address", address])


def read_cmdline(path: str = "/proc/1/cmdline") -> list[str]:
    try:
        with open(path, "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def main(environ: Mapping[str, str] = os.environ, argv: Sequence[str] | None = None) -> int:
    argv = read_cmdline() if argv is None else argv
    role = role_of(environ, argv)
    if role == "backend":
        return check_backend(backend_url(environ, argv))
    if role == "runner":
        tls = bool(flag(argv, "--tls-cert") or environ.get("IAC_RUNNER_TLS_CERT"))
        return check_runner(runner_address(environ, argv), tls)
    print(
        "iac-healthcheck: unknown role: set IAC_ROLE to backend or runner "
        f"(main command: {' '.join(argv) or '?'})",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main(argv=sys.argv[1:] or None))
