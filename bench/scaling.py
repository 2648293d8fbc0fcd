"""Figure 7: figure 6 (SQLite, one backend) at several pool sizes and run counts.

Every point is measured like figure 6: the backend's runs/s against the direct client's
on the same runner servers. A point figure 6 measured in this invocation is reused.
Default points: 1, 2 and 4 runners at 100 runs, and 4 runners at 500 (figure 6).
`--large` measures the whole grid: 1, 2, 4 runners x 100, 500, 2000 runs, which takes
well over the 10 minutes of the default run on 2 cores (each 500 runs take ~2-3 min).
"""

from __future__ import annotations

from bench.common import Context, Row
from bench.dispatch import RUNNERS, Point, measure


def grid(ctx: Context) -> list[tuple[int, int]]:
    """(runners, runs) points, in the order they are measured."""
    sizes = ctx.sizes
    if ctx.large:
        return [(r, n) for n in sizes.scaling_runs for r in sizes.scaling_runners]
    small = min(sizes.scaling_runs)
    points = [(r, small) for r in sizes.scaling_runners]
    if (RUNNERS, sizes.runs) not in points:
        points.append((RUNNERS, sizes.runs))
    return points


def table(points: list[Point]) -> list[str]:
    """runners x runs: backend runs/s / direct runs/s (ratio)."""
    runs = sorted({p.runs for p in points})
    runners = sorted({p.runners for p in points})
    cell = {(p.runners, p.runs): p for p in points}
    head = ["runners \\ runs", *(f"{n} runs" for n in runs)]
    body = []
    for r in runners:
        row = [str(r)]
        for n in runs:
            p = cell.get((r, n))
            row.append(f"{p.backend:.1f} / {p.direct:.1f} = {p.ratio:.2f}x" if p else "-")
        body.append(row)
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in body]
    title = "  ".join(c.rjust(w) for c, w in zip(head, widths, strict=True))
    return [
        "figure 7: backend runs/s / direct client runs/s = ratio (SQLite, 1 backend)",
        title,
        *lines,
    ]


def run(ctx: Context) -> list[Row]:
    points: list[Point] = []
    for runners, runs in grid(ctx):
        reused = ctx.shared.get(f"dispatch:{runners}x{runs}")
        if isinstance(reused, Point):
            points.append(reused)
        else:
            points.append(measure(ctx, runners, runs, f"scaling-{runners}x{runs}"))
    ctx.shared["scaling_table"] = table(points)
    ctx.shared["scaling_points"] = [
        {
            "runners": p.runners,
            "runs": p.runs,
            "backend_runs_per_s": p.backend,
            "direct_runs_per_s": p.direct,
            "ratio": p.ratio,
            "failed": len(p.failures),
        }
        for p in points
    ]
    worst = min(points, key=lambda p: p.ratio)
    return [
        Row(
            "7",
            f"scaling, lowest of {len(points)} points ({worst.runners}r x {worst.runs})",
            "runs/s",
            worst.backend,
            worst.direct,
            details={"points": ctx.shared["scaling_points"]},
        )
    ]
