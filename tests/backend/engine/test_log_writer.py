"""LogWriter.add: a runner's output blocks become the run's lines, each line once, after a
re-attach too."""

from __future__ import annotations

from typing import Any

from backend.logs.hub import LogHub
from backend.logs.writer import LogWriter
from protos.iacrunner.v1 import runner_pb2 as pb


def published(hub: LogHub, run_id: int) -> list[tuple[int, str]]:
    _, batches = hub.subscribe(run_id)
    found = [(b.first_seq + i, t) for b in batches for i, t in enumerate(b.text.split("\n"))]
    assert all(b.last_seq == b.first_seq + b.text.count("\n") for b in batches)
    return found


def blocks(*items: tuple[int, str]) -> Any:
    return pb.Output(blocks=[pb.Block(first_seq=s, stream="stdout", text=t) for s, t in items])


def test_blocks_lines_overlaps_and_step_offsets() -> None:
    hub = LogHub()
    writer = LogWriter(None, hub, 1, epoch=1, last_seq=0)  # type: ignore[arg-type]  # no db
    writer.add(0, blocks((1, "a\nb\nc"), (4, "d")))
    # Re-attached from seq 3: the lines it had are skipped, the rest taken.
    writer.add(0, blocks((3, "c\nd\ne")))
    # Entirely seen already: nothing.
    writer.add(0, blocks((2, "b")))
    writer.add(0, blocks((5, "e\nf")))
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


def test_a_block_is_cut_at_a_seq_on_its_line_boundaries() -> None:
    from backend.logs.batch import LogBatch

    block = LogBatch.of(5, "e\n\ng\nh")  # lines 5..8, line 6 empty
    assert block.last_seq == 8
    assert block.after(4) is block and block.upto(8) is block
    assert block.after(8) is None and block.upto(4) is None
    assert block.after(5) == LogBatch(6, 8, "\ng\nh")
    assert block.after(6) == LogBatch(7, 8, "g\nh")
    assert block.upto(6) == LogBatch(5, 6, "e\n")
    assert block.upto(5) == LogBatch(5, 5, "e")
    middle = block.after(5)
    assert middle is not None and middle.upto(7) == LogBatch(6, 7, "\ng")
