"""`packed_output`: output as text blocks (consecutive lines of one stream joined by
newlines) instead of one Line message per line; the same lines, seqs and streams."""

from __future__ import annotations

from typing import Any

from protos.iacrunner.v1 import runner_pb2 as pb
from tests.procs import RunnerProcess, execute, lines_of, result_of


def unpacked(events: list[pb.ExecuteEvent]) -> list[tuple[int, str, str]]:
    """(seq, stream, text) of every line of packed output; checks that every batch holds
    blocks only, every block at least one line, and no seq is skipped or repeated."""
    out: list[tuple[int, str, str]] = []
    for event in events:
        if not event.HasField("output"):
            continue
        assert not event.output.lines and event.output.blocks
        for block in event.output.blocks:
            assert block.stream in ("stdout", "stderr")
            if out:
                assert block.first_seq == out[-1][0] + 1
            texts = block.text.split("\n")
            out += [(block.first_seq + i, block.stream, t) for i, t in enumerate(texts)]
    return out


def plan_packed(runner: RunnerProcess, run_id: str, *args: str, **env: str) -> list[Any]:
    """Execute the fake tool's plan with packed_output; its events."""
    return execute(
        runner.stub(),
        run_id=run_id,
        tool="terraform",
        command="plan",
        args=list(args),
        env_vars=env,
        packed_output=True,
    )


def test_packed_output_holds_the_same_lines_as_line_messages(
    fake_runner: RunnerProcess,
) -> None:
    stub = fake_runner.stub()
    packed = plan_packed(
        fake_runner, "packed", "--lines", "500", "--stderr-every", "7", "--width", "30"
    )
    got = unpacked(packed)
    assert [seq for seq, _, _ in got] == list(range(1, 501))
    for stream, numbers in (
        ("stdout", [i for i in range(1, 501) if i % 7]),
        ("stderr", list(range(7, 501, 7))),
    ):
        texts = [t for _, s, t in got if s == stream]
        assert texts == [f"line {i} ".ljust(30, "x") for i in numbers]
    # The same run as Line messages (Attach without packed_output): the same lines.
    lines = lines_of(list(stub.Attach(pb.AttachRequest(run_id="packed"))))
    assert [(x.seq, x.stream, x.text) for x in lines] == got
    assert result_of(packed).last_seq == 500


def test_packed_attach_from_the_middle_of_a_block(fake_runner: RunnerProcess) -> None:
    stub = fake_runner.stub()
    whole = unpacked(plan_packed(fake_runner, "whole", "--lines", "200"))
    for start in (1, 2, 57, 199, 200):
        again = list(
            stub.Attach(pb.AttachRequest(run_id="whole", from_seq=start, packed_output=True))
        )
        assert unpacked(again) == whole[start - 1 :]
        # Without packed_output, Attach answers with Line messages of the same lines.
        lines = lines_of(list(stub.Attach(pb.AttachRequest(run_id="whole", from_seq=start))))
        assert [(x.seq, x.stream, x.text) for x in lines] == whole[start - 1 :]


def test_empty_lines_survive_packing(fake_runner: RunnerProcess) -> None:
    """A block of empty lines is text of newlines only: split gives them back."""
    events = plan_packed(
        fake_runner, "empty", "--echo-env", "EMPTY", "--echo-env", "EMPTY", EMPTY=""
    )
    assert [t for _, _, t in unpacked(events)] == ["EMPTY=", "EMPTY="]
