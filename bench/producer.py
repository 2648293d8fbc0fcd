"""A stand-in for terraform that prints what a benchmark asks for, one write per line.

Run as `producer <command> [args...]` (the runner server runs it through
IAC_RUNNER_TERRAFORM_BIN; benchmarks also run it directly for their baselines). It takes
its orders from the environment, so they reach it through ExecuteRequest.env_vars or a
deployment's env variables whatever arguments terraform would be given:

  BENCH_LINES   lines printed by plan/apply (default 0); init, version and show -json print
                as terraform (show: a plan document with no change)
  BENCH_WIDTH   bytes per line including the newline (default 100)
  BENCH_EVERY   seconds between lines (default 0)
  BENCH_DELAY   seconds to wait before the first line (default 0)
  BENCH_STAMP   "1": each line starts with time.time() at its write, for latency figures
  BENCH_FAST    "1": exec `yes <line> | head -n BENCH_LINES` instead (a fast C producer)
  BENCH_CPU_FILE  a file to which plan/apply append the CPU seconds they took, one line

An argument `-out=FILE` makes it write FILE, as `terraform plan -out` does. It exits 0
(with -detailed-exitcode that means "no changes"). Imports only the standard library.
"""

from __future__ import annotations

import os
import sys
import time


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else ""
    env = os.environ
    if command == "version":  # the runner server asks `version -json` when it starts
        if "-json" in argv[2:]:
            os.write(1, b'{"terraform_version": "1.11.4", "platform": "linux_amd64"}\n')
        else:
            os.write(1, b"Terraform v1.11.4\non linux_amd64\n")
        return 0
    if command == "init":
        os.write(1, b"Initializing the backend...\nTerraform has been successfully initialized!\n")
        return 0
    if command == "show":  # `show -json tfplan`, the plan phase's last step: a plan with no change
        os.write(1, b'{"format_version": "1.2", "resource_changes": [], "output_changes": {}}\n')
        return 0
    lines = int(env.get("BENCH_LINES", "0"))
    width = int(env.get("BENCH_WIDTH", "100"))
    every = float(env.get("BENCH_EVERY", "0"))
    delay = float(env.get("BENCH_DELAY", "0"))
    stamp = env.get("BENCH_STAMP") == "1"
    for arg in argv[2:]:
        if arg.startswith("-out="):
            with open(arg[5:], "w") as f:
                f.write("plan")
    if env.get("BENCH_FAST") == "1":
        text = "y" * (width - 1)
        os.execvp("sh", ["sh", "-c", 'yes "$0" 2>/dev/null | head -n "$1"', text, str(lines)])
    if delay:
        time.sleep(delay)
    write = os.write
    pad = width - 1
    for i in range(1, lines + 1):
        head = f"{time.time():.6f} {i} " if stamp else f"line {i} "
        write(1, (head.ljust(pad, "x") + "\n").encode())
        if every:
            time.sleep(every)
    if env.get("BENCH_CPU_FILE"):
        spent = os.times()
        with open(env["BENCH_CPU_FILE"], "a") as f:
            f.write(f"{spent.user + spent.system}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
