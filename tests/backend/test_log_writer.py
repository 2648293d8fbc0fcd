"""LogWriter.add: a runner's output batches become the run's lines, whichever form the
runner sends (text blocks, or one Line per line from a runner before packed output), each
line once, after a re-attach too."""

from __future__ import annotations

from typing import Any

from backend.engine import LogWriter
from backend.logs import LogHub
from protos.iacrunner.v1 import runner_pb2 as pb


def published(hub: LogHub, run_id: int) -> list[tuple[int, str]]:
    _, batches = hub.subscribe(run_id)
    return [(b.first_seq + i, text) for b in batches for i, text in enumerate(b.lines)]


def blocks(*items: tuple[int, str]) -> Any:
    return pb.Output(blocks=[pb.Block(first_seq=s, stream="stdout", text=t) for s, t in items])


def test_blocks_lines_overlaps_and_step_offsets() -> None:
    hub = LogHub()
    writer = LogWriter(None, hub, 1, last_seq=0)  # type: ignore[arg-type]  # add() needs no db
    writer.add(0, blocks((1, "a\nb\nc"), (4, "d")))
    # Re-attached from seq 3: the lines it had are skipped, the rest taken.
    writer.add(0, blocks((3, "c\nd\ne")))
    # Entirely seen already: nothing.
    writer.add(0, blocks((2, "b")))
    # A runner from before packed output sends Line messages.
    writer.add(
        0,
        pb.Output(lines=[pb.Line(seq=s, stream="stderr", text=t) for s, t in ((5, "e"), (6, "f"))]),
    )
    # The next step's seq 1 is the run's seq 7 (offset 6); an empty line survives.
    writer.add(6, blocks((1, "g\n"), (3, "h")))
    assert published(hub, 1) == [
        (1, "a"),
        (2, "b"),
        (3, "c"),
        (4, "d"),
        (5, "e"),
        (6, "f"),
        (7, "g"),
        (8, ""),
        (9, "h"),
    ]
    assert writer.last_seq == 9
