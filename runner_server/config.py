"""The runner server's settings: every flag has an IAC_RUNNER_* environment variable."""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
from dataclasses import dataclass, field

from runner_server.workspace import Limits
from runner_stdio.tools import OPERATIONS


@dataclass
class ServerConfig:
    listen: str = "127.0.0.1:50051"
    workspace_root: str = "/tmp/iac-deployments"
    max_concurrent: int = 4
    labels: dict[str, str] = field(default_factory=dict)
    runner_id: str = ""
    token: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    insecure: bool = False
    metrics_listen: str = ""
    grace: float = 20.0
    default_timeout: float = 3600.0
    drain_timeout: float = 300.0
    retention_seconds: float = 600.0
    retention_bytes: int = 4 * 1024 * 1024
    runner_bin: str = ""
    accept: list[str] = field(default_factory=list)
    tools: list[tuple[str, str, str]] = field(default_factory=list)  # (name, version, path)
    limits: Limits = field(default_factory=Limits)

    @property
    def host(self) -> str:
        host, _, _ = self.listen.rpartition(":")
        return host.strip("[]")

    def is_loopback(self) -> bool:
        if self.host in ("localhost", ""):
            return self.host == "localhost"
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def check(self) -> None:
        """Raise ValueError with a one-line reason when the settings cannot work."""
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"--listen {self.listen!r} must be HOST:PORT, e.g. 127.0.0.1:50051")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("--tls-cert and --tls-key must be given together")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("--tls-client-ca (mTLS) needs --tls-cert and --tls-key")
        for path in (self.tls_cert, self.tls_key, self.tls_client_ca):
            if path and not os.path.isfile(path):
                raise ValueError(f"TLS file {path!r} does not exist")
        mtls = bool(self.tls_client_ca)
        if not self.is_loopback() and not (self.token or mtls) and not self.insecure:
            raise ValueError(
                f"refusing to listen on non-loopback address {self.host!r} without auth: "
                "set --token (IAC_RUNNER_TOKEN) or --tls-client-ca for mTLS, "
                "or pass --insecure if the network is trusted"
            )
        bad = [a for a in self.accept if a not in OPERATIONS]
        if bad:
            raise ValueError(
                f"--accept {bad[0]!r} is not an operation; use: {', '.join(OPERATIONS)}"
            )
        if self.max_concurrent < 1:
            raise ValueError("--max-concurrent must be at least 1")
        if not self.runner_binary():
            raise ValueError(
                "iac-runner executable not found: install the project or set --runner-bin"
            )

    def runner_binary(self) -> str:
        """The `iac-runner` executable: --runner-bin, else beside this Python, else PATH."""
        if self.runner_bin:
            return self.runner_bin if os.access(self.runner_bin, os.X_OK) else ""
        beside = os.path.join(os.path.dirname(sys.executable), "iac-runner")
        if os.access(beside, os.X_OK):
            return beside
        return shutil.which("iac-runner") or ""
