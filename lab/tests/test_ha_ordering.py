"""The lab answers the calls bpg makes around an HA VM's update and destroy as PVE does (no Ceph
needed: the VMs' disks are on local-lvm):

- a destroy repeats its checks once it holds the config flock (API2/Qemu.pm destroy_vm,
  "repeat, config might have changed"): a start holding the flock makes it a task error, `VM
  <vmid> is running - destroy failed`, or the flock's `got timeout`;
- the LRM's start applies the pending changes (QemuServer.pm vm_start_nolock), as bpg's
  status/stop + status/start of an HA VM after a config change needs;
- status/reboot has no HA branch: the `qmreboot` task stops the VM, `qm cleanup` starts it again
  through HA (`Requesting HA start`), the requested state stays `started` (API2/Qemu.pm
  vm_reboot, QemuServer.pm vm_reboot, CLI/qm.pm cleanup).
"""

from __future__ import annotations

import time

import pytest
from pve_client import Api, poll, service

# needs the running lab (tools/run-tests.sh selects by these marks)
pytestmark = pytest.mark.lab

NODE = "pve-node1"


def status(api: Api, vmid: int) -> str:
    return api.ok("GET", f"/nodes/{NODE}/qemu/{vmid}/status/current")["status"]


def running_task(ctl, vmid: int, kind: str) -> dict | None:
    return next((t for t in ctl.tasks(vmid) if t["type"] == kind and t["status"] == "running"), None)


def ha_started(api: Api, vmid: int) -> None:
    api.ok("POST", "/cluster/ha/resources", sid=f"vm:{vmid}", state="started")
    poll(f"vm:{vmid} started", lambda: (s := service(api, f"vm:{vmid}")) and s["state"] == "started" and status(api, vmid) == "running", 60)


def starting_outside_ha(api: Api, ctl, vms, vmid: int, start_secs: float) -> None:
    """Pulumi's destroy order caught mid-start: VMID under HA, its LRM start (START_SECS PVE seconds,
    holding the flock) under way, then its HA resource deleted."""
    vms(vmid, node=NODE)
    ctl.set_start_secs(vmid, start_secs)
    api.ok("POST", "/cluster/ha/resources", sid=f"vm:{vmid}", state="started")
    poll(f"the LRM starting vm:{vmid}", lambda: running_task(ctl, vmid, "qmstart"), 30, interval=0.05)
    api.ok("DELETE", f"/cluster/ha/resources/vm:{vmid}")


def test_destroy_during_a_start_fails_once_it_holds_the_config_lock(lab_env, ctl, vms, pve_restore):
    """The HTTP checks pass (the VM is still stopped), the task waits for the start's flock, then
    finds the VM running: a task error, which bpg's DeleteVM does not retry (a WaitForTask error
    is unrecoverable). fakepve destroyed the running VM."""
    api = Api(lab_env["pve"], NODE)
    vms(941, node=NODE)
    ctl.set_start_secs(941, 5)  # within the destroy's 10 s flock wait
    api.ok("POST", f"/nodes/{NODE}/qemu/941/status/start")
    poll("941 starting", lambda: running_task(ctl, 941, "qmstart"), 10, interval=0.05)
    assert status(api, 941) == "stopped"
    upid = api.ok("DELETE", f"/nodes/{NODE}/qemu/941", purge=1, **{"destroy-unreferenced-disks": 1})
    result, log = api.wait_task(upid)
    assert result == "VM 941 is running - destroy failed", log
    assert status(api, 941) == "running"


def test_destroy_while_ha_starts_the_vm_after_its_ha_resource_went(lab_env, ctl, vms, pve_restore):
    """Pulumi's order: the HA resource is deleted first, while the LRM's start (holding the flock)
    is under way; bpg reads the VM `stopped`, skips the stop and deletes: the destroy fails in its
    task, the VM ends running outside HA. A second destroy (stop, then delete) succeeds."""
    api = Api(lab_env["pve"], NODE)
    starting_outside_ha(api, ctl, vms, 942, start_secs=5)
    assert status(api, 942) == "stopped"
    result, log = api.wait_task(api.ok("DELETE", f"/nodes/{NODE}/qemu/942", purge=1, **{"destroy-unreferenced-disks": 1}))
    assert result == "VM 942 is running - destroy failed", log
    assert status(api, 942) == "running"
    assert api.req("GET", "/cluster/ha/resources/vm:942").status_code != 200
    # the next `pulumi destroy`: bpg stops the VM (no longer HA-managed: a qmstop task), then deletes it
    result, log = api.wait_task(api.ok("POST", f"/nodes/{NODE}/qemu/942/status/stop"))
    assert result == "OK", log
    assert any(t["type"] == "qmstop" for t in ctl.tasks(942))
    result, log = api.wait_task(api.ok("DELETE", f"/nodes/{NODE}/qemu/942", purge=1, **{"destroy-unreferenced-disks": 1}))
    assert result == "OK", log


def test_destroy_waits_for_the_config_lock_then_times_out(lab_env, ctl, vms, pve_restore):
    """A start longer than lock_config's 10 s: the destroy task fails with the flock's timeout."""
    api = Api(lab_env["pve"], NODE)
    starting_outside_ha(api, ctl, vms, 943, start_secs=40)
    result, log = api.wait_task(api.ok("DELETE", f"/nodes/{NODE}/qemu/943", purge=1))
    assert result == "can't lock file '/var/lock/qemu-server/lock-943.conf' - got timeout", log
    poll("943 running", lambda: status(api, 943) == "running", 30)


def test_stop_and_start_through_ha_apply_the_pending_changes(lab_env, ctl, vms, pve_restore):
    """bpg's reboot_after_update without the guest agent: status/stop, wait for `stopped`,
    status/start, wait for `running`; both go through HA and the LRM's `qm start` applies what
    the PUT left pending. The requested state ends `started`."""
    api = Api(lab_env["pve"], NODE)
    vms(944, node=NODE, cores=1)
    ha_started(api, 944)
    api.ok("PUT", f"/nodes/{NODE}/qemu/944/config", cores=2)
    assert int(api.ok("GET", f"/nodes/{NODE}/qemu/944/config", current=1)["cores"]) == 1
    result, log = api.wait_task(api.ok("POST", f"/nodes/{NODE}/qemu/944/status/stop"))
    assert result == "OK" and "Requesting HA stop for VM 944" in log
    poll("944 stopped", lambda: status(api, 944) == "stopped", 30)
    result, log = api.wait_task(api.ok("POST", f"/nodes/{NODE}/qemu/944/status/start"))
    assert result == "OK" and "Requesting HA start for VM 944" in log
    poll("944 running", lambda: status(api, 944) == "running", 30)
    assert int(api.ok("GET", f"/nodes/{NODE}/qemu/944/config", current=1)["cores"]) == 2
    assert all("pending" not in e and not e.get("delete") for e in api.ok("GET", f"/nodes/{NODE}/qemu/944/pending"))
    assert api.ok("GET", "/cluster/ha/resources/vm:944")["state"] == "started"


def test_reboot_of_an_ha_vm_restarts_it_through_ha(lab_env, ctl, vms, pve_restore):
    """bpg's reboot_after_update with the guest agent: status/reboot. The qmreboot task stops the
    VM; `qm cleanup` requests the HA start; the LRM starts it with its pending changes; the
    requested state never leaves `started`."""
    api = Api(lab_env["pve"], NODE)
    vms(945, node=NODE, cores=1)
    ha_started(api, 945)
    api.ok("PUT", f"/nodes/{NODE}/qemu/945/config", cores=2)
    upid = api.ok("POST", f"/nodes/{NODE}/qemu/945/status/reboot", timeout=30)
    assert ":qmreboot:945:" in upid
    states = set()
    end = time.monotonic() + 30
    while time.monotonic() < end:
        states.add(api.ok("GET", "/cluster/ha/resources/vm:945")["state"])
        if any(t["type"] == "hastart" for t in ctl.tasks(945)) and status(api, 945) == "running":
            break
        time.sleep(0.1)
    assert api.wait_task(upid)[0] == "OK"
    hastart = [t for t in ctl.tasks(945) if t["type"] == "hastart"]
    assert hastart and any("Requesting HA start for VM 945" in line for line in hastart[-1]["log"]), ctl.tasks(945)
    assert status(api, 945) == "running"
    assert states == {"started"}
    assert int(api.ok("GET", f"/nodes/{NODE}/qemu/945/config", current=1)["cores"]) == 2
