"""`python -m bench` (`make bench`): run the benchmarks, print one line per figure, write JSON.

Every figure is measured against its baseline in the same invocation, with real
processes (iac-runner, iac-runner-server, iac-backend, terraform, PostgreSQL for the
2-backend dispatch figure) on 127.0.0.1. Progress goes to stderr, the table to stdout.
Exit status: 0 when every benchmark was measured (a MISS is a result, not a failure),
1 when one could not be measured (ERROR), 2 on bad options.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType

from bench import (
    concurrency,
    dispatch,
    first_line,
    latency,
    memory,
    overhead,
    pool_size,
    queue_depth,
    relay,
    scale_out,
    scaling,
)
from bench.common import ROOT, SCALES, Context, Row, Sizes, clean_env, log, table_lines

# name -> (figure, module); run in this order (scaling reuses dispatch's point).
BENCHMARKS: dict[str, tuple[str, ModuleType]] = {
    "relay": ("1", relay),
    "overhead": ("2", overhead),
    "latency": ("3", latency),
    "memory": ("4", memory),
    "concurrency": ("5", concurrency),
    "dispatch": ("6", dispatch),
    "scaling": ("7", scaling),
    "first_line": ("8", first_line),
    "queue_depth": ("9", queue_depth),
    "pool_size": ("10", pool_size),
    "scale_out": ("11", scale_out),
}
LARGE_ONLY = {"scale_out"}  # run when named in --only, or with --large
DEFAULT_JSON = ROOT / "bench" / "results.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Performance figures of iac-runner, each against its baseline.",
        epilog="benchmarks: " + ", ".join(f"{n} (figure {f})" for n, (f, _) in BENCHMARKS.items()),
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only these benchmarks (repeatable or comma-separated)",
    )
    p.add_argument(
        "--scale",
        choices=sorted(SCALES),
        default="default",
        help="size preset: small (a smoke run, about a minute) or default",
    )
    p.add_argument("--lines", type=int, help="lines of the big stream (figures 1, 4, 5)")
    p.add_argument("--runs", type=int, help="queued runs of figure 6")
    p.add_argument("--samples", type=int, help="repetitions per command of figure 2")
    p.add_argument("--latency-lines", type=int, help="lines 100 ms apart of figure 3")
    p.add_argument("--repeat", type=int, default=3, help="throughput repetitions, median kept [3]")
    p.add_argument(
        "--large",
        action="store_true",
        help="figure 7 on the whole grid (1, 2, 4 runners x 100, 500, 2000 runs) and "
        "figure 11 (scale-out: 3 backends, 2000 runs, failover): much longer than the "
        "default run",
    )
    p.add_argument(
        "--no-postgres", action="store_true", help="skip the PostgreSQL part of figure 6"
    )
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"results file [{DEFAULT_JSON}]")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (logs)")
    args = p.parse_args(argv)
    args.only = [n for item in args.only for n in item.split(",") if n]
    unknown = [n for n in args.only if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    return args


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = dataclasses.replace(SCALES[args.scale])
    for option, attribute in (
        ("lines", "lines"),
        ("runs", "runs"),
        ("samples", "samples"),
        ("latency_lines", "latency_lines"),
        ("repeat", "repeat"),
    ):
        value = getattr(args, option)
        if value is not None:
            if value < 1:
                raise SystemExit(f"--{option.replace('_', '-')} must be at least 1")
            setattr(sizes, attribute, value)
    if args.lines is not None:
        sizes.memory_small = max(args.lines // 4, 1)
    return sizes


def attempt(name: str, figure: str, ctx: Context, module: ModuleType) -> list[Row]:
    """Run a benchmark; once more, in a fresh scratch directory, if it fails (this machine
    is shared: a test elsewhere may kill processes by name), then an ERROR row."""
    for tries in (1, 2):
        try:
            scratch = ctx.tmp / f"{name}-{tries}"
            scratch.mkdir()
            rows: list[Row] = module.run(dataclasses.replace(ctx, tmp=scratch))
            return rows
        except Exception as exc:
            log(f"{name}: failed ({exc!r})")
            if tries == 2:
                traceback.print_exc(file=sys.stderr)
                return [Row(figure, name, "-", float("nan"), ok=False, error=repr(exc))]
            log(f"{name}: trying once more")
    raise AssertionError("unreachable")


def cpu_busy(seconds: float = 1.0) -> float:
    """Cores kept busy by whatever runs, over `seconds` (from /proc/stat; 0.0 elsewhere).
    The load average would do, but it lags: it stays high for minutes after a heavy job."""

    def busy_total() -> tuple[float, float]:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return 0.0, 0.0
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    busy0, total0 = busy_total()
    time.sleep(seconds)
    busy1, total1 = busy_total()
    if total1 <= total0:
        return 0.0
    return (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)


def terraform_version(env: dict[str, str]) -> str:
    try:
        out = subprocess.run(
            ["terraform", "version"], env=env, capture_output=True, text=True, timeout=30
        ).stdout
        return out.splitlines()[0] if out else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.only or [n for n in BENCHMARKS if args.large or n not in LARGE_ONLY]
    tmp = Path(tempfile.mkdtemp(prefix="iac-bench-"))
    env = clean_env(tmp)
    ctx = Context(
        tmp,
        env,
        sizes_from(args),
        postgres=not args.no_postgres,
        large=args.large,
    )
    started = time.time()
    load_start = os.getloadavg()
    busy_start = cpu_busy()
    header = (
        f"iac-runner bench  {time.strftime('%Y-%m-%d %H:%M')}  machine: {os.cpu_count()} cores"
        f"  scale: {args.scale}  lines: {ctx.sizes.lines:,}  runs: {ctx.sizes.runs}"
    )
    log(header)
    cores = os.cpu_count() or 1
    if busy_start > 0.25 * cores:
        log(
            f"warning: other work keeps {busy_start:.1f} of {cores} cores busy: it competes "
            "with the benchmarks, figures will be low and noisy"
        )
    rows: list[Row] = []
    durations: dict[str, float] = {}
    try:
        for name in names:
            figure, module = BENCHMARKS[name]
            t0 = time.time()
            rows += attempt(name, figure, ctx, module)
            durations[name] = round(time.time() - t0, 1)
            log(f"{name}: {durations[name]:.0f} s")
    finally:
        if args.keep:
            log(f"scratch directory kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.time() - started
    load_end = os.getloadavg()

    print(header)
    print("\n".join(table_lines(rows)))
    scaling_table = ctx.shared.get("scaling_table", [])
    if scaling_table:
        print()
        print("\n".join(scaling_table))
    print(f"\n{elapsed:.0f} s; {busy_start:.2f} of {cores} cores busy with other work at the start")

    results = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "elapsed_s": round(elapsed, 1),
        "durations_s": durations,
        "commit": git_commit(),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "terraform": terraform_version(env),
            "cores_busy_start": round(busy_start, 2),
            "loadavg_start": load_start,
            "loadavg_end": load_end,
        },
        "options": {
            "scale": args.scale,
            "only": names,
            "large": ctx.large,
            "postgres": ctx.postgres,
            "sizes": dataclasses.asdict(ctx.sizes),
        },
        "figures": [r.as_json() for r in rows],
        "scaling": {
            "table": scaling_table,
            "points": ctx.shared.get("scaling_points", []),
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.json}")
    return 1 if any(r.error for r in rows) else 0
