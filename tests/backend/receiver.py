"""A real HTTP receiver for notification tests: `http.server` in a thread on a 127.0.0.1
port, keeping every request it gets and answering each with the next status of its script
(then 200)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    status: int  # what the receiver answered

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def delivery(self) -> int:
        return int(self.headers["x-iac-delivery"])


def documented_code(path: Path, heading: str) -> str:
    """The first Python block under `heading` in `path`."""
    text = path.read_text()
    section = text[text.index(heading) :]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def _documented_verifier() -> Callable[..., bool]:
    """The `verified` function the README gives receivers, run as it is written there."""
    namespace: dict[str, Any] = {}
    code = documented_code(ROOT / "README.md", "## Notifications")
    exec(compile(code, "README.md (Notifications)", "exec"), namespace)
    return cast(Callable[..., bool], namespace["verified"])


VERIFIED = _documented_verifier()


def signature_ok(secret: str, received: Received) -> bool:
    """The check the README (and docs/notifications.md) tell receivers to make."""
    headers = {
        "X-Iac-Timestamp": received.headers["x-iac-timestamp"],
        "X-Iac-Signature": received.headers.get("x-iac-signature", ""),
    }
    return bool(VERIFIED(secret, headers, received.body))


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # several backends send at once (http.server's default: 5)


class Receiver:
    def __init__(self, statuses: Iterable[int] = (), *, port: int = 0) -> None:
        self._script = list(statuses)
        self._lock = threading.Lock()
        self._received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    status = receiver._script.pop(0) if receiver._script else 200
                    receiver._received.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            status,
                        )
                    )
                answer = b"ok" if status < 300 else b"receiver says no"
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", f"http://127.0.0.1:{receiver.port}/x")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_port
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def answer(self, *statuses: int) -> None:
        """Answer the next requests with these statuses."""
        with self._lock:
            self._script.extend(statuses)

    def wait(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 20
    ) -> list[Received]:
        """Poll until `predicate(received)` holds; fail at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            received = self.received
            if predicate(received):
                return received
            if time.monotonic() > deadline:
                summary = [(r.headers.get("x-iac-event"), r.status) for r in received]
                raise AssertionError(f"receiver: condition not met in {timeout} s: {summary}")
            time.sleep(0.02)

    async def until(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 20
    ) -> list[Received]:
        """As `wait`, for a test whose event loop runs the backend meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            received = self.received
            if predicate(received):
                return received
            if time.monotonic() > deadline:
                summary = [(r.headers.get("x-iac-event"), r.status) for r in received]
                raise AssertionError(f"receiver: condition not met in {timeout} s: {summary}")
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
