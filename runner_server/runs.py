"""A live run: the `iac-runner --stream` process, its output retained for followers.

One pump task per run reads whatever one read of the child's stdout returns (up to
64 KiB of NDJSON events) and appends its output events, blocks of lines as iac-runner
made them (never split or joined here), to the run's buffer as one `Batch`. Followers (the
Execute caller, Attach callers) read the buffer from their own position, as blocks
(`packed_output`) or as one `Line` message per line, built as they are sent. The buffer
is bounded: past `retention_bytes` the oldest batch is dropped once every follower has
sent it; while a follower still needs it, the pump
waits, which stops reading the pipe, which makes the tool wait (backpressure).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from protos.iacrunner.v1 import runner_pb2 as pb

READ_SIZE = 64 * 1024


def add_note(result: pb.Result, note: str) -> None:
    """Append `note` to the result's error message."""
    result.error_msg = f"{result.error_msg}; {note}" if result.error_msg else note


class ProtocolError(Exception):
    """iac-runner wrote something that is not one of its NDJSON events."""


class RetentionError(Exception):
    """The lines asked for are no longer retained."""


@dataclass
class Batch:
    first_seq: int
    last_seq: int
    packed: pb.Output  # its lines as blocks: sent as it is to most followers
    size: int

    def output(self, from_seq: int, packed: bool) -> pb.Output:
        """The batch's lines from `from_seq` on, as blocks or as one Line per line."""
        if packed and from_seq <= self.first_seq:
            return self.packed
        message = pb.Output()
        for block in self.packed.blocks:
            lines = block.text.split("\n")
            seq = block.first_seq
            if seq + len(lines) <= from_seq:
                continue
            if seq < from_seq:
                lines = lines[from_seq - seq :]
                seq = from_seq
            if packed:
                message.blocks.add(first_seq=seq, stream=block.stream, text="\n".join(lines))
            else:
                add, stream = message.lines.add, block.stream
                for text in lines:
                    add(seq=seq, stream=stream, text=text)
                    seq += 1
        return message


@dataclass
class Follower:
    next_seq: int


@dataclass
class Run:
    run_id: str
    tool: str
    command: str
    work_dir: str
    retention_bytes: int
    started_at: str = ""
    tool_version: str = ""
    proc: asyncio.subprocess.Process | None = None
    tool_pid: int = 0
    result: pb.Result | None = None
    ended_monotonic: float = 0.0
    started_monotonic: float = field(default_factory=time.monotonic)
    last_seq: int = 0
    batches: deque[Batch] = field(default_factory=deque)
    buffered: int = 0
    followers: list[Follower] = field(default_factory=list)
    cancel_requested: str = ""  # "" | "graceful" | "force"
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def finished(self) -> bool:
        return self.result is not None

    @property
    def first_retained_seq(self) -> int:
        return self.batches[0].first_seq if self.batches else self.last_seq + 1

    # -- producing -------------------------------------------------------------
    async def _append(self, batch: Batch) -> None:
        async with self._changed:
            self.batches.append(batch)
            self.buffered += batch.size
            self.last_seq = batch.last_seq
            self._changed.notify_all()
            while self.buffered > self.retention_bytes and len(self.batches) > 1:
                oldest = self.batches[0]
                if any(f.next_seq <= oldest.last_seq for f in self.followers):
                    # A follower still needs it: stop reading the pipe until it catches up.
                    await self._changed.wait()
                    continue
                self.batches.popleft()
                self.buffered -= oldest.size

    async def finish(self, result: pb.Result) -> None:
        async with self._changed:
            result.last_seq = self.last_seq
            self.result = result
            self.ended_monotonic = time.monotonic()
            self._changed.notify_all()

    async def pump(self, stdout: asyncio.StreamReader) -> dict[str, Any] | None:
        """Relay the child's events until EOF. Returns its result event, if it sent one."""
        carry = b""
        result: dict[str, Any] | None = None
        while True:
            chunk = await stdout.read(READ_SIZE)
            if not chunk:
                break
            data = carry + chunk if carry else chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            carry = data[cut + 1 :]
            message = pb.Output()
            add_block = message.blocks.add
            seq = self.last_seq
            for raw in data[:cut].split(b"\n"):
                try:
                    event = json.loads(raw)
                    kind = event["type"]
                    if kind == "output":
                        first, text = event["first_seq"], event["text"]
                        add_block(first_seq=first, stream=event["stream"], text=text)
                        seq = first + text.count("\n")
                        continue
                except (ValueError, TypeError, KeyError):
                    raise ProtocolError(
                        f"iac-runner sent an event that is not parseable: {raw[:200]!r}"
                    ) from None
                if kind == "started":
                    self.tool_pid = event["pid"]
                    self.started_at = event["started_at"]
                    if self.cancel_requested:
                        self._signal(self.cancel_requested)
                elif kind == "result":
                    result = event
            if message.blocks:
                await self._append(Batch(message.blocks[0].first_seq, seq, message, cut))
        return result

    # -- consuming -------------------------------------------------------------
    async def follow(self, from_seq: int, *, packed: bool = False) -> AsyncIterator[pb.Output]:
        """Output batches from `from_seq` on, live, until the run has finished: text blocks
        when `packed`, else one Line per line."""
        follower = Follower(max(from_seq, 1))
        async with self._changed:
            if follower.next_seq < self.first_retained_seq:
                raise RetentionError(
                    f"lines before seq {self.first_retained_seq} of run {self.run_id} "
                    "are no longer retained"
                )
            self.followers.append(follower)
        try:
            while True:
                async with self._changed:
                    await self._changed.wait_for(
                        lambda: self.last_seq >= follower.next_seq or self.finished
                    )
                    pending = [b for b in self.batches if b.last_seq >= follower.next_seq]
                    finished = self.finished
                for batch in pending:
                    yield batch.output(follower.next_seq, packed)
                    follower.next_seq = batch.last_seq + 1
                    if self.buffered > self.retention_bytes:
                        async with self._changed:  # the pump may be waiting for us
                            self._changed.notify_all()
                if finished and follower.next_seq > self.last_seq:
                    return
        finally:
            async with self._changed:
                self.followers.remove(follower)
                self._changed.notify_all()

    async def wait(self) -> pb.Result:
        async with self._changed:
            await self._changed.wait_for(lambda: self.finished)
        assert self.result is not None
        return self.result

    # -- stopping --------------------------------------------------------------
    def cancel(self, *, force: bool) -> None:
        """Ask iac-runner to stop the tool: SIGINT starts the graceful escalation,
        SIGUSR1 kills the tool's process group at once. Until iac-runner has started
        the tool (and installed its handlers) the request is held, then delivered."""
        if self.cancel_requested != "force":
            self.cancel_requested = "force" if force else "graceful"
        if self.tool_pid:
            self._signal(self.cancel_requested)

    def _signal(self, how: str) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGUSR1 if how == "force" else signal.SIGINT)
