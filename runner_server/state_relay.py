"""Terraform's state traffic, relayed from a loopback HTTP endpoint to the backend holding the run.

A run that names a `state_channel` gets terraform's http backend pointed at this runner's
loopback endpoint (`http://127.0.0.1:PORT/state/<run id>`, user = run id, password = a
random token made for that run alone). Each request terraform makes there becomes a
`StateCall` sent down the `ServeState` stream of the channel that owns the run: the one
named by the run's latest Execute or Attach. So a backend that adopts a run (it attaches
with its own channel) takes the run's state traffic over, including a request that was
waiting when the previous backend died: a request waits, held, until an owner is
connected (up to `hold` seconds, then 503), and one that was in flight on a stream that
broke is sent again on the next owner's stream (the backend's state operations are
idempotent for the run that makes them).

Backends open the streams, so a runner needs no route to any backend. The HTTP server is
the standard library's, on its own threads: terraform makes a few requests per command.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import secrets
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from protos.iacrunner.v1 import runner_pb2 as pb

log = logging.getLogger("iac_runner_server")

METHODS = frozenset({"GET", "POST", "DELETE", "LOCK", "UNLOCK"})
PATH_PREFIX = "/state/"
# Terraform retries a 5xx: a request that found no backend within `hold` gets one.
RETRY_AFTER = "5"
# A backend's answer for a run it no longer executes.
MISDIRECTED = 421


class NoChannel(Exception):
    """No backend took the call within the hold time."""


class ChannelLost(Exception):
    """The stream a call was sent on ended before its answer came."""


@dataclass
class Channel:
    """One backend's ServeState stream: calls to send, and the calls awaiting an answer."""

    name: str
    outbox: asyncio.Queue[pb.StateCall | None] = field(default_factory=asyncio.Queue)
    waiting: dict[int, asyncio.Future[pb.StateResponse]] = field(default_factory=dict)

    def close(self) -> None:
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(ChannelLost(self.name))
        self.waiting.clear()
        self.outbox.put_nowait(None)


@dataclass
class Binding:
    """A run whose terraform talks to the state endpoint: its password and its owner."""

    token_hash: bytes
    channel: str
    open: bool = True


class StateRelay:
    """Routes each run's state calls to the channel that owns the run."""

    def __init__(self, hold: float, max_body: int) -> None:
        self.hold = hold
        self.max_body = max_body
        self.channels: dict[str, Channel] = {}
        self.bindings: dict[str, Binding] = {}
        self._changed = asyncio.Condition()
        self._ids = itertools.count(1)
        self._http: ThreadingHTTPServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the loopback endpoint ----------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._http = _Server(("127.0.0.1", 0), _handler_for(self))
        threading.Thread(
            target=self._http.serve_forever, name="state-endpoint", daemon=True
        ).start()

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    @property
    def address(self) -> str:
        assert self._http is not None, "StateRelay.start() first"
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def env_for(self, run_id: str, channel: str) -> dict[str, str]:
        """Bind `run_id` to `channel` and give its terraform what it needs to reach the
        state: the http backend's settings, with a password good for this run only."""
        token = secrets.token_urlsafe(32)
        self.bindings[run_id] = Binding(hashlib.sha256(token.encode()).digest(), channel)
        url = f"{self.address}{PATH_PREFIX}{run_id}"
        return {
            "TF_HTTP_ADDRESS": url,
            "TF_HTTP_LOCK_ADDRESS": url,
            "TF_HTTP_UNLOCK_ADDRESS": url,
            "TF_HTTP_USERNAME": run_id,
            "TF_HTTP_PASSWORD": token,
            # The relay holds a request until a backend answers it; terraform's own retries
            # only cover a 503 after that.
            "TF_HTTP_RETRY_MAX": "4",
            "TF_HTTP_RETRY_WAIT_MAX": "10",
        }

    async def rebind(self, run_id: str, channel: str) -> None:
        """The run's state traffic goes to `channel` from now on (an adopting backend)."""
        binding = self.bindings.get(run_id)
        if binding is None or not channel:
            return
        async with self._changed:
            binding.channel = channel
            self._changed.notify_all()

    def close_run(self, run_id: str) -> None:
        """The run has ended: its password stops working."""
        binding = self.bindings.pop(run_id, None)
        if binding is not None:
            binding.open = False

    def authorized(self, run_id: str, password: str) -> bool:
        binding = self.bindings.get(run_id)
        if binding is None or not binding.open:
            return False
        return hmac.compare_digest(binding.token_hash, hashlib.sha256(password.encode()).digest())

    # -- calls ------------------------------------------------------------------------------
    async def call(self, call: pb.StateCall, channel: str | None = None) -> pb.StateResponse:
        """Send `call` to the owner of its run (or to `channel`) and wait for the answer;
        NoChannel when no owner was connected for `hold` seconds."""
        call.call_id = next(self._ids)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.hold
        refused_by: Channel | None = None
        while True:
            async with self._changed:
                target = self._target(call.run_id, channel)
                while target is None or target is refused_by:
                    left = deadline - loop.time()
                    if left <= 0:
                        raise NoChannel(f"no backend took the state request within {self.hold:g} s")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), left)
                    target = self._target(call.run_id, channel)
                future: asyncio.Future[pb.StateResponse] = loop.create_future()
                target.waiting[call.call_id] = future
                target.outbox.put_nowait(call)
            try:
                reply = await future
            except ChannelLost:
                continue  # sent again to whoever owns the run next
            if reply.status != MISDIRECTED:
                return reply
            # That backend no longer executes the run (another adopted it and is about to
            # attach): hold the call for the next owner.
            refused_by = target

    def _target(self, run_id: str, channel: str | None) -> Channel | None:
        if channel is None:
            binding = self.bindings.get(run_id)
            channel = binding.channel if binding is not None else None
        return self.channels.get(channel) if channel else None

    def call_from_thread(self, call: pb.StateCall) -> pb.StateResponse:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(self.call(call), self._loop).result()

    # -- the ServeState stream --------------------------------------------------------
    async def serve(self, replies: AsyncIterator[pb.StateReply]) -> AsyncIterator[pb.StateCall]:
        """One backend's stream: the hello names it; calls go out, answers come back."""
        first = await anext(replies, None)
        if (
            not isinstance(first, pb.StateReply)  # None, or bytes that parse as nothing
            or not first.HasField("hello")
            or not first.hello.channel
        ):
            raise ValueError("the first ServeState message must be a hello naming the channel")
        channel = Channel(first.hello.channel)
        async with self._changed:
            previous = self.channels.get(channel.name)
            if previous is not None:
                previous.close()
            self.channels[channel.name] = channel
            self._changed.notify_all()
        reader = asyncio.create_task(self._read(channel, replies))
        try:
            while True:
                outgoing = await channel.outbox.get()
                if outgoing is None:
                    return
                yield outgoing
        finally:
            reader.cancel()
            async with self._changed:
                if self.channels.get(channel.name) is channel:
                    del self.channels[channel.name]
            channel.close()

    async def _read(self, channel: Channel, replies: AsyncIterator[pb.StateReply]) -> None:
        try:
            async for reply in replies:
                if isinstance(reply, pb.StateReply) and reply.HasField("response"):
                    future = channel.waiting.pop(reply.response.call_id, None)
                    if future is not None and not future.done():
                        future.set_result(reply.response)
        finally:
            channel.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            return  # terraform went away (killed, or done with a kept-alive connection)
        log.warning(json.dumps({"event": "state_endpoint_error", "error": repr(error)}))


def _handler_for(relay: StateRelay) -> type[BaseHTTPRequestHandler]:
    class StateHandler(BaseHTTPRequestHandler):
        """Terraform's http backend requests, each relayed to the run's backend."""

        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            url = urlsplit(self.path)
            run_id = url.path[len(PATH_PREFIX) :] if url.path.startswith(PATH_PREFIX) else ""
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > relay.max_body:
                self.close_connection = True
                self._answer(413, b'{"detail": "missing or too large Content-Length"}')
                return
            body = self.rfile.read(length) if length else b""
            if not run_id or not relay.authorized(run_id, self._password(run_id)):
                self._answer(401, b'{"detail": "unknown run or wrong state password"}')
                return
            if self.command not in METHODS:
                self._answer(405, b'{"detail": "method not allowed"}')
                return
            call = pb.StateCall(
                run_id=run_id,
                method=self.command,
                lock_id=(parse_qs(url.query).get("ID") or [""])[0],
                body=body,
                content_md5=self.headers.get("Content-MD5") or "",
            )
            try:
                reply = relay.call_from_thread(call)
            except NoChannel as exc:
                detail = json.dumps({"detail": str(exc)}).encode()
                self._answer(503, detail, {"Retry-After": RETRY_AFTER})
                return
            self._answer(reply.status, reply.body, content_type=reply.content_type)

        def _password(self, run_id: str) -> str:
            header = self.headers.get("Authorization") or ""
            scheme, _, encoded = header.partition(" ")
            if scheme.lower() != "basic":
                return ""
            try:
                user, _, password = base64.b64decode(encoded).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return ""
            return password if user == run_id else ""

        def _answer(
            self,
            status: int,
            body: bytes,
            headers: dict[str, str] | None = None,
            content_type: str = "application/json",
        ) -> None:
            self.send_response(status)
            if status in (204, 304):
                body = b""  # no body, and no Content-Length, for these
            else:
                self.send_header("Content-Type", content_type or "application/json")
                self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_DELETE = do_LOCK = do_UNLOCK = do_PUT = do_HEAD = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass  # one JSON line per run is the runner's log; requests carry no news

    return StateHandler
