"""The lab's HA manager when a node fails, after pve-ha-manager 5.0.8 (PVE 9) / 4.0.7 (PVE 8) and
qemu-server: what the watchdog resets (LRM.pm work), what fence recovery clears (Manager.pm
$fence_recovery_cleanup), a node left in `fence` with nothing to fence (Manager.pm manage), and
the config lock a VM start honours (QemuServer.pm vm_start).

No Ceph needed (the VMs have local disks): runs standalone with LAB_PVE_TEST_STANDALONE=1.
"""

from __future__ import annotations

import time

import pytest
from pve_client import Api, poll, recovery_deadline, service, time_scale

from lab.pve.control import Control

pytestmark = [
    pytest.mark.lab,
    pytest.mark.timeout(300),
    pytest.mark.usefixtures("pve_restore"),
]  # lab: needs the running lab (tools/run-tests.sh selects by marks)


def vm_status(ctl: Control, vmid: int) -> str:
    return ctl.status()["vms"][str(vmid)]["status"]


def node_state(ctl: Control, node: str) -> str | None:
    return ctl.status()["nodes"][node]["ha_node_state"]


# ---------------------------------------------------------------------- watchdog (LRM.pm work)


def test_isolated_node_with_an_ignored_service_is_reset_by_its_watchdog(lab_env, ctl, vms):
    """The LRM went active for the service; `ignored` drops it from the manager status, but the
    LRM keeps its watchdog for 60 idle rounds: cut off, the node is reset and the VM dies."""
    api = Api(lab_env["pve"], "pve-node2")
    vms(921, node="pve-node3")
    api.ok("POST", "/cluster/ha/resources", sid="vm:921")
    poll("vm:921 started", lambda: service(api, "vm:921")["status"] == "vm:921 (pve-node3, started)", 30)
    api.ok("PUT", "/cluster/ha/resources/vm:921", state="ignored")
    poll("vm:921 ignored", lambda: service(api, "vm:921")["state"] == "ignored", 15)
    assert vm_status(ctl, 921) == "running"
    ctl.fault("pve-node3", "isolate")
    poll("the watchdog reset of pve-node3", lambda: vm_status(ctl, 921) == "stopped", 60 * time_scale(ctl) + 15)
    assert any("pve-node3 watchdog-mux: <crit> client watchdog expired" in line for line in ctl.ha_log())


def test_lrm_gives_up_its_watchdog_only_after_60_idle_rounds(lab_env, ctl, vms):
    """LRM.pm $max_active_idle_rounds: after its last service left, the LRM stays `active` (agent
    lock and watchdog held) for more than 60 rounds of ~10 s, then goes idle; an isolated node
    whose LRM is idle is not reset, its (no longer HA) VM keeps running."""
    ctl.set_time_scale(0.02)  # 610 PVE seconds of idle rounds in ~12 s
    api = Api(lab_env["pve"], "pve-node2")
    vms(922, node="pve-node3")
    api.ok("POST", "/cluster/ha/resources", sid="vm:922")
    poll("vm:922 started", lambda: service(api, "vm:922")["status"] == "vm:922 (pve-node3, started)", 30)
    api.ok("DELETE", "/cluster/ha/resources/vm:922")
    time.sleep(300 * time_scale(ctl))  # half way
    assert _lrm_status(api, "pve-node3").startswith("pve-node3 (active, ")
    poll("pve-node3's LRM idle", lambda: _lrm_status(api, "pve-node3").startswith("pve-node3 (idle, "), 400 * time_scale(ctl) + 10)
    assert any("node had no service configured for 60 rounds, going idle." in line for line in ctl.ha_log())
    ctl.fault("pve-node3", "isolate")
    time.sleep(90 * time_scale(ctl) + 2)  # past the watchdog's 60 s
    assert vm_status(ctl, 922) == "running"


def _lrm_status(api: Api, node: str) -> str:
    return next(e["status"] for e in api.ok("GET", "/cluster/ha/status/current") if e["id"] == f"lrm:{node}")


# ---------------------------------------------------------------------- fence (Manager.pm manage)


def test_node_in_fence_with_no_service_left_is_fenced_and_comes_back(lab_env, ctl, vms):
    """`ha-manager remove` of the only service of a node being fenced: the CRM fences the node
    anyway ("admin interference"), once its agent lock expired; back in the partition it is
    online again and a service added there starts on it."""
    api = Api(lab_env["pve"], "pve-node2")
    victim = next(n for n in ("pve-node1", "pve-node3") if n != ctl.status()["master"])
    vms(923, node=victim)
    vms(924, node=victim)
    api.ok("POST", "/cluster/ha/resources", sid="vm:923")
    poll("vm:923 started", lambda: service(api, "vm:923")["status"] == f"vm:923 ({victim}, started)", 30)
    ctl.fault(victim, "poweroff")
    poll(f"{victim} in fence", lambda: node_state(ctl, victim) == "fence", 60 * time_scale(ctl) + 15)
    api.ok("DELETE", "/cluster/ha/resources/vm:923")
    ctl.fault(victim, "restore")
    poll(f"{victim} online again", lambda: node_state(ctl, victim) == "online", recovery_deadline(ctl))
    assert any(f"node '{victim}' in fence state but no services to-fence! admin interference?!" in line for line in ctl.ha_log())
    api.ok("POST", "/cluster/ha/resources", sid="vm:924")
    poll("vm:924 started where it is", lambda: service(api, "vm:924")["status"] == f"vm:924 ({victim}, started)", 30)
    assert vm_status(ctl, 924) == "running"


# ---------------------------------------------------------------------- recovery of a locked VM


def test_fence_recovery_keeps_a_create_lock_and_the_start_fails_into_error(lab_env, ctl, vms):
    """Manager.pm $fence_recovery_cleanup removes only backup, mounted, migrate, clone, rollback,
    snapshot, snapshot-delete, suspending and suspended: a `create` lock moves with the recovered
    VM, `qm start` on its new node refuses it (QemuServer.pm vm_start -> check_lock) and after the
    restart and relocate tries the service is in `error`. (The lock is set while the VM is stopped:
    on a running one the lab makes it a pending change.)"""
    api = Api(lab_env["pve"], "pve-node2")
    victim = next(n for n in ("pve-node1", "pve-node3") if n != ctl.status()["master"])
    vms(925, node=victim)
    Api.root_login(lab_env["pve"], "pve-node2").ok("PUT", f"/nodes/{victim}/qemu/925/config", lock="create")
    api.ok("POST", "/cluster/ha/resources", sid="vm:925", state="stopped", max_restart=1, max_relocate=1)
    poll("vm:925 stopped", lambda: service(api, "vm:925")["status"] == f"vm:925 ({victim}, stopped)", 30)
    ctl.fault(victim, "poweroff")
    st = poll("vm:925 recovered", lambda: (s := service(api, "vm:925")) and s["node"] != victim and s["state"] == "stopped" and s, recovery_deadline(ctl))
    assert api.ok("GET", f"/nodes/{st['node']}/qemu/925/config")["lock"] == "create"
    api.ok("PUT", "/cluster/ha/resources/vm:925", state="started")
    poll("vm:925 in error", lambda: service(api, "vm:925")["state"] == "error", 60)
    starts = [t for t in ctl.tasks(925) if t["type"] == "qmstart"]
    assert starts and all(t["exitstatus"] == "VM is locked (create)" for t in starts), starts


def test_fence_recovery_removes_a_leftover_backup_lock(lab_env, ctl, vms):
    api = Api(lab_env["pve"], "pve-node2")
    victim = next(n for n in ("pve-node1", "pve-node3") if n != ctl.status()["master"])
    vms(926, node=victim)
    Api.root_login(lab_env["pve"], "pve-node2").ok("PUT", f"/nodes/{victim}/qemu/926/config", lock="backup")
    api.ok("POST", "/cluster/ha/resources", sid="vm:926", state="stopped")
    poll("vm:926 stopped", lambda: service(api, "vm:926")["status"] == f"vm:926 ({victim}, stopped)", 30)
    ctl.fault(victim, "poweroff")
    st = poll("vm:926 recovered", lambda: (s := service(api, "vm:926")) and s["node"] != victim and s["state"] == "stopped" and s, recovery_deadline(ctl))
    assert "lock" not in api.ok("GET", f"/nodes/{st['node']}/qemu/926/config")
    assert any("removed leftover lock 'backup' from recovered service 'vm:926' to allow its start." in line for line in ctl.ha_log())


# ---------------------------------------------------------------------- qm start and the config lock


def test_start_of_a_locked_vm_with_skiplock_needs_root(lab_env, vms):
    """QemuServer.pm vm_start checks the config lock inside lock_config unless skiplock, which
    API2/Qemu.pm vm_start gives to root@pam alone (an API token is not root@pam)."""
    api = Api(lab_env["pve"], "pve-node1")
    vms(927, node="pve-node1")
    root = Api.root_login(lab_env["pve"])
    assert api.err("PUT", "/nodes/pve-node1/qemu/927/config", lock="create") == (500, "only root can set 'lock' config")
    root.ok("PUT", "/nodes/pve-node1/qemu/927/config", lock="create")
    status, log = api.wait_task(api.ok("POST", "/nodes/pve-node1/qemu/927/status/start"))
    assert status == "VM is locked (create)", log
    code, message = api.err("POST", "/nodes/pve-node1/qemu/927/status/start", skiplock=1)
    assert code == 400 and "Only root may use this option." in api.req("POST", "/nodes/pve-node1/qemu/927/status/start", skiplock=1).text
    root.ok("PUT", "/nodes/pve-node1/qemu/927/config", delete="lock")
