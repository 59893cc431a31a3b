"""The lab's HA manager in node maintenance (PVE >= 7.3), after pve-ha-manager's CLI/ha_manager.pm
(`ha-manager crm-command node-maintenance enable|disable NODE`), Manager.pm (update_crm_commands,
next_state_started's maintenance fallback node, select_service_node), NodeStatus.pm (the node
state `maintenance` while its LRM runs in maintenance mode) and LRM.pm (mode maintenance: the
services leave, then the watchdog is closed and the agent lock released), with qemu-server's
live migration on shared RBD storage (QemuMigrate.pm): the guest keeps running, the same VM
process (the lab's librbd lock holder) with the same lock, on the new node.
"""

from __future__ import annotations

import pytest
from pve_client import Api, make_rbd_storage, poll, service, vm_node

pytestmark = [
    pytest.mark.lab,
    pytest.mark.timeout(300),
    pytest.mark.usefixtures("pve_restore"),
]  # lab: needs the running lab (tools/run-tests.sh selects by marks)


def node_state(api: Api, node: str) -> str | None:
    return api.ok("GET", "/cluster/ha/status/manager_status")["manager_status"]["node_status"].get(node)


def lrm_line(api: Api, node: str) -> str:
    return next(e["status"] for e in api.ok("GET", "/cluster/ha/status/current") if e.get("type") == "lrm" and e.get("node") == node)


def test_maintenance_live_migrates_away_and_back(lab_env, ctl, ceph_pool, vms):
    api = Api(lab_env["pve"], "pve-node2")
    if "lt-good" not in ceph_pool["storages"]:
        make_rbd_storage(api, ceph_pool, "lt-good", "good")
    vms(971, node="pve-node1", scsi0="lt-good:1", memory=512)
    vms(972, node="pve-node1", scsi0="local-lvm:1")
    for sid in ("vm:971", "vm:972"):
        api.ok("POST", "/cluster/ha/resources", sid=sid)
    poll("both started on pve-node1", lambda: all(service(api, s)["status"] == f"{s} (pve-node1, started)" for s in ("vm:971", "vm:972")), 60)
    pid = ctl.holders()["971"]["pid"]
    before = set(ctl.ha_log())

    ctl.ha_command("pve-node1", "node-maintenance", "pve-node1", disable="0")
    poll("pve-node1 in maintenance", lambda: node_state(api, "pve-node1") == "maintenance", 30)
    poll(
        "both started elsewhere",
        lambda: all((s := service(api, sid)) and s["state"] == "started" and s["node"] != "pve-node1" for sid in ("vm:971", "vm:972")),
        60,
    )
    holder = ctl.holders()["971"]
    assert holder["pid"] == pid and holder["node"] == vm_node(api, 971) != "pve-node1"  # live: the same guest, never restarted
    poll("pve-node1's LRM idle in maintenance", lambda: lrm_line(api, "pve-node1").startswith("pve-node1 (maintenance mode"), 30)
    ss = api.ok("GET", "/cluster/ha/status/manager_status")["manager_status"]
    assert ss["node_request"] == {"pve-node1": {"maintenance": 1}}
    assert ss["service_status"]["vm:971"]["maintenance_node"] == "pve-node1"
    log = [line for line in ctl.ha_log() if line not in before]
    assert any("migrate service 'vm:971' to node" in line and "(running)" in line for line in log), log
    assert any("pve-node1 pve-ha-lrm: <info> watchdog closed (disabled)" in line for line in log), log
    # a second enable is ignored, an unknown node refused by the CLI
    ctl.ha_command("pve-node1", "node-maintenance", "pve-node1", disable="0")
    poll("the repeat ignored", lambda: any("ignoring crm command - node pve-node1 is already in maintenance state" in line for line in ctl.ha_log()), 15)

    ctl.ha_command("pve-node2", "node-maintenance", "pve-node1", disable="1")
    poll("both back on pve-node1", lambda: all(service(api, s)["status"] == f"{s} (pve-node1, started)" for s in ("vm:971", "vm:972")), 60)
    assert node_state(api, "pve-node1") == "online"
    assert ctl.holders()["971"]["pid"] == pid
    log = [line for line in ctl.ha_log() if line not in before]
    assert any("moving service 'vm:971' back to 'pve-node1', node came back from maintenance." in line for line in log), log
    assert "node_request" not in api.ok("GET", "/cluster/ha/status/manager_status")["manager_status"]


def test_maintenance_of_an_unknown_node_is_refused(lab_env, ctl):
    from lab.pve.control import ControlError

    with pytest.raises(ControlError, match="no such cluster node 'pve-node9'"):
        ctl.ha_command("pve-node1", "node-maintenance", "pve-node9", disable="0")
