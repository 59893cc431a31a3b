"""Wall time of the real engine on the lab: cold up, no-op preview, no-op up, destroy.

    .venv/bin/python bench/engine_stack.py [--runs 3]

Runs the program's own resources (pool, cephx client, RBD storage: the dynamic-only program of
tests/integration) because the command and proxmoxve plugins cannot be built in this workplace
(tools/versions.env), so the 1/10/30-VM series of issue 5 cannot run here yet. Each run is a
fresh stack; prints the median and the spread of each step. Needs the lab (`make lab-up`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import lab  # noqa: E402
from tests.integration.lab_stack import PROGRAMS, LabStack, forget  # noqa: E402


def timed(step: Any) -> float:
    start = time.monotonic()
    step()
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    state = lab.load()
    figures: dict[str, list[float]] = {"cold up": [], "no-op preview": [], "no-op up": [], "destroy": []}
    for run in range(runs):
        prefix = f"bench{run}"

        def edit(config: dict[str, Any], prefix: str = prefix) -> None:
            config["ceph"]["pool"]["name"] = f"{prefix}-pool"
            config["ceph"]["client"]["name"] = prefix
            config["storage"]["id"] = f"{prefix}-rbd"
            config["allowPoolDeletion"] = True

        forget(prefix)
        with tempfile.TemporaryDirectory() as tmp:
            stack = LabStack(prefix, state, Path(tmp), edit, program=PROGRAMS / "dynamic_only" / "__main__.py")
            try:
                figures["cold up"].append(timed(stack.up))
                figures["no-op preview"].append(timed(stack.preview))
                figures["no-op up"].append(timed(stack.up))
                figures["destroy"].append(timed(stack.destroy))
            finally:
                stack.remove()
    print(f"real engine on the lab, pool + cephx client + RBD storage, {runs} fresh stacks")
    print(f"{'step':<15}{'median':>9}{'min':>9}{'max':>9}")
    for step, values in figures.items():
        print(f"{step:<15}{statistics.median(values):>8.1f}s{min(values):>8.1f}s{max(values):>8.1f}s")


if __name__ == "__main__":
    main()
