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


# -- the forms a secret takes in terraform's and tofu's output ---------------------------------
# Each escaper is one way the Go code of terraform and tofu writes a string between quotes.
# A form is the secret through at most two of them: a JSON string shown inside a quoted
# string (an output holding a `jsonencode`) is escaped twice.
def _translation(named: dict[str, str], c0: str) -> dict[int, str]:
    """A str.translate table: C0 control characters as `c0` (formatted with the code),
    then the `named` escapes."""
    table = {code: c0.format(code) for code in range(0x20)}
    table.update({ord(char): escape for char, escape in named.items()})
    return table


# What every one of them escapes: backslash, double quote, newline, carriage return, tab.
_BASIC = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# hclwrite's quoted string literal: other controls as \u00XX.
_HCL = _translation(_BASIC, "\\u{:04x}")
# strconv.Quote (Go's %q, terraform's plan values and `Executing: [...]` lines).
_GO = _translation(
    {**_BASIC, "\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v", "\x7f": "\\x7f"}, "\\x{:02x}"
)
# encoding/json without HTML escaping (Go >= 1.22 writes \b and \f short); U+2028 and
# U+2029 are escaped all the same.
_JSON = _translation(
    {**_BASIC, "\b": "\\b", "\f": "\\f", "\u2028": "\\u2028", "\u2029": "\\u2029"}, "\\u{:04x}"
)
# encoding/json's default, HTML-safe (json.Marshal, terraform's jsonencode).
_JSON_HTML = {**_JSON, ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


def _go_non_printable(text: str) -> str:
    """Runes Go's unicode.IsPrint refuses (the classes str.isprintable refuses: other and
    separators but the space) as \\uXXXX, or \\UXXXXXXXX beyond the BMP."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"
        for c in text
    )


def _hcl(text: str) -> str:
    """hclwrite: \\" \\\\ \\n \\r \\t, `${` as `$${`, `%{` as `%%{`, non-printables."""
    quoted = _go_non_printable(text.translate(_HCL))
    return quoted.replace("${", "$${").replace("%{", "%%{")


def _go_quote(text: str) -> str:
    return _go_non_printable(text.translate(_GO))


def _json_html(text: str) -> str:
    return text.translate(_JSON_HTML)


def _json(text: str) -> str:
    return text.translate(_JSON)


def _json_ascii(text: str) -> str:
    """Every non-ASCII character as \\uXXXX (surrogate pairs beyond the BMP)."""
    return json.dumps(text)[1:-1]


ESCAPERS = (_hcl, _go_quote, _json_html, _json, _json_ascii)


def anchor_of(text: str) -> str:
    """The longest run of ASCII letters and digits in `text` ("" when there is none).

    No escaper changes these characters, so the anchor of a secret is in every one of its
    escaped forms: a text without it holds none of them."""
    best_start = best_len = 0
    start = -1
    for i, char in enumerate(text):
        if char.isascii() and char.isalnum():
            if start < 0:
                start = i
            if i + 1 - start > best_len:
                best_start, best_len = start, i + 1 - start
        else:
            start = -1
    return text[best_start : best_start + best_len]


def anchored_forms(secret: str) -> dict[str, str]:
    """Every way a secret can show up in a tool's output, each with its anchor: as is;
    through one escaper or two (ESCAPERS: how terraform and tofu quote a string: HCL, Go's
    %q, JSON with and without HTML escapes, JSON in ASCII); and, for a multi-line secret
    printed line by line (heredocs in plans, echo), each of its lines."""
    once = {secret, *(escape(secret) for escape in ESCAPERS)}
    anchor = anchor_of(secret)
    forms = dict.fromkeys(once | {escape(form) for form in once for escape in ESCAPERS}, anchor)
    if "\n" in secret:
        for line in secret.split("\n"):
            if len(line.strip()) >= MIN_SECRET_LINE:
                forms[line] = anchor_of(line)
    forms.pop("", None)
    return forms


def mask_forms(secret: str) -> set[str]:
    return set(anchored_forms(secret))


# terraform word-wraps a diagnostic's text (at 78 columns): a form with spaces may show
# with a line break, and the next line's indentation or box (`│ `, maybe coloured), in
# place of one of them.
_LINE_PREFIX = r"(?:\x1b\[[0-9;]*m|\u2502|[ ])*"
_WRAP = rf"(?:[ ]*\n{_LINE_PREFIX}|[ ]+)"


def _masked_wrapped(match: Any) -> str:
    """`***` for each line a wrapped form spans, each line keeping its prefix (box, colour)."""
    import re

    lines = match.group(0).split("\n")
    kept = [line[: len(line) - len(re.sub(f"^{_LINE_PREFIX}", "", line))] for line in lines[1:]]
    return "\n".join([MASK, *(prefix + MASK for prefix in kept)])


class LineSplitter:
    """Complete lines from pipe reads, every form of every secret replaced by `***`."""

    def __init__(self, secrets: list[str]) -> None:
        anchored: dict[str, str] = {}
        for secret in secrets:
            if secret:
                anchored.update(anchored_forms(secret))
        # Longest first, so a secret that contains another is masked whole.
        self._forms = sorted(anchored.items(), key=lambda item: len(item[0]), reverse=True)
        self._anchors = tuple(set(anchored.values()))
        # Forms of more than one word, which terraform may wrap: compiled when first needed.
        self._wrappable = [(f, a) for f, a in self._forms if " " in f.strip() and "\n" not in f]
        self._wrapped: list[tuple[Any, str]] | None = None
        self.first_error = ""  # the tool's first error diagnostic on stderr, masked
        self._carry: dict[str, bytes] = {s: b"" for s in STREAMS}

    def mask(self, text: str) -> str:
        if not self._anchors:
            return text
        # One search per anchor (a few per secret) rules out most texts; only for an anchor
        # that is there are its forms looked for.
        present = {anchor for anchor in self._anchors if anchor in text}
        if not present:
            return text
        for form, anchor in self._forms:
            if anchor in present and form in text:
                text = text.replace(form, MASK)
        if self._wrappable and "\n" in text:
            for pattern, anchor in self._wrapped_patterns():
                if anchor in present:
                    text = pattern.sub(_masked_wrapped, text)
        return text

    def _wrapped_patterns(self) -> list[tuple[Any, str]]:
        if self._wrapped is None:
            import re

            self._wrapped = [
                (re.compile(_WRAP.join(map(re.escape, form.split()))), anchor)
                for form, anchor in self._wrappable
            ]
        return self._wrapped

    def _error(self, text: str) -> None:
        """Remember the first error diagnostic terraform or tofu wrote (on stderr)."""
        if ERROR_PREFIX in text:
            self.first_error = error_line(text)

    def feed(self, stream: str, data: bytes) -> list[str]:
        """Complete lines in `data` (after what was carried), masked, without newlines."""
        buf = self._carry[stream] + data if self._carry[stream] else data
        cut = buf.rfind(b"\n")
        if cut < 0:
            if len(buf) < MAX_LINE_BYTES:
                self._carry[stream] = buf
                return []
            self._carry[stream] = b""
            cut = len(buf)
        else:
            self._carry[stream] = buf[cut + 1 :]
        text = self.mask(buf[:cut].decode("utf-8", "replace"))
        if stream == "stderr" and not self.first_error:
            self._error(text)
        return text.split("\n")

    def flush(self, stream: str) -> list[str]:
        """The unterminated last line of a stream, at its end."""
        rest, self._carry[stream] = self._carry[stream], b""
        if not rest:
            return []
        text = self.mask(rest.decode("utf-8", "replace"))
        if stream == "stderr" and not self.first_error:
            self._error(text)
        return [text]


# -- the tool's own words when it fails ----------------------------------------------------
ERROR_PREFIX = "Error: "
MAX_ERROR_LINE = 1000


def error_line(text: str) -> str:
    """The first line of `text` that is an error diagnostic of terraform or tofu:
    `Error: ...`, maybe inside their box (`│ Error: ...`), colour codes removed ("" if none)."""
    import re  # only for a text that holds "Error: " (argparse has imported it anyway)

    for line in text.split("\n"):
        if ERROR_PREFIX not in line:
            continue
        plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line).strip()
        if plain.startswith("\u2502"):  # the box drawn around a diagnostic
            plain = plain[1:].lstrip()
        if plain.startswith(ERROR_PREFIX):
            return plain[:MAX_ERROR_LINE]
    return ""


class StdoutError(Exception):
    """Writing to iac-runner's stdout failed (closed, full, nobody reading): there is no
    one to answer. Not an OSError, so that it is not taken for the tool's failure to start."""


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        raise StdoutError(f"could not write to stdout: {exc}") from None


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

    The lines of one stream that arrived in one read are one block: `{"type": "output",
    "first_seq": N, "stream": ..., "text": "..."}`, its lines joined by newlines (the k-th
    has seq N+k). The runner server keeps and sends blocks as they come: a line is split
    once, here.
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
        text = "\n".join(lines)
        self.event({"type": "output", "first_seq": first, "stream": stream, "text": text})


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
