"""Both HA modes through the real engine and the real plugin: PVE 9's node-affinity rules (the lab's
default) and PVE 8's HA groups (the lab switched to PVE 8 through its control channel, for as
short a window as the test can make it, and switched back whatever happens).

Each mode: a stack with ``ha.mode`` matching and one affinity over two nodes that its VM names;
up succeeds, the rule (GET /cluster/ha/rules) or group (GET /cluster/ha/groups) holds the two
nodes with their priorities and the VM's sid, preview shows 0 changes, destroy removes the
rule or group and the HA resource. And an ``ha.mode`` the cluster does not have stops the run
before any HA resource exists, with the fix in the message and no traceback.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

from lab.pve.control import Control
from lab.testing.seed import LabAccess, remove_vm
from lab.testing.shared import settled, unmodelled
from lab.testing.stack import LabStack, admin, changes, forget, names, storages

# needs the running lab and the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = [pytest.mark.lab, pytest.mark.engine]

NODES = {"pve-node1": 2, "pve-node2": 1}
# (prefix, VM id) per case: the stack's pool/client/storage names, its affinity and its VM
RULES, GROUPS, GROUPS_ON_PVE9, RULES_ON_PVE8 = ("hamr", 430), ("hamg", 431), ("hamx", 432), ("hamy", 433)


def config_for(prefix: str, vmid: int, mode: str) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        names(prefix)(config)
        config["vms"] = [{**config["vms"][0], "id": vmid, "name": f"vm{vmid}", "affinity": f"{prefix}-pref"}]
        config["ha"] = {**config["ha"], "mode": mode, "affinities": [{"name": f"{prefix}-pref", "nodes": NODES}]}
        config["allowPoolDeletion"] = True  # the test leaves no pool behind

    return edit


def pve_nodes(value: str) -> dict[str, int]:
    """PVE's node list, ``pve-node1:2,pve-node2:1`` (a node without a priority has 0)."""
    out = {}
    for item in value.split(","):
        node, _, priority = item.strip().partition(":")
        out[node] = int(priority or 0)
    return out


def ha_rules(lab: LabAccess) -> dict[str, dict[str, Any]]:
    return {r["rule"]: r for r in lab.any_api().cluster.ha.rules.get()}


def ha_groups(lab: LabAccess) -> dict[str, dict[str, Any]]:
    return {g["group"]: g for g in lab.any_api().cluster.ha.groups.get()}


def ha_resources(lab: LabAccess) -> dict[str, dict[str, Any]]:
    return {r["sid"]: r for r in lab.any_api().cluster.ha.resources.get()}


def ha_named(lab: LabAccess, prefix: str, vmid: int, mode: str) -> list[str]:
    """What the lab holds of this case's HA: its rule or group, its HA resource."""
    found = [f"vm:{vmid}"] if f"vm:{vmid}" in ha_resources(lab) else []
    affinities = ha_rules(lab) if mode == "rules" else ha_groups(lab)
    return found + [name for name in affinities if name.startswith(prefix)]


def clean(lab: LabAccess, prefix: str, vmid: int, mode: str) -> None:
    """Remove what an interrupted earlier run of this case left: its VM, HA resource, rule or group, storage, client, pool."""
    remove_vm(lab, vmid)
    api = lab.any_api()
    if mode == "rules":
        for rule in ha_rules(lab):
            if rule.startswith(prefix):
                api.cluster.ha.rules(rule).delete()
    else:
        for group in ha_groups(lab):
            if group.startswith(prefix):
                api.cluster.ha.groups(group).delete()
    forget(prefix)


@contextlib.contextmanager
def pve8(lab: LabAccess) -> Iterator[None]:
    """The lab as PVE 8 (HA groups, no rules API) for the duration; back to PVE 9 (rules) whatever happens."""
    control = Control()
    t0 = time.monotonic()
    control.set_mode("groups")
    try:
        settled("groups")
        print(f"\n  PVE 8 mode settled after {time.monotonic() - t0:.1f} s")
        yield
    finally:
        control.set_mode("rules")
        print(f"\n  the lab was in PVE 8 (groups) mode for {time.monotonic() - t0:.1f} s")


@pytest.fixture(scope="module")
def lab(lab_state: dict[str, Any]) -> Iterator[LabAccess]:
    access = LabAccess(lab_state)
    settled()
    for prefix, vmid in (RULES, GROUPS_ON_PVE9, GROUPS, RULES_ON_PVE8):
        clean(access, prefix, vmid, "rules")
    yield access
    for prefix, vmid in (RULES, GROUPS_ON_PVE9):
        clean(access, prefix, vmid, "rules")  # what a failed test left (the PVE 8 cases clean up in their window)


def one_mode(lab: LabAccess, lab_state: dict[str, Any], tmp: Path, case: tuple[str, int], mode: str) -> None:
    prefix, vmid = case
    sid = f"vm:{vmid}"
    t0 = time.time()
    stack = LabStack(prefix, lab_state, tmp, config_for(prefix, vmid, mode))
    try:
        t1 = time.monotonic()
        up = stack.up()
        assert up.summary.result == "succeeded", stack.text()[-3000:]
        print(f"\n  {mode}: up {time.monotonic() - t1:.1f} s")
        resource = ha_resources(lab)[sid]
        if mode == "rules":
            rule = ha_rules(lab)[f"{prefix}-pref"]
            assert rule["type"] == "node-affinity"
            assert pve_nodes(rule["nodes"]) == NODES
            assert rule["resources"].split(",") == [sid]
        else:
            group = ha_groups(lab)[f"{prefix}-pref"]
            assert pve_nodes(group["nodes"]) == NODES
            assert resource["group"] == f"{prefix}-pref"
        t1 = time.monotonic()
        assert changes(stack.preview().change_summary) == {}, stack.text()[-3000:]
        print(f"  {mode}: preview {time.monotonic() - t1:.1f} s")
    finally:
        t1 = time.monotonic()
        stack.retire(prefix)
        print(f"  {mode}: destroy {time.monotonic() - t1:.1f} s")
    assert ha_named(lab, prefix, vmid, mode) == []
    assert lab.vm_node(vmid) is None and f"{prefix}-rbd" not in storages()
    assert f"{prefix}-pool" not in admin("ceph osd pool ls").split()
    assert unmodelled(t0, [f"/{vmid}", sid, f"{prefix}-"]) == []


def mismatch(lab: LabAccess, lab_state: dict[str, Any], tmp: Path, case: tuple[str, int], mode: str, fix: str) -> None:
    """A stack whose ha.mode the cluster does not have: up stops before any HA resource, with FIX."""
    prefix, vmid = case
    cluster_mode = "groups" if mode == "rules" else "rules"
    stack = LabStack(prefix, lab_state, tmp, config_for(prefix, vmid, mode))
    try:
        with pytest.raises(auto.CommandError) as info:
            stack.up()
        message = str(info.value)
        assert fix in message, message
        assert "Traceback" not in message, message
        assert ha_named(lab, prefix, vmid, cluster_mode) == []
    finally:
        stack.retire(prefix)
    assert lab.vm_node(vmid) is None and f"{prefix}-rbd" not in storages()


def test_rules_mode_pve9(lab: LabAccess, lab_state: dict[str, Any], tmp_path: Path) -> None:
    one_mode(lab, lab_state, tmp_path, RULES, "rules")


def test_groups_mode_on_pve9_stops_before_any_ha_resource(lab: LabAccess, lab_state: dict[str, Any], tmp_path: Path) -> None:
    mismatch(lab, lab_state, tmp_path, GROUPS_ON_PVE9, "groups", "set ha.mode: rules")


def test_groups_mode_pve8_and_rules_mode_on_pve8_stops(lab: LabAccess, lab_state: dict[str, Any], tmp_path: Path) -> None:
    with pve8(lab):
        for prefix, vmid in (GROUPS, RULES_ON_PVE8):
            clean(lab, prefix, vmid, "groups")  # the groups API answers in PVE 8 mode only
        try:
            one_mode(lab, lab_state, tmp_path / "groups", GROUPS, "groups")
            mismatch(lab, lab_state, tmp_path / "mismatch", RULES_ON_PVE8, "rules", "set ha.mode: groups")
        finally:
            for prefix, vmid in (GROUPS, RULES_ON_PVE8):
                clean(lab, prefix, vmid, "groups")  # what a failure left
