"""A runner's load as the pool sees it: the runs of others the last poll reported (told
apart from this backend's by runner-side run id) plus this backend's runs on it now."""

from __future__ import annotations

from backend.pool import Occupancy, RunnerPool, RunnerView, choose
from backend.steps import RUNNER_FEATURES

TOOLS = [{"name": "terraform", "version": "1.9.0"}]


def view(reported: tuple[str, ...], local: dict[int, str], mine: set[str]) -> RunnerView:
    return RunnerView(
        name="r",
        status="healthy",
        labels={},
        max_concurrent=4,
        reported=len(reported),
        reported_runs=frozenset(reported),
        tools=TOOLS,
        ours=Occupancy(local, mine),
        features=RUNNER_FEATURES,
    )


def test_runs_placed_since_the_poll_count_until_released() -> None:
    local: dict[int, str] = {}
    mine: set[str] = set()
    assert view(("other",), local, mine).active == 1
    local[7] = ""  # reserved, Execute not sent yet
    local[8] = "x-r8-plan-1-init"  # sent, not in the last report
    mine.add("x-r8-plan-1-init")
    assert view(("other",), local, mine).active == 3
    # The next report names run 8's step: counted once, not twice.
    assert view(("other", "x-r8-plan-1-init"), local, mine).active == 3


def test_an_older_report_never_frees_a_slot_this_backend_holds() -> None:
    local = {1: "x-r1-plan-1-plan", 2: "x-r2-plan-1-init", 3: "", 4: ""}
    mine = {"x-r1-plan-1-plan", "x-r2-plan-1-init"}
    # The runner answered before any of them arrived: it says 0 of 4.
    v = view((), local, mine)
    assert v.active == 4 and v.free == 0
    views, reason, _ = choose([v], {}, "terraform", "plan")
    assert views == [] and "busy" in reason


def test_an_older_report_never_keeps_a_released_slot_taken() -> None:
    # The report was taken during run 1's init; run 1 has moved on to its plan step, and
    # run 2 was released since: one run of this backend's is on the runner, not three.
    local = {1: "x-r1-plan-1-plan"}
    mine = {"x-r1-plan-1-init", "x-r1-plan-1-plan", "x-r2-plan-1-plan"}
    v = view(("x-r1-plan-1-init", "x-r2-plan-1-plan"), local, mine)
    assert v.active == 1
    del local[1]
    assert v.active == 0 and v.free == 4


def test_a_runner_that_said_full_gets_nothing_until_its_load_changes() -> None:
    """Another backend filled the runner since the last poll: this backend's view says 2
    free, the runner refuses. The lease backs off: no more runs there until a report
    differs, or this backend frees a slot there."""
    pool = RunnerPool(None, None)  # type: ignore[arg-type]  # leases need no database
    before = view(("a", "b"), {}, set())
    before.ours = pool._occupancy("r")
    pool.views["r"] = before
    assert before.free == 2
    lease = pool.lease("r", 7)
    assert before.free == 1
    lease.full()
    assert before.free == 0, "backed off"
    assert choose([before], {}, "terraform", "plan")[0] == []
    # The next poll says the same: still nothing.
    same = view(("a", "b"), {}, set())
    same.ours = pool._occupancy("r")
    assert same.free == 0
    # A poll that differs (one of the others ended): room again.
    changed = view(("a",), {}, set())
    changed.ours = pool._occupancy("r")
    assert changed.free == 3
    # Or this backend releases a run of its own there.
    other = pool.lease("r", 8)
    other.full()
    assert same.free == 0
    pool.lease("r", 9).release()
    assert same.free == 2
