"""A block of a run's log: consecutive lines joined by newlines, as a runner sends them,
as they are stored and as followers get them. `after(seq)` is the one place a block is cut
at a seq (a follower or writer that has the lines up to it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LogBatch:
    """A block of consecutive lines of a run's log, joined by newlines as the runner sent
    them, and stored and served so: a line is split only where it is shown."""

    first_seq: int
    last_seq: int
    text: str

    @classmethod
    def of(cls, first_seq: int, text: str) -> LogBatch:
        return cls(first_seq, first_seq + text.count("\n"), text)

    def after(self, seq: int) -> LogBatch | None:
        """The part of this block after line `seq` (None when nothing is left): the one
        place where a block is cut at a seq, for a follower or a writer that has the lines
        up to `seq` already."""
        if self.last_seq <= seq:
            return None
        if self.first_seq > seq:
            return self
        return LogBatch(seq + 1, self.last_seq, self.text[self._end_of(seq) + 1 :])

    def upto(self, seq: int) -> LogBatch | None:
        """The part of this block up to line `seq` (None when nothing is left)."""
        if self.first_seq > seq:
            return None
        if self.last_seq <= seq:
            return self
        return LogBatch(self.first_seq, seq, self.text[: self._end_of(seq)])

    def _end_of(self, seq: int) -> int:
        """Where line `seq` (one of this block's but its last) ends: its newline's index."""
        cut = -1
        for _ in range(seq + 1 - self.first_seq):
            cut = self.text.index("\n", cut + 1)
        return cut
