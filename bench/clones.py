"""Ten clones of an existing template in one `pulumi up`, against ten VMs from an ISO (issue #25).

    .venv/bin/python bench/clones.py [--vms 10] [--runs 2]

One stack of the real program on the lab: first its pool, client and storage with no VM; then a
golden template the operator made by hand (the lab's root token: VM 690 from the lab's qcow2
cloud image, `import-from` onto the stack's storage, then `template`). Per run, timed: an `up` that
adds N HA VMs as linked clones of it with cloud-init (DHCP, a key), the `up` that removes them,
an `up` that adds N HA VMs from the ISO, the `up` that removes them. Prints the median and the
spread of each, and the PVE API calls of the first run's two creating ups. Figures, not pass/fail.
Needs the lab (`make lab-up`).
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
import lab.pve  # noqa: E402
from lab.pve import imports  # noqa: E402
from lab.testing.stack import LabStack, api, forget, remove_vms  # noqa: E402

PREFIX, TEMPLATE, FIRST_VM = "benchcl", 690, 691
NODES = ("pve-node1", "pve-node2", "pve-node3")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPqP8a6dM2oSfqkKQ9x0kbbR8q1kXk7zX1nVt0yq3pQe ops@example"


def base(config: dict[str, Any]) -> None:
    config["ceph"]["pool"]["name"] = f"{PREFIX}-pool"
    config["ceph"]["client"]["name"] = PREFIX
    config["storage"]["id"] = f"{PREFIX}-rbd"
    config["allowPoolDeletion"] = True
    config["ha"] = {**config["ha"], "affinities": []}
    config["vms"] = []


def vms(kind: str, count: int) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        vm: dict[str, Any] = {"id": FIRST_VM + i, "name": f"{kind}{FIRST_VM + i}", "node": "pve-node1", "cores": 1, "memoryMb": 512, "diskGb": 1}
        if kind == "clone":
            vm |= {"clone": {"template": TEMPLATE}, "cloudInit": {"user": "ops", "sshKeys": [KEY]}}
        else:
            vm |= {"iso": "local:iso/debian-12.iso"}
        out.append(vm)
    return out


def wait_task(upid: str) -> None:
    node = upid.split(":")[1]
    while (status := api().nodes(node).tasks(upid).status.get())["status"] != "stopped":
        time.sleep(0.2)
    if status.get("exitstatus") != "OK":
        raise RuntimeError(f"{upid}: {status.get('exitstatus')}")


def golden_template() -> None:
    """What an operator does once: a VM from the cloud image, made a template (the root token)."""
    node = api().nodes("pve-node1")
    disk = f"{PREFIX}-rbd:0,import-from=local:import/{imports.QCOW2},discard=on,cache=writeback"
    wait_task(node.qemu.post(vmid=TEMPLATE, name="golden", scsihw="virtio-scsi-pci", scsi0=disk, net0="virtio,bridge=vmbr0"))
    wait_task(node.qemu(TEMPLATE).template.post())


def with_vms(kind: str, count: int) -> Any:
    def edit(config: dict[str, Any]) -> None:
        config["vms"] = vms(kind, count) if count else []

    return edit


def timed_up(stack: LabStack) -> tuple[float, int]:
    since, t0 = time.time(), time.monotonic()
    result = stack.up()
    assert result.summary.result == "succeeded", stack.text()[-2000:]
    return time.monotonic() - t0, len(lab.pve.calls(since=since))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=10)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    ids = [FIRST_VM + i for i in range(args.vms)]
    remove_vms([*ids, TEMPLATE])
    forget(PREFIX)
    figures: dict[str, list[float]] = {f"{args.vms} linked clones up": [], "their removal": [], f"{args.vms} ISO VMs up": [], "the ISO VMs' removal": []}
    calls: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        stack = LabStack(PREFIX, lab.load(), Path(tmp), base)
        try:
            timed_up(stack)  # the pool, the client, the storage
            golden_template()
            for run in range(args.runs):
                for kind, up_key, down_key in (
                    ("clone", f"{args.vms} linked clones up", "their removal"),
                    ("iso", f"{args.vms} ISO VMs up", "the ISO VMs' removal"),
                ):
                    stack.reconfigure(with_vms(kind, args.vms))
                    took, served = timed_up(stack)
                    figures[up_key].append(took)
                    if run == 0:
                        calls[up_key] = served
                    stack.reconfigure(with_vms(kind, 0))
                    figures[down_key].append(timed_up(stack)[0])
            remove_vms([TEMPLATE])  # the operator's template, then the stack (its pool must be empty)
            stack.destroy()
        finally:
            stack.remove()
            remove_vms([*ids, TEMPLATE])
            forget(PREFIX)
    print(f"real engine on the lab, the whole program, {args.vms} HA VMs on pve-node1, {args.runs} runs")
    print(f"{'step':<28}{'median':>9}{'min':>9}{'max':>9}")
    for step, values in figures.items():
        print(f"{step:<28}{statistics.median(values):>8.1f}s{min(values):>8.1f}s{max(values):>8.1f}s")
    print("PVE API calls of the first run: " + ", ".join(f"{step}: {n}" for step, n in calls.items()))


if __name__ == "__main__":
    main()
