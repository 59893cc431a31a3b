"""A graceful node reboot or shutdown under each HA shutdown policy (datacenter.cfg `ha:
shutdown_policy=...`, GET/PUT /cluster/options), after pve-ha-manager's LRM.pm shutdown_request
and work, Manager.pm (frozen services, maintenance), and pve-cluster's DataCenterConfig.pm:

- freeze, and conditional on a reboot: the node's VMs are stopped and their services frozen;
  the node reboots and they start again on it;
- failover: stopped, not frozen; a node back within the fence delay starts them again itself;
  conditional on a poweroff is failover: the node stays off, the VM is recovered elsewhere;
- migrate: the node goes into maintenance first, its VMs live-migrate away (the same process:
  never restarted), it reboots, and they move back.
"""

from __future__ import annotations

import pytest
from pve_client import Api, make_rbd_storage, poll, recovery_deadline, service

pytestmark = [
    pytest.mark.lab,
    pytest.mark.timeout(300),
    pytest.mark.usefixtures("pve_restore"),
]  # lab: needs the running lab (tools/run-tests.sh selects by marks)

NODE = "pve-node3"


@pytest.fixture
def policy(lab_env):
    api = Api(lab_env["pve"], "pve-node1")

    def set_policy(value: str) -> None:
        api.ok("PUT", "/cluster/options", ha=f"shutdown_policy={value}")
        assert api.ok("GET", "/cluster/options")["ha"] == {"shutdown_policy": value}

    yield set_policy
    api.ok("PUT", "/cluster/options", delete="ha")


def one_vm(lab_env, ceph_pool, vms, vmid: int) -> Api:
    api = Api(lab_env["pve"], "pve-node1")
    if "lt-good" not in ceph_pool["storages"]:
        make_rbd_storage(api, ceph_pool, "lt-good", "good")
    vms(vmid, node=NODE, scsi0="lt-good:1")
    api.ok("POST", "/cluster/ha/resources", sid=f"vm:{vmid}")
    poll("started", lambda: service(api, f"vm:{vmid}")["status"] == f"vm:{vmid} ({NODE}, started)", 60)
    return api


def reboot_keeps_the_vm_on_its_node(api: Api, ctl, vmid: int, during: str) -> None:
    sid = f"vm:{vmid}"
    before = ctl.holders()[str(vmid)]["pid"]
    ctl.call("POST", "/node/shutdown", {"node": NODE, "reboot": True})
    poll(f"{sid} {during} while {NODE} reboots", lambda: (s := service(api, sid)) and s["state"] == during and str(vmid) not in ctl.holders(), 60)
    poll(f"{NODE} powered off", lambda: ctl.status()["nodes"][NODE]["power"] == "off", 60)
    poll(f"{NODE} back", lambda: ctl.status()["nodes"][NODE]["power"] == "on", 60)
    poll(f"{sid} started again on {NODE}", lambda: service(api, sid)["status"] == f"{sid} ({NODE}, started)" and str(vmid) in ctl.holders(), 60)
    assert ctl.holders()[str(vmid)]["pid"] != before  # stopped with the node, started again


def test_the_options_api(lab_env, policy):
    api = Api(lab_env["pve"], "pve-node1")
    policy("migrate")
    status, message = api.err("PUT", "/cluster/options", ha="shutdown_policy=later")
    assert status == 400 and "shutdown_policy" in api.req("PUT", "/cluster/options", ha="shutdown_policy=later").json()["errors"]["ha"]
    api.ok("PUT", "/cluster/options", crs="ha=static,ha-rebalance-on-start=1")
    assert api.ok("GET", "/cluster/options")["crs"] == {"ha": "static", "ha-rebalance-on-start": 1}
    api.ok("PUT", "/cluster/options", delete="crs")
    assert "crs" not in api.ok("GET", "/cluster/options")


@pytest.mark.parametrize("value", ["freeze", "conditional"])
def test_reboot_freezes(lab_env, ctl, ceph_pool, vms, policy, value):
    policy(value)
    api = one_vm(lab_env, ceph_pool, vms, 981 if value == "freeze" else 982)
    reboot_keeps_the_vm_on_its_node(api, ctl, 981 if value == "freeze" else 982, "freeze")
    log = "\n".join(ctl.ha_log())
    assert f"got shutdown request with shutdown policy '{value}'" in log and "reboot LRM, stop and freeze all services" in log


def test_reboot_under_failover_is_back_before_the_fence(lab_env, ctl, ceph_pool, vms, policy):
    policy("failover")
    api = one_vm(lab_env, ceph_pool, vms, 983)
    reboot_keeps_the_vm_on_its_node(api, ctl, 983, "started")  # not frozen: back within the fence delay, started by its own LRM
    assert "shutdown LRM, stop all services" in "\n".join(ctl.ha_log())


def test_poweroff_under_conditional_fails_over(lab_env, ctl, ceph_pool, vms, policy):
    policy("conditional")
    api = one_vm(lab_env, ceph_pool, vms, 984)
    ctl.call("POST", "/node/shutdown", {"node": NODE, "reboot": False})
    poll(f"{NODE} powered off", lambda: ctl.status()["nodes"][NODE]["power"] == "off", 60)
    poll("recovered elsewhere", lambda: (s := service(api, "vm:984")) and s["state"] == "started" and s["node"] != NODE, recovery_deadline(ctl, 30))


def test_reboot_under_migrate_moves_the_vm_live_and_back(lab_env, ctl, ceph_pool, vms, policy):
    policy("migrate")
    api = one_vm(lab_env, ceph_pool, vms, 985)
    pid = ctl.holders()["985"]["pid"]
    ctl.call("POST", "/node/shutdown", {"node": NODE, "reboot": True})
    poll("moved away", lambda: (s := service(api, "vm:985")) and s["state"] == "started" and s["node"] != NODE, 60)
    assert ctl.holders()["985"]["pid"] == pid  # live
    poll(f"{NODE} powered off", lambda: ctl.status()["nodes"][NODE]["power"] == "off", 60)
    poll(f"{NODE} back", lambda: ctl.status()["nodes"][NODE]["power"] == "on", 60)
    poll("moved back", lambda: service(api, "vm:985")["status"] == f"vm:985 ({NODE}, started)", 60)
    assert ctl.holders()["985"]["pid"] == pid  # live, twice
    assert "reboot LRM, doing maintenance, removing this node from active list" in "\n".join(ctl.ha_log())


def test_rebalance_on_start_moves_a_stopped_vm_to_the_best_node_before_it_starts(lab_env, ctl, ceph_pool, vms):
    """Manager.pm next_state_request_start with `crs: ha-rebalance-on-start=1`: a service asked to
    start is first relocated (offline: request_start_balance) to select_service_node's best-score
    node; without it, a service starts where it is (the basic scheduler keeps its current node)."""
    api = Api(lab_env["pve"], "pve-node1")
    if "lt-good" not in ceph_pool["storages"]:
        make_rbd_storage(api, ceph_pool, "lt-good", "good")
    crowded = "pve-node1"
    for vmid in (986, 987):  # the rebalance off: both start where they are (the control)
        vms(vmid, node=crowded, scsi0="lt-good:1")
        api.ok("POST", "/cluster/ha/resources", sid=f"vm:{vmid}")
        poll(f"vm:{vmid} started", lambda vmid=vmid: service(api, f"vm:{vmid}")["status"] == f"vm:{vmid} ({crowded}, started)", 60)
    try:
        api.ok("PUT", "/cluster/options", crs="ha=basic,ha-rebalance-on-start=1")
        vms(988, node=crowded, scsi0="lt-good:1")
        api.ok("POST", "/cluster/ha/resources", sid="vm:988")
        poll(
            "vm:988 started elsewhere",
            lambda: (s := service(api, "vm:988")) and s["state"] == "started" and s["node"] != crowded and "988" in ctl.holders(),
            60,
        )
        log = "\n".join(ctl.ha_log())
        assert f"service vm:988: re-balance selected new node {service(api, 'vm:988')['node']} for startup" in log
        assert "service 'vm:988': state changed from 'request_start' to 'request_start_balance'" in log
    finally:
        api.ok("PUT", "/cluster/options", delete="crs")
