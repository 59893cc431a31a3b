"""How fast an operator hears of a fault during `pulumi up`, and how long the rerun takes to converge.

    .venv/bin/python bench/fault_recovery.py [--runs 2]

For each fault, on a fresh stack of the program's own resources (pool, cephx client, RBD
storage; the dynamic-only program of tests/integration): the wall time of the `up` that fails,
then, the fault cleared, of the `up` that converges. Figures, not pass/fail: the hardening tests
(tests/integration/test_hardening.py) check the outcomes. Needs the lab (`make lab-up`).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pulumi import automation as auto  # noqa: E402

import lab  # noqa: E402
import lab.ceph  # noqa: E402
from tests.integration.lab_stack import PROGRAMS, LabStack, forget, names, node_powered_off, ssh_fault  # noqa: E402

FAULTS: dict[str, Callable[[str], Any]] = {
    "SSH dropped after pool create": lambda p: ssh_fault("drop-after", f"ceph osd pool create {p}-pool *"),
    "Ceph slower than commandTimeout 10 s": lambda p: ssh_fault("slow", f"ceph osd pool create {p}-pool *", seconds=12),
    "pve-node3 offline at the storage step": lambda p: node_powered_off("pve-node3"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    runs = parser.parse_args().runs
    state = lab.load()
    figures: dict[str, dict[str, list[float]]] = {fault: {"fails after": [], "rerun converges in": []} for fault in FAULTS}
    for fault, inject in FAULTS.items():
        for run in range(runs):
            prefix = f"benchrec{list(FAULTS).index(fault)}{run}"
            forget(prefix)

            def edit(config: dict[str, Any], prefix: str = prefix) -> None:
                names(prefix)(config)
                config["ssh"]["commandTimeout"] = 10

            with tempfile.TemporaryDirectory() as tmp:
                stack = LabStack(prefix, state, Path(tmp), edit, program=PROGRAMS / "dynamic_only" / "__main__.py")
                try:
                    with inject(prefix):
                        start = time.monotonic()
                        with contextlib.suppress(auto.CommandError):
                            stack.up()
                            raise SystemExit(f"{fault}: `up` did not fail")
                        figures[fault]["fails after"].append(time.monotonic() - start)
                    lab.wait_for("the pool", lambda p=prefix: f"{p}-pool" in lab.ceph.ceph("osd", "pool", "ls").split(), deadline=30)
                    start = time.monotonic()
                    stack.up()
                    figures[fault]["rerun converges in"].append(time.monotonic() - start)
                finally:
                    stack.remove()
                    forget(prefix)
    print(f"real engine on the lab, pool + cephx client + RBD storage, {runs} fresh stacks per fault")
    print(f"{'fault':<40}{'step':<20}{'median':>9}{'min':>9}{'max':>9}")
    for fault, steps in figures.items():
        for step, values in steps.items():
            print(f"{fault:<40}{step:<20}{statistics.median(values):>8.1f}s{min(values):>8.1f}s{max(values):>8.1f}s")


if __name__ == "__main__":
    main()
