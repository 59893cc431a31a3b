"""The lab's HA manager with resource-affinity rules (PVE 9), after pve-ha-manager's
API2/HA/Rules.pm ($assert_feasibility), API2/HA/Resources.pm migrate (get_resource_motion_info),
Manager.pm (select_service_node, queue_resource_motion, recovery) and Rules/ResourceAffinity.pm:

- a rule that makes the rule set infeasible is refused with PVE's reasons;
- two services kept together end on one node (the lower one moves to the other's);
- a migration next to a service kept apart is refused and says which blocks it; one kept
  together moves with its partner;
- recovery after a node failure avoids the nodes of services kept apart (explicitly or through a
  partner kept together), and partners kept together recover to one node;
- without a rule, the basic scheduler recovers a service to the least used node, the first by
  name on a tie: the control that makes the rule's effect visible.

No Ceph needed (the VMs have local disks): runs standalone with LAB_PVE_TEST_STANDALONE=1.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pve_client import Api, poll, recovery_deadline, service

pytestmark = [
    pytest.mark.lab,
    pytest.mark.timeout(300),
    pytest.mark.usefixtures("pve_restore"),
]  # lab: needs the running lab (tools/run-tests.sh selects by marks)


@pytest.fixture
def rules(lab_env) -> Iterator[None]:
    """The tests' rules (t96x-...) are removed at the end: a rule whose resources were removed but
    one stays in PVE's config (the resource's delete purges only the resource from it)."""
    yield
    api = Api(lab_env["pve"], "pve-node3")
    for rule in api.ok("GET", "/cluster/ha/rules"):
        if rule["rule"].startswith("t96"):
            api.ok("DELETE", f"/cluster/ha/rules/{rule['rule']}")


def started(api: Api, sids: dict[str, str]) -> bool:
    return all((service(api, sid) or {}).get("status") == f"{sid} ({node}, started)" for sid, node in sids.items())


def ha_three(api: Api, vms, first: int) -> list[str]:
    """Three HA VMs, one per node, started."""
    sids = {}
    for i, node in enumerate(("pve-node1", "pve-node2", "pve-node3")):
        vms(first + i, node=node)
        api.ok("POST", "/cluster/ha/resources", sid=f"vm:{first + i}")
        sids[f"vm:{first + i}"] = node
    poll("three services started", lambda: started(api, sids), 60)
    return list(sids)


def test_an_infeasible_rule_is_refused_with_pves_reasons(lab_env, vms, rules):
    api = Api(lab_env["pve"], "pve-node2")
    for vmid in (961, 962):
        vms(vmid)
        api.ok("POST", "/cluster/ha/resources", sid=f"vm:{vmid}", state="stopped")
    api.ok("POST", "/cluster/ha/rules", rule="t961-with", type="resource-affinity", affinity="positive", resources="vm:961,vm:962")
    status, message = api.err("POST", "/cluster/ha/rules", rule="t961-apart", type="resource-affinity", affinity="negative", resources="vm:961,vm:962")
    assert (status, message) == (
        500,
        "create ha rule failed: 400 Rule 't961-apart' is invalid.\nresources: rule shares two or more resources with a positive resource affinity rule",
    )
    status, message = api.err("POST", "/cluster/ha/rules", rule="t961-one", type="resource-affinity", affinity="negative", resources="vm:961")
    assert message.endswith("resources: rule is ineffective as there are less than two resources"), message
    assert api.err("POST", "/cluster/ha/rules", rule="t961-x", type="resource-affinity", resources="vm:961,vm:962")[0] == 400  # affinity is not optional
    assert "t961-apart" not in {r["rule"] for r in api.ok("GET", "/cluster/ha/rules")}


def test_together_apart_migrate_and_recover(lab_env, ctl, vms, rules):
    api = Api(lab_env["pve"], "pve-node1")  # pve-node2 is powered off below
    before = set(ctl.ha_log())
    a, b, c = ha_three(api, vms, 963)  # vm:963 pve-node1, vm:964 pve-node2, vm:965 pve-node3
    api.ok("POST", "/cluster/ha/rules", rule="t963-apart", type="resource-affinity", affinity="negative", resources=f"{a},{b}")
    api.ok("POST", "/cluster/ha/rules", rule="t963-with", type="resource-affinity", affinity="positive", resources=f"{b},{c}")
    # together: the first by name moves to its partner's node; the partner, counting the move's target, stays
    poll(f"{b} moved to {c}'s node", lambda: started(api, {a: "pve-node1", b: "pve-node3", c: "pve-node3"}), 60)
    log = "\n".join(ctl.ha_log())
    assert f"migrate service '{b}' to node 'pve-node3' (running)" in log
    # c is kept apart from a through its partner b (create_implicit_negative_resource_affinity_rules)
    answer = api.ok("POST", f"/cluster/ha/resources/{c}/migrate", node="pve-node1")
    assert answer == {"sid": c, "requested-node": "pve-node1", "comigrated-resources": [b], "blocking-resources": [{"sid": a, "cause": "resource-affinity"}]}
    assert f"crm command 'migrate {c} pve-node1' error - service '{a}' on node 'pve-node1' in negative affinity with service '{c}'" in "\n".join(ctl.ha_log())
    # a move to a free node takes the partner along
    answer = api.ok("POST", f"/cluster/ha/resources/{c}/migrate", node="pve-node2")
    assert answer == {"sid": c, "requested-node": "pve-node2", "comigrated-resources": [b]}
    poll("both on pve-node2", lambda: started(api, {a: "pve-node1", b: "pve-node2", c: "pve-node2"}), 60)
    # pve-node2 dies: both partners recover together, never next to a
    ctl.fault("pve-node2", "poweroff")
    poll("both recovered to pve-node3", lambda: started(api, {a: "pve-node1", b: "pve-node3", c: "pve-node3"}), recovery_deadline(ctl, 30))
    assert not [line for line in ctl.ha_log() if "Drop rule" in line and line not in before]


def test_without_a_rule_recovery_goes_to_the_least_used_node_first_by_name(lab_env, ctl, vms):
    api = Api(lab_env["pve"], "pve-node2")
    a, b, c = ha_three(api, vms, 966)
    ctl.fault("pve-node1", "poweroff")
    poll(f"{a} recovered", lambda: started(api, {a: "pve-node2"}), recovery_deadline(ctl, 30))
    assert started(api, {b: "pve-node2", c: "pve-node3"})


def test_static_crs_recovers_to_the_node_with_room(lab_env, ctl, vms):
    """datacenter.cfg `crs: ha=static` (Usage/Static.pm): pve-node2 runs one VM of 3 cores and 6 GiB,
    pve-node3 two of 1 core and 512 MiB. When pve-node1 dies, the basic scheduler would recover its
    VM to pve-node2 (one service against two, the control above); static weighs the CPUs and the
    memory they use and picks pve-node3."""
    api = Api(lab_env["pve"], "pve-node2")
    placed = {"vm:969": "pve-node1", "vm:970": "pve-node2", "vm:971": "pve-node3", "vm:972": "pve-node3"}
    for sid, node in placed.items():
        vmid = int(sid.split(":")[1])
        vms(vmid, node=node, **({"memory": 6144, "cores": 3} if vmid == 970 else {"memory": 512}))
        api.ok("POST", "/cluster/ha/resources", sid=sid)
    poll("four services started", lambda: started(api, placed), 60)
    api.ok("PUT", "/cluster/options", crs="ha=static")
    try:
        ctl.fault("pve-node1", "poweroff")
        poll("vm:969 recovered", lambda: (s := service(api, "vm:969")) and s["state"] == "started" and s["node"] != "pve-node1", recovery_deadline(ctl, 30))
        assert service(api, "vm:969")["node"] == "pve-node3"
    finally:
        api.ok("PUT", "/cluster/options", delete="crs")
