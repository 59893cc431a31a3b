"""Whose VM is at each configured id (components/vm_owners.py): the rules, without a cluster."""

from __future__ import annotations

from typing import Any

import pytest

from components.vm_owners import owner_of, owner_tag, problems, recorded_owners

OURS = owner_tag("pve-ceph-ha", "Lab")
WANTED = [{"id": 150, "name": "app"}]


def never() -> dict[int, str]:
    raise AssertionError("the state was read for a VM that carries the stack's tag, or for a free id")


def state(held: dict[int, str]) -> Any:
    return lambda: held


def test_the_owner_tag_is_a_pve_tag() -> None:
    assert OURS == "pulumi-stack.pve-ceph-ha.lab"
    assert owner_of("no-ha;pulumi-stack.pve-ceph-ha.lab") == OURS
    assert owner_of(["backup"]) == "" and owner_of(None) == ""


@pytest.mark.parametrize("cluster", [[], [{"vmid": 151, "name": "other", "node": "pve-node1"}], [{"vmid": 150, "name": "app", "node": "pve-node2", "tags": f"no-ha;{OURS}"}]])
def test_a_free_id_or_the_stacks_own_vm_passes_without_reading_the_state(cluster: list[dict[str, Any]]) -> None:
    assert problems(WANTED, cluster, OURS, never) == []


def test_a_vm_made_by_hand_is_refused_naming_id_node_name_and_the_way_out() -> None:
    (problem,) = problems(WANTED, [{"vmid": 150, "name": "handmade", "node": "pve-node2", "tags": "backup"}], OURS, state({}))
    for part in ("vms[] id 150 (app)", "VM 150 'handmade' on pve-node2", "no owner tag", "pulumi import", "free id"):
        assert part in problem


def test_another_stacks_vm_is_refused_naming_that_stack() -> None:
    (problem,) = problems(WANTED, [{"vmid": 150, "name": "app", "node": "pve-node1", "tags": "pulumi-stack.pve-ceph-ha.prod"}], OURS, state({}))
    assert "belongs to stack pve-ceph-ha.prod" in problem


def test_a_vm_made_before_the_tags_or_imported_is_the_stacks_because_its_state_holds_it() -> None:
    cluster = [{"vmid": 150, "name": "app", "node": "pve-node1"}, {"vmid": 151, "name": "imported", "node": "pve-node1", "tags": "pulumi-stack.x.y"}]
    assert problems([*WANTED, {"id": 151, "name": "imported"}], cluster, OURS, state({150: "", 151: "pulumi-stack.x.y"})) == []


def test_an_id_reused_after_a_deletion_outside_is_refused() -> None:
    (problem,) = problems(WANTED, [{"vmid": 150, "name": "someone", "node": "pve-node3"}], OURS, state({150: OURS}))
    assert "deleted outside and its id reused" in problem


def test_the_state_is_read_once_for_all_vms() -> None:
    reads = []

    def held() -> dict[int, str]:
        reads.append(1)
        return {}

    cluster = [{"vmid": 150, "name": "a", "node": "n"}, {"vmid": 151, "name": "b", "node": "n"}]
    assert len(problems([*WANTED, {"id": 151, "name": "b"}], cluster, OURS, held)) == 2
    assert reads == [1]


def test_recorded_owners_reads_the_vms_of_an_export() -> None:
    export = {
        "deployment": {
            "resources": [
                {"type": "proxmoxve:index/vmLegacy:VmLegacy", "outputs": {"vmId": 101, "tags": [OURS]}},
                {"type": "proxmoxve:index/vmLegacy:VmLegacy", "outputs": {"vmId": 102, "tags": []}},
                {"type": "proxmoxve:index/haresource:Haresource", "outputs": {"vmId": 103}},
            ]
        }
    }
    assert recorded_owners(export) == {101: OURS, 102: ""}
