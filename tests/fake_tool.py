"""A stand-in for a terraform binary in tests that need precise output or timing.

Used through IAC_RUNNER_TERRAFORM_BIN. Invoked as `fake <command> [options]`:
  --lines N        print N lines "line <i> <padding>" to stdout, one write per line
  --stderr-every K every K-th line goes to stderr instead
  --width W        pad each line to about W bytes (default 20)
  --echo-env NAME  print the value of env var NAME
  --every S        sleep S seconds between lines
  --sleep S        then run a child `sleep S` and wait for it (a grandchild to kill)
  --exit N         exit status
  --write PATH     write a file PATH (relative to cwd) containing "artifact"
Terraform's own flags are tolerated: `version -json` reports $FAKE_TF_VERSION (default
1.11.4), `-out=FILE` writes FILE, `-detailed-exitcode` exits 2 ("changes present").
"""

import argparse
import json
import os
import subprocess
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("command")
p.add_argument("--lines", type=int, default=0)
p.add_argument("--stderr-every", type=int, default=0)
p.add_argument("--width", type=int, default=20)
p.add_argument("--echo-env", action="append", default=[])
p.add_argument("--every", type=float, default=0)
p.add_argument("--sleep", default="")
p.add_argument("--exit", type=int, default=0)
p.add_argument("--write", default="")
a, rest = p.parse_known_args()
version = os.environ.get("FAKE_TF_VERSION", "1.11.4")

if a.command == "version":
    if "-json" in rest:
        os.write(1, json.dumps({"terraform_version": version}).encode() + b"\n")
    else:
        os.write(1, f"Terraform v{version}\non linux_amd64\n".encode())
    sys.exit(0)
for arg in rest:
    if arg.startswith("-out="):
        with open(arg[5:], "w") as f:
            f.write("fake plan")
for name in a.echo_env:
    os.write(1, f"{name}={os.environ.get(name, '')}\n".encode())
for i in range(1, a.lines + 1):
    line = f"line {i} ".ljust(a.width, "x") + "\n"
    fd = 2 if a.stderr_every and i % a.stderr_every == 0 else 1
    os.write(fd, line.encode())
    if a.every:
        time.sleep(a.every)
if a.write:
    with open(a.write, "w") as f:
        f.write("artifact")
if a.sleep:
    subprocess.run(["sleep", a.sleep], check=False)
sys.exit(2 if "-detailed-exitcode" in rest and not a.exit else a.exit)
