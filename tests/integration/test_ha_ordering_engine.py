"""Issue #20, HA ordering where users of other tools get hurt, through the real engine and plugin:

- an update of an HA VM that needs a restart (bpg's `reboot_after_update`: status/stop, then
  status/start, each through the HA manager for an HA-managed VM) ends with the change applied,
  the VM running and its HA state `started`, never left `stopped` (Telmate #635/#800);
- a destroy while HA is starting the VM (the LRM's start holding the VM's config lock) is done by
  one `pulumi destroy` (tools/proxmoxve/failover.go deleteAgainAfterAStart), not left for a second.
Destroying an HA VM removes its HA resource first (the Haresource depends on the VM), which every
destroy of the other modules shows (PVE refuses the VM's delete otherwise without purge; bpg sends
purge=1 as well).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lab import wait_for
from lab.pve.control import Control, ControlError
from lab.testing.stack import LabStack, api, forget_stack, names

# needs the running lab and the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = [pytest.mark.lab, pytest.mark.engine]

VM = 261
SID = f"vm:{VM}"


def edit(config: dict[str, Any]) -> None:
    names("hao")(config)
    config["vms"] = [{**config["vms"][0], "id": VM, "name": f"vm{VM}", "node": "pve-node2", "memoryMb": 256}]


@pytest.fixture(scope="module")
def hao(lab_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabStack]:
    forget_stack("hao", [VM])
    stack = LabStack("hao", lab_state, tmp_path_factory.mktemp("hao"), edit)
    stack.up()
    yield stack
    with contextlib.suppress(ControlError):  # no VM left after the destroy: nothing to reset
        Control().set_start_secs(VM, 0)
    stack.remove()
    forget_stack("hao", [VM])


def vm_state() -> tuple[str | None, str | None]:
    """(the VM's node, its status) from /cluster/resources."""
    found = next((r for r in api().cluster.resources.get(type="vm") if r["vmid"] == VM), {})
    return found.get("node"), found.get("status")


def ha_state() -> str | None:
    entry = next((e for e in api().cluster.ha.status.current.get() if e.get("sid") == SID), None)
    return str(entry.get("state")) if entry else None


def test_an_update_that_needs_a_restart_leaves_the_ha_vm_started(hao: LabStack) -> None:
    hao.reconfigure(lambda c: c["vms"][0].__setitem__("cores", 2))
    hao.up()
    node, status = vm_state()
    assert status == "running" and ha_state() == "started", (node, status, ha_state())
    assert int(api().nodes(node).qemu(VM).config.get()["cores"]) == 2
    resource = api().cluster.ha.resources(SID).get()
    assert resource["state"] == "started", resource


def test_a_destroy_while_ha_starts_the_vm_is_done_in_one_run(hao: LabStack) -> None:
    control = Control()
    api().cluster.ha.resources(SID).put(state="stopped")
    wait_for("the VM stopped by HA", lambda: vm_state()[1] == "stopped", 60)
    control.set_start_secs(VM, 150)  # PVE seconds: 15 s in the lab, longer than destroy_vm's 10 s flock wait
    api().cluster.ha.resources(SID).put(state="started")
    wait_for("HA starting the VM", lambda: any(t["type"] == "qmstart" and t["status"] == "running" for t in control.tasks(VM)), 60, interval=0.2)
    started = time.monotonic()
    hao.destroy()
    print(f"\n  destroy while HA starts the VM: {time.monotonic() - started:.1f} s")
    assert vm_state() == (None, None)
    assert all(r["sid"] != SID for r in api().cluster.ha.resources.get())
