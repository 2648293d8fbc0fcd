"""A run's live log as Server-Sent Events, resumed after a dropped connection.

The backend sends ``id: <last seq>`` + ``data: {"seq": <first seq>, "text": "..."}`` per
block of lines (joined by newlines, as stored), ``event: status`` when the run's status
changes, and ``event: end`` once the run has ended and every line was sent. ``LogStream``
reconnects with ``Last-Event-ID: <last seq received>`` whenever the connection drops, and
trims anything at or below that seq, so the caller sees every line exactly once and in
order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass

import httpx

from iac_cli.client import Api, ServerError, Unreachable, describe_transport_error

# The backend sends a ``: keep-alive`` comment after 15 s of quiet (a queued run, a run
# awaiting approval), so this much silence means a connection that died without a FIN:
# reconnect, which costs nothing with Last-Event-ID.
READ_TIMEOUT = 30.0
GIVE_UP_AFTER = 60.0


@dataclass(frozen=True)
class Lines:
    """A block of consecutive lines of the log, joined by newlines."""

    first_seq: int
    text: str

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.text.count("\n")

    def after(self, seq: int) -> Lines | None:
        """The part of this block after line `seq` (None when nothing is left)."""
        if self.last_seq <= seq:
            return None
        if self.first_seq > seq:
            return self
        cut = -1
        for _ in range(seq + 1 - self.first_seq):
            cut = self.text.index("\n", cut + 1)
        return Lines(seq + 1, self.text[cut + 1 :])


@dataclass(frozen=True)
class Status:
    status: str


@dataclass(frozen=True)
class End:
    pass


Event = Lines | Status | End


class StreamDropped(Exception):
    """The connection ended before the ``end`` event."""


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, str | None, str]]:
    """(event, id, data) for each event of a ``text/event-stream``."""
    event: str = "message"
    event_id: str | None = None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield event, event_id, "\n".join(data)
            event, event_id, data = "message", None, []
            continue
        if line.startswith(":"):
            continue  # a comment (keep-alive)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "id":
            event_id = value
        elif name == "data":
            data.append(value)


def decode(event: str, data: str) -> Event | None:
    payload = json.loads(data)
    if event == "status":
        return Status(str(payload["status"]))
    if event == "end":
        return End()
    if event == "message":
        return Lines(int(payload["seq"]), str(payload["text"]))
    return None  # an event type this client does not know yet


def open_events(api: Api, run_id: int, after_seq: int) -> Generator[Event, None, None]:
    """One connection: the events after ``after_seq``; ``StreamDropped`` (or an
    ``httpx.TransportError``) when it ends without ``end``. API refusals raise ``CliError``."""
    headers = {"Accept": "text/event-stream"}
    if after_seq > 0:
        headers["Last-Event-ID"] = str(after_seq)
    timeout = httpx.Timeout(api.http.timeout.connect or 10.0, read=READ_TIMEOUT)
    with api.stream(
        f"/runs/{run_id}/logs", params={"follow": "true"}, headers=headers, timeout=timeout
    ) as response:
        for event, _id, data in parse_sse(response.iter_lines()):
            decoded = decode(event, data)
            if decoded is not None:
                yield decoded
                if isinstance(decoded, End):
                    return
    raise StreamDropped("the log stream closed before the run ended")


class LogStream:
    """Follows one run's log to its end, reconnecting as often as needed.

    ``last_seq`` is the seq of the last line handed out; ``on_retry(reason)`` is called
    before each reconnect. After ``give_up_after`` seconds without a successful connection
    it raises ``Unreachable``.
    """

    def __init__(
        self,
        api: Api,
        run_id: int,
        after_seq: int = 0,
        *,
        give_up_after: float = GIVE_UP_AFTER,
        on_retry: Callable[[str], None] | None = None,
        opener: Callable[[Api, int, int], Iterator[Event]] = open_events,
    ) -> None:
        self.api = api
        self.run_id = run_id
        self.last_seq = after_seq
        self.status: str | None = None
        self.give_up_after = give_up_after
        self.on_retry = on_retry
        self.opener = opener
        self.reconnects = 0

    def __iter__(self) -> Iterator[Event]:
        return self.events()

    def events(self) -> Generator[Event, None, None]:
        """The events, reconnecting as needed, until ``End``."""
        failing_since: float | None = None
        delay = 0.1
        while True:
            events = self.opener(self.api, self.run_id, self.last_seq)
            try:
                for event in events:
                    failing_since, delay = None, 0.1
                    if isinstance(event, Lines):
                        fresh = event.after(self.last_seq)  # a resumed stream may overlap
                        if fresh is None:
                            continue
                        self.last_seq = fresh.last_seq
                        yield fresh
                    elif isinstance(event, Status):
                        # Each new connection starts with the current status: say it once.
                        if event.status != self.status:
                            self.status = event.status
                            yield event
                    else:
                        yield event
                        return
                raise StreamDropped("the log stream closed before the run ended")
            except (StreamDropped, httpx.TransportError, ServerError) as exc:
                if isinstance(exc, httpx.TransportError):
                    reason = describe_transport_error(self.api.config.url, exc)
                else:
                    reason = str(exc)
                if isinstance(exc, httpx.ReadTimeout):
                    # A dead connection (or a backend without keep-alives): reconnect at once.
                    failing_since, delay = None, 0.1
                    self.reconnects += 1
                    continue
                now = time.monotonic()
                if failing_since is None:
                    failing_since = now
                elif now - failing_since > self.give_up_after:
                    raise Unreachable(
                        f"{reason}; gave up reconnecting after {self.give_up_after:.0f} s "
                        f"(resume with: iac logs {self.run_id} --follow)"
                    ) from None
                if self.on_retry is not None:
                    self.on_retry(reason)
                self.reconnects += 1
                time.sleep(delay)  # back off: the backend may be restarting
                delay = min(delay * 2, 2.0)
            finally:
                close = getattr(events, "close", None)
                if close is not None:
                    close()
