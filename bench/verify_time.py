"""How long a full `python -m verify` takes on a deployed stack (every check, read-only).

    make demo && .venv/bin/python bench/verify_time.py [--stack lab] [--runs 5]

Each run is the command as an operator runs it (a new process: it reads the stack's config and
secrets and outputs through the Pulumi CLI, then asks the cluster); the figures are the wall
time of the whole command and the command's own `duration_s` (the checks alone, after the
stack was read). Prints min / median / max and the exit code of each run. A figure, not a
pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stack", default="lab")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    env = {
        "PULUMI_BACKEND_URL": f"file://{ROOT}/.state",
        "PULUMI_CONFIG_PASSPHRASE": "lab-only-passphrase",
        **os.environ,
        "PATH": f"{ROOT}/.tools/bin:{os.environ['PATH']}",
    }
    walls, checks, codes = [], [], []
    for _ in range(args.runs):
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "verify", "--stack", args.stack, "--json"], cwd=ROOT, env=env, capture_output=True, text=True)
        walls.append(time.monotonic() - t0)
        try:
            report = json.loads(done.stdout)
        except ValueError:
            print(f"verify exited {done.returncode} without a report:\n{done.stderr[-2000:]}", file=sys.stderr)
            return 1
        checks.append(report["duration_s"])
        codes.append(done.returncode)

    def figures(values: list[float]) -> str:
        return f"min {min(values):.2f} s, median {statistics.median(values):.2f} s, max {max(values):.2f} s"

    print(f"python -m verify --stack {args.stack}: {args.runs} runs, {len(report['checks'])} checks, exit codes {codes}")
    print(f"  the whole command (reads the stack through the Pulumi CLI): {figures(walls)}")
    print(f"  the checks alone (duration_s):                            {figures(checks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
