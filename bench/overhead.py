"""Figure 2: what one run costs on top of running terraform by hand.

Real terraform, `samples` runs of each, one at a time (an idle pool),
the variants of one comparison taken in turn (so load from elsewhere hits all alike),
p50 and p99:
- `terraform version`: direct; (a) `iac-runner` (JSON on stdin, a new Python process);
  (b) Execute on a runner server (which keeps a spare iac-runner started).
- a no-op plan (`plan -out=tfplan -detailed-exitcode` of a configuration with no
  resources, initialised once): direct; (a) iac-runner; (b) Execute.
- (c) a backend "plan" run: POST /runs until the run's `ended_at` (the backend's own
  clock, so polling adds no error). A backend plan is init (with the config archive),
  plan and show -json tfplan on a runner, so it is compared with (b) doing those three
  Executes (init with the archive into a fresh work_dir, plan, show with its stdout to
  tfplan.json, collect=[tfplan, tfplan.json] and cleanup), and those with terraform
  init + plan + show run directly in a fresh directory.
Targets: (b) version p50 <= 1.3x direct; (c) p50 <= (b) init+plan+show p50 + 50 ms.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import (
    BIN,
    EMPTY_CONFIG,
    Backend,
    Context,
    Row,
    execute,
    log,
    percentile,
    register,
    runner_stub,
    sqlite_url,
    start_backend,
    start_runner,
    tar_gz,
    timed,
    wait_run,
)

VERSION_FACTOR = 1.3
BACKEND_EXTRA_MS = 50.0
PLAN_ARGS = ["-out=tfplan", "-detailed-exitcode"]


# Pause before each run: with the other variants in between, each run of a variant then
# finds the pool idle, as the target says (the runner server has had the time to start
# its spare iac-runner again, ~50 ms on an idle machine).
PAUSE = 0.05


def interleaved(
    n: int, warmup: int, variants: dict[str, Callable[[], float]]
) -> dict[str, list[float]]:
    """Milliseconds of n runs of each variant, taken in turn (one of each, then again), so
    that a burst of load from elsewhere hits every variant alike. Each call returns its
    own duration in ms. PAUSE before every call; `warmup` unmeasured rounds first."""
    for _ in range(warmup):
        for call in variants.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(n):
        for name, call in variants.items():
            time.sleep(PAUSE)
            times[name].append(call())
    return times


def ms(fn: Callable[[], object]) -> Callable[[], float]:
    """fn, returning how long it took in ms."""
    return lambda: timed(fn) * 1000


def check(proc: subprocess.CompletedProcess[bytes], ok: tuple[int, ...] = (0,)) -> None:
    if proc.returncode not in ok:
        raise RuntimeError(f"{proc.args}: exit {proc.returncode}: {proc.stderr!r}")


def succeeded(result: Any) -> None:
    if not (result.success or result.exit_code == 2):
        raise RuntimeError(f"Execute failed: {result.error_msg}")


class Direct:
    """terraform and iac-runner run as subprocesses of this process."""

    def __init__(self, ctx: Context, terraform: str) -> None:
        self.env = {**ctx.env, "TF_IN_AUTOMATION": "1", "TF_INPUT": "0"}
        self.terraform = terraform
        self.ctx = ctx
        self.count = 0

    def terraform_run(self, cwd: Path, *args: str) -> None:
        proc = subprocess.run([self.terraform, *args], cwd=cwd, env=self.env, capture_output=True)
        check(proc, (0, 2) if args[0] == "plan" else (0,))

    def iac_runner(self, cwd: Path, command: str, args: list[str]) -> None:
        request = {"tool": "terraform", "work_dir": str(cwd), "command": command, "args": args}
        proc = subprocess.run(
            [str(BIN / "iac-runner")],
            input=json.dumps(request).encode(),
            env=self.ctx.env,
            capture_output=True,
        )
        check(proc, (0, 1))
        answer = json.loads(proc.stdout)
        if not answer["success"] and answer["exit_code"] != 2:
            raise RuntimeError(f"iac-runner {command}: {answer['error_msg']}")

    def init_plan(self, config: Path) -> None:
        self.count += 1
        work = self.ctx.scratch(f"direct-pair-{self.count}")
        shutil.copy(config / "main.tf", work / "main.tf")
        self.terraform_run(work, "init")
        self.terraform_run(work, "plan", *PLAN_ARGS)
        self.terraform_run(work, "show", "-json", "tfplan")
        shutil.rmtree(work)


def backend_run_ms(backend: Backend, deployment: str) -> float:
    """POST /runs to the run's ended_at, in ms."""
    start = time.time()
    run = backend.start(deployment, "plan")
    done = wait_run(backend, run["id"], interval=0.05)
    if done["status"] != "succeeded":
        raise RuntimeError(f"backend run {run['id']}: {done['status']} {done['error_msg']}")
    return (datetime.fromisoformat(done["ended_at"]).timestamp() - start) * 1000


def rows_for(
    figure: str, name: str, project: list[float], baseline: list[float], target: float | None
) -> list[Row]:
    """A p50 row (with the target, if any, as a factor of the baseline) and a p99 row."""
    p50, b50 = percentile(project, 0.5), percentile(baseline, 0.5)
    p99, b99 = percentile(project, 0.99), percentile(baseline, 0.99)
    samples = {"project_ms": [round(x, 1) for x in project]}
    return [
        Row(
            figure,
            f"{name} p50",
            "ms",
            p50,
            b50,
            target=f"<= {target}x" if target else "-",
            ok=p50 <= target * b50 if target else None,
            details=samples,
        ),
        Row(figure, f"{name} p99", "ms", p99, b99),
    ]


def run(ctx: Context) -> list[Row]:
    n, warm = ctx.sizes.samples, ctx.sizes.warmup
    terraform = shutil.which("terraform", path=ctx.env["PATH"])
    if terraform is None:
        raise RuntimeError("terraform is not on PATH")
    direct = Direct(ctx, terraform)
    config = ctx.scratch("overhead-config")
    (config / "main.tf").write_text(EMPTY_CONFIG)
    direct.terraform_run(config, "init")
    archive = tar_gz({"main.tf": EMPTY_CONFIG})

    server = start_runner(ctx.tmp, ctx.env, "overhead", "--max-concurrent", "4")
    backend = start_backend(ctx.tmp, ctx.env, sqlite_url(ctx.tmp, "overhead"), "overhead-backend")
    try:
        # The runner's own copy of the initialised configuration, for plan-only Executes.
        shutil.copytree(config, server.workspace_root / "planned")
        with server.channel() as channel:
            stub = runner_stub(channel)

            def execute_version() -> None:
                succeeded(execute(stub, command="version", work_dir="v")[1])

            def execute_plan() -> None:
                succeeded(execute(stub, command="plan", args=PLAN_ARGS, work_dir="planned")[1])

            pairs = iter(range(10**9))

            def execute_init_plan() -> None:
                work_dir = f"pair-{next(pairs)}"
                succeeded(execute(stub, command="init", work_dir=work_dir, workspace=archive)[1])
                succeeded(execute(stub, command="plan", args=PLAN_ARGS, work_dir=work_dir)[1])
                _, result = execute(
                    stub,
                    command="show",
                    args=["-json", "tfplan"],
                    work_dir=work_dir,
                    stdout_file="tfplan.json",
                    collect=["tfplan", "tfplan.json"],
                    cleanup=True,
                )
                succeeded(result)
                if len(result.artifacts) != 2:
                    raise RuntimeError("the plan file and its JSON were not collected")

            register(backend, [server])
            backend.deploy("noop", {"main.tf": EMPTY_CONFIG})

            log(f"overhead: terraform version x{n}: direct, iac-runner, Execute")
            version = interleaved(
                n,
                warm,
                {
                    "direct": ms(lambda: direct.terraform_run(config, "version")),
                    "stdio": ms(lambda: direct.iac_runner(config, "version", [])),
                    "execute": ms(execute_version),
                },
            )
            log(f"overhead: no-op plan x{n}: direct, iac-runner, Execute")
            plan = interleaved(
                n,
                warm,
                {
                    "direct": ms(lambda: direct.terraform_run(config, "plan", *PLAN_ARGS)),
                    "stdio": ms(lambda: direct.iac_runner(config, "plan", PLAN_ARGS)),
                    "execute": ms(execute_plan),
                },
            )
            log(f"overhead: init+plan+show x{n}: direct, 3 Executes, backend plan run")
            pair = interleaved(
                n,
                warm,
                {
                    "direct": ms(lambda: direct.init_plan(config)),
                    "execute": ms(execute_init_plan),
                    "backend": lambda: backend_run_ms(backend, "noop"),
                },
            )
    finally:
        backend.stop()
        server.stop()

    pair_direct, pair_execute, pair_backend = pair["direct"], pair["execute"], pair["backend"]
    rows = [
        *rows_for("2a", "version, iac-runner", version["stdio"], version["direct"], None),
        *rows_for("2b", "version, Execute", version["execute"], version["direct"], VERSION_FACTOR),
        *rows_for("2a", "no-op plan, iac-runner", plan["stdio"], plan["direct"], None),
        *rows_for("2b", "no-op plan, Execute", plan["execute"], plan["direct"], None),
        *rows_for("2b", "init+plan+show, 3 Executes", pair_execute, pair_direct, None),
    ]
    b50, c50 = percentile(pair_execute, 0.5), percentile(pair_backend, 0.5)
    b99, c99 = percentile(pair_execute, 0.99), percentile(pair_backend, 0.99)
    rows += [
        Row(
            "2c",
            "backend plan run p50",
            "ms",
            c50,
            b50,
            compare=f"{c50 - b50:+.0f} ms",
            target=f"<= +{BACKEND_EXTRA_MS:.0f} ms",
            ok=c50 - b50 <= BACKEND_EXTRA_MS,
            details={
                "baseline": "init+plan+show as 3 Executes (2b)",
                "vs_direct_init_plan_p50_ms": round(c50 - percentile(pair_direct, 0.5), 1),
                "project_ms": [round(x, 1) for x in pair_backend],
            },
        ),
        Row("2c", "backend plan run p99", "ms", c99, b99, compare=f"{c99 - b99:+.0f} ms"),
    ]
    return rows
