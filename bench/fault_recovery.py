"""How fast an operator hears of a fault during `pulumi up`, how long the rerun takes to converge,
and how long HA takes to recover a VM, failover after failover.

    .venv/bin/python bench/fault_recovery.py [--runs 2] [--only storage|vms|failovers] [--failovers 10]

For each fault, on a fresh stack of the program's own resources (pool, cephx client, RBD
storage; the dynamic-only program of tests/integration): the wall time of the `up` that fails,
then, the fault cleared, of the `up` that converges. Then the same for the whole program with one HA
VM (faults of the VM create, through the real proxmoxve plugin), and a series of failovers of one
converged VM through `python -m drill --check-preview`, poweroff and isolate in turn: the time until
the VM runs on another node, min/median/max. Figures, not pass/fail: the hardening tests
(tests/integration/test_hardening.py, test_hardening_vms.py) check the outcomes. Needs the lab
(`make lab-up`).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pulumi import automation as auto  # noqa: E402

import lab  # noqa: E402
import lab.ceph  # noqa: E402
from lab.pve.control import Control  # noqa: E402
from lab.testing.shared import settled  # noqa: E402
from lab.testing.stack import PROGRAMS, LabStack, drill_failover, forget, forget_stack, names, node_powered_off, ssh_fault  # noqa: E402
from lab.testing.vms import VmStack  # noqa: E402

FAULTS: dict[str, Callable[[str], Any]] = {
    "SSH dropped after pool create": lambda p: ssh_fault("drop-after", f"ceph osd pool create {p}-pool *"),
    "Ceph slower than commandTimeout 10 s": lambda p: ssh_fault("slow", f"ceph osd pool create {p}-pool *", seconds=12),
    "pve-node3 offline at the storage step": lambda p: node_powered_off("pve-node3"),
}


@contextlib.contextmanager
def control_fault(method: str, path: str, **rule: Any) -> Iterator[None]:
    """One failure of the lab's PVE API (its control channel) for the duration; every one cleared afterwards."""
    control = Control()
    control.fail(method, path, **rule)
    try:
        yield
    finally:
        control.clear_failures()


VM_FAULTS: dict[str, Callable[[], Any]] = {
    "PVE 500 on the VM create (3 times)": lambda: control_fault(
        "POST", "/nodes/pve-node1/qemu", status=500, message="bench: got lock request timeout", times=3
    ),
    "the VM create task ends in error": lambda: control_fault("POST", "/nodes/pve-node1/qemu", error="unable_parse_drive_interface", times=1),
    "the VM create hangs past vmCreateTimeout 20 s": lambda: control_fault("POST", "/nodes/pve-node1/qemu", hang=30, times=1),
}


def print_table(title: str, figures: dict[str, dict[str, list[float]]]) -> None:
    print(title)
    print(f"{'fault':<48}{'step':<20}{'median':>9}{'min':>9}{'max':>9}")
    for fault, steps in figures.items():
        for step, values in steps.items():
            if values:
                print(f"{fault:<48}{step:<20}{statistics.median(values):>8.1f}s{min(values):>8.1f}s{max(values):>8.1f}s")


def vm_cases(state: dict[str, Any], runs: int) -> None:
    """The program with one HA VM: a fault of the VM create, then the rerun (the VM created or adopted)."""
    figures: dict[str, dict[str, list[float]]] = {fault: {"fails after": [], "rerun converges in": []} for fault in VM_FAULTS}
    for index, (fault, inject) in enumerate(VM_FAULTS.items()):
        for run in range(runs):
            prefix, vmid = f"benchvm{index}{run}", 490 + index * 3 + run
            with tempfile.TemporaryDirectory() as tmp:
                stack = VmStack(prefix, [vmid], state, Path(tmp))
                stack.reconfigure(lambda c: c["proxmox"].update(vmCreateTimeout=20))
                try:
                    with inject():
                        start = time.monotonic()
                        with contextlib.suppress(auto.CommandError):
                            stack.up()
                            raise SystemExit(f"{fault}: `up` did not fail")
                        figures[fault]["fails after"].append(time.monotonic() - start)
                    time.sleep(12)  # a hung create lands 30 s after it was sent
                    start = time.monotonic()
                    stack.up()
                    figures[fault]["rerun converges in"].append(time.monotonic() - start)
                finally:
                    stack.retire(prefix)
                    forget_stack(prefix, [vmid])
    print_table(f"real engine and proxmoxve plugin on the lab, the program with 1 HA VM, {runs} fresh stacks per fault", figures)


def failovers(state: dict[str, Any], count: int) -> None:
    """COUNT failovers of one converged HA VM through the drill, poweroff and isolate in turn."""
    prefix, vmid = "benchfo", 499
    seconds: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        stack = VmStack(prefix, [vmid], state, Path(tmp))
        try:
            stack.up()
            for round_ in range(count):
                fault = ("poweroff", "isolate")[round_ % 2]
                settled()
                vm = drill_failover(stack, vmid, fault)["vms"][0]
                seconds.append(vm["running_s"])
                print(f"failover {round_ + 1}/{count} ({fault}): {vm['from_node']} -> {vm['node']} in {vm['running_s']:.1f} s, preview clean", flush=True)
        finally:
            settled()
            stack.retire(prefix)
            forget_stack(prefix, [vmid])
    print(f"{count} failovers (drill --check-preview): recovery min {min(seconds):.1f} s, median {statistics.median(seconds):.1f} s, max {max(seconds):.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--only", choices=("storage", "vms", "failovers"), help="one part of the bench (default: all)")
    parser.add_argument("--failovers", type=int, default=10, help="failovers in the series (default 10)")
    args = parser.parse_args()
    state = lab.load()
    if args.only in (None, "vms"):
        vm_cases(state, args.runs)
    if args.only in (None, "failovers"):
        failovers(state, args.failovers)
    if args.only in (None, "storage"):
        storage_cases(state, args.runs)


def storage_cases(state: dict[str, Any], runs: int) -> None:
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
    print_table(f"real engine on the lab, pool + cephx client + RBD storage, {runs} fresh stacks per fault", figures)


if __name__ == "__main__":
    main()
