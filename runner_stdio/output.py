"""From raw pipe reads to masked lines, and from lines to where they go.

`LineSplitter` turns whatever one read returned into complete, masked lines (a
partial last line waits for the next read). Two sinks consume the lines:
`NdjsonSink` writes them at once as stream events, batching only what one read
already brought together; `BoundedOutput` keeps the head and the tail within a
byte cap for the single JSON response.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Iterable, Iterator

TYPE_CHECKING = False  # typing itself costs ~4 ms of start-up
if TYPE_CHECKING:
    from typing import Any

STREAMS = ("stdout", "stderr")
# A line longer than this is cut into pieces so memory stays bounded.
MAX_LINE_BYTES = 64 * 1024
MASK = "***"


# Lines of a multi-line secret shorter than this are not masked on their own ("}", "").
MIN_SECRET_LINE = 4


def mask_forms(secret: str) -> set[str]:
    """The ways a secret shows up in a tool's output: as is; quoted, as terraform prints
    strings in plans and its `Executing: [...]` lines (\\" \\\\ \\n); with HCL's `$${`;
    and, for a multi-line secret printed line by line (heredocs, echo), each line."""
    quoted = json.dumps(secret, ensure_ascii=False)[1:-1]
    forms = {secret, quoted, quoted.replace("${", "$${").replace("%{", "%%{")}
    if "\n" in secret:
        forms.update(line for line in secret.split("\n") if len(line.strip()) >= MIN_SECRET_LINE)
    return {f for f in forms if f}


class LineSplitter:
    def __init__(self, secrets: list[str]) -> None:
        # Longest first, so a secret that contains another is masked whole.
        forms = {form for s in secrets if s for form in mask_forms(s)}
        self._secrets = sorted(forms, key=len, reverse=True)
        self._carry: dict[str, bytes] = {s: b"" for s in STREAMS}

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def feed(self, stream: str, data: bytes) -> list[str]:
        """Complete lines in `data` (after what was carried), masked, without newlines."""
        buf = self._carry[stream] + data if self._carry[stream] else data
        cut = buf.rfind(b"\n")
        if cut < 0:
            if len(buf) < MAX_LINE_BYTES:
                self._carry[stream] = buf
                return []
            self._carry[stream] = b""
            return [self.mask(buf.decode("utf-8", "replace"))]
        self._carry[stream] = buf[cut + 1 :]
        return self.mask(buf[:cut].decode("utf-8", "replace")).split("\n")

    def flush(self, stream: str) -> list[str]:
        """The unterminated last line of a stream, at its end."""
        rest, self._carry[stream] = self._carry[stream], b""
        return [self.mask(rest.decode("utf-8", "replace"))] if rest else []


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_response(fd: int, fields: dict[str, Any], output: Iterable[str]) -> None:
    """Write `fields` as one JSON line, byte for byte what `json.dumps(fields,
    ensure_ascii=False)` gives, with the value of "output" (which must be a key of
    `fields`) taken from `output`: pieces ending at line boundaries, encoded in
    batches. A 10 MiB output is then not held three more times over (joined text,
    JSON text, bytes) while the response is written.
    """
    before: list[str] = []
    after: list[str] = []
    for key, value in fields.items():
        if key == "output":
            before, after = after, before
            continue
        after.append(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    write_all(fd, ("{" + "".join(f + ", " for f in before) + '"output": "').encode())
    batch: list[str] = []
    size = 0
    for piece in output:
        batch.append(piece)
        size += len(piece)
        if size >= 256 * 1024:
            write_all(fd, json.dumps("".join(batch), ensure_ascii=False)[1:-1].encode())
            batch, size = [], 0
    tail = json.dumps("".join(batch), ensure_ascii=False)[1:-1]
    write_all(fd, (tail + '"' + "".join(", " + f for f in after) + "}\n").encode())


class NdjsonSink:
    """Stream events, one JSON object per line on `fd`, written as produced.

    Lines that arrived in one read share one event: `{"type": "output", "seq": N,
    "stream": ..., "lines": [...]}` where the k-th line has seq N+k; a lone line is
    `{"type": "output", "seq": N, "stream": ..., "line": "..."}`.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.seq = 0

    def event(self, obj: dict[str, Any]) -> None:
        write_all(self.fd, (json.dumps(obj, ensure_ascii=False) + "\n").encode())

    def lines(self, stream: str, lines: list[str]) -> None:
        if not lines:
            return
        first = self.seq + 1
        self.seq += len(lines)
        if len(lines) == 1:
            self.event({"type": "output", "seq": first, "stream": stream, "line": lines[0]})
        else:
            self.event({"type": "output", "seq": first, "stream": stream, "lines": lines})


class BoundedOutput:
    """Interleaved output within `cap` bytes: the head, a marker, the tail."""

    def __init__(self, cap: int) -> None:
        self.half = max(cap // 2, 1)
        self.head: list[str] = []
        self.head_bytes = 0
        self.tail: deque[str] = deque()
        self.tail_bytes = 0
        self.dropped_lines = 0
        self.dropped_bytes = 0

    def lines(self, stream: str, lines: list[str]) -> None:
        for line in lines:
            size = len(line) + 1
            if not self.tail and self.head_bytes + size <= self.half:
                self.head.append(line)
                self.head_bytes += size
                continue
            self.tail.append(line)
            self.tail_bytes += size
            while self.tail_bytes > self.half and self.tail:
                gone = self.tail.popleft()
                self.tail_bytes -= len(gone) + 1
                self.dropped_lines += 1
                self.dropped_bytes += len(gone) + 1

    @property
    def truncated(self) -> bool:
        return self.dropped_lines > 0

    def pieces(self) -> Iterator[str]:
        """The kept output line by line, each with its newline: head, marker, tail."""
        for line in self.head:
            yield line + "\n"
        if self.dropped_lines:
            yield (
                f"[... iac-runner: {self.dropped_lines} lines ({self.dropped_bytes} bytes) "
                "of output left out here ...]\n"
            )
        for line in self.tail:
            yield line + "\n"

    def text(self) -> str:
        return "".join(self.pieces())
