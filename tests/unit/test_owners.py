"""Whose object is at each name the stack declares (components/owners.py): the rules, without a cluster."""

from __future__ import annotations

from typing import Any

import pytest

from components.owners import owned_comment, owner_of, owner_tag, problems, recorded_owners

OURS = owner_tag("pve-ceph-ha", "Lab")
VM = {"kind": "vm", "name": 150.0, "entry": "vms[0].id 150 (app)"}  # the engine hands numbers as floats


def never() -> dict[tuple[str, str], str]:
    raise AssertionError("the state was read though every object is the stack's or absent")


def state(held: dict[tuple[str, str], str]) -> Any:
    return lambda: held


def test_the_owner_tag_is_a_pve_tag_and_is_found_in_tags_and_comments() -> None:
    assert OURS == "pulumi-stack.pve-ceph-ha.lab"
    assert owner_of("no-ha;pulumi-stack.pve-ceph-ha.lab") == OURS
    assert owner_of(owned_comment(OURS)) == OURS
    assert owner_of(["backup"]) == "" and owner_of(None) == "" and owner_of("managed by pve-ceph-ha") == ""


@pytest.mark.parametrize(
    "vms",
    [[], [{"vmid": 151, "name": "other", "node": "pve-node1"}], [{"vmid": 150, "name": "app", "node": "pve-node2", "tags": f"no-ha;{OURS}"}]],
)
def test_a_free_id_or_the_stacks_own_vm_passes_without_reading_the_state(vms: list[dict[str, Any]]) -> None:
    assert problems([VM], {"vm": vms}, OURS, never) == []


def test_a_vm_made_by_hand_is_refused_naming_id_node_name_and_the_way_out() -> None:
    (problem,) = problems([VM], {"vm": [{"vmid": 150, "name": "handmade", "node": "pve-node2", "tags": "backup"}]}, OURS, state({}))
    for part in ("vms[0].id 150 (app)", "VM 150 'handmade' on pve-node2", "no owner tag", "pulumi import", "another id"):
        assert part in problem


def test_another_stacks_vm_is_refused_naming_that_stack() -> None:
    (problem,) = problems([VM], {"vm": [{"vmid": 150, "name": "app", "node": "pve-node1", "tags": "pulumi-stack.pve-ceph-ha.prod"}]}, OURS, state({}))
    assert "belongs to stack pve-ceph-ha.prod" in problem


def test_objects_made_before_the_tags_or_imported_are_the_stacks_because_its_state_holds_them() -> None:
    vms = [{"vmid": 150, "name": "app", "node": "pve-node1"}, {"vmid": 151, "name": "imported", "node": "pve-node1", "tags": "pulumi-stack.x.y"}]
    resources = [{"sid": "vm:150", "comment": "managed by pve-ceph-ha"}]
    wanted = [VM, {"kind": "vm", "name": 151, "entry": "vms[1]"}, {"kind": "haresource", "name": "vm:150", "entry": "vms[0] HA"}]
    held = {("vm", "150"): "", ("vm", "151"): "pulumi-stack.x.y", ("haresource", "vm:150"): ""}
    assert problems(wanted, {"vm": vms, "haresource": resources}, OURS, state(held)) == []


def test_an_id_reused_after_a_deletion_outside_is_refused() -> None:
    (problem,) = problems([VM], {"vm": [{"vmid": 150, "name": "someone", "node": "pve-node3"}]}, OURS, state({("vm", "150"): OURS}))
    assert "deleted outside and the name reused" in problem


@pytest.mark.parametrize(
    ("kind", "name", "entry", "noun"),
    [
        ("haresource", "vm:150", {"sid": "vm:150", "comment": "mine"}, "HA resource vm:150"),
        ("hagroup", "prefer-node1", {"group": "prefer-node1"}, "HA group prefer-node1"),
        ("harule", "prefer-node1", {"rule": "prefer-node1", "comment": owned_comment("pulumi-stack.p.other")}, "HA rule prefer-node1"),
    ],
)
def test_ha_objects_of_the_same_name_are_refused_unless_the_stacks(kind: str, name: str, entry: dict[str, Any], noun: str) -> None:
    wanted = [{"kind": kind, "name": name, "entry": "ha.affinities[0].name"}]
    (problem,) = problems(wanted, {kind: [entry]}, OURS, state({}))
    assert problem.startswith(f"ha.affinities[0].name: {noun} is not this stack's") and "another name" in problem
    assert problems(wanted, {kind: [{**entry, "comment": owned_comment(OURS)}]}, OURS, never) == []


def test_the_state_is_read_once_for_all_objects() -> None:
    reads = []

    def held() -> dict[tuple[str, str], str]:
        reads.append(1)
        return {}

    vms = [{"vmid": 150, "name": "a", "node": "n"}, {"vmid": 151, "name": "b", "node": "n"}]
    assert len(problems([VM, {"kind": "vm", "name": 151, "entry": "vms[1]"}], {"vm": vms}, OURS, held)) == 2
    assert reads == [1]


def test_recorded_owners_reads_the_objects_of_an_export() -> None:
    export = {
        "deployment": {
            "resources": [
                {"type": "proxmoxve:index/vmLegacy:VmLegacy", "outputs": {"vmId": 101, "tags": [OURS]}},
                {"type": "proxmoxve:index/vmLegacy:VmLegacy", "outputs": {"vmId": 102, "tags": []}},
                {"type": "proxmoxve:index/haresource:Haresource", "outputs": {"resourceId": "vm:101", "comment": owned_comment(OURS)}},
                {"type": "proxmoxve:index/harule:Harule", "outputs": {"rule": "r1", "comment": "managed by pve-ceph-ha"}},
                {"type": "pulumi:providers:proxmoxve", "outputs": {"vmId": 103}},
            ]
        }
    }
    assert recorded_owners(export) == {("vm", "101"): OURS, ("vm", "102"): "", ("haresource", "vm:101"): OURS, ("harule", "r1"): ""}


def test_an_ha_api_this_pve_version_lacks_is_no_objects_of_that_kind() -> None:
    from proxmoxer.core import ResourceException  # type: ignore[import-untyped]

    from components.owners import not_on_this_version

    assert not_on_this_version(ResourceException(501, "Not Implemented", "Method 'GET /cluster/ha/rules' not implemented"))
    assert not_on_this_version(ResourceException(500, "Internal Server Error", "ha groups have been migrated to rules"))
    assert not not_on_this_version(ResourceException(403, "Forbidden", "Permission check failed (/, Sys.Audit)"))


class FakeApi:
    """`api(path).get()` answering GET /access/permissions with HELD."""

    def __init__(self, held: dict[str, dict[str, int]]) -> None:
        self.held = held

    def __call__(self, path: str) -> Any:
        assert path == "access/permissions", path
        return self

    def get(self, **_: Any) -> dict[str, dict[str, int]]:
        return self.held


RIGHTS = {
    "tokenId": "pulumi@pve!ha",
    "cephId": "pulumi",
    "storageId": "ceph-rbd",
    "vms": [{"id": 101, "name": "vm101", "bridge": "vmbr0", "iso": "", "ha": True}],
}


def documented_rights(drop: str = "") -> dict[str, dict[str, int]]:
    from components.pve_rights import ROLE_PRIVILEGES

    role = {p: 1 for p in ROLE_PRIVILEGES if p != drop}
    return {"/": {p: 0 for p in role}, "/storage": role, "/vms/101": role, "/sdn/zones/localnetwork/vmbr0": role}


def test_the_rights_check_names_what_is_missing_and_reads_only_what_a_refresh_needs() -> None:
    from components.owners import rights_problem
    from components.pve_rights import READ_PRIVILEGES

    assert rights_problem(FakeApi(documented_rights()), RIGHTS) is None
    problem = rights_problem(FakeApi(documented_rights("VM.Config.HWType")), RIGHTS)
    assert problem and "lacks VM.Config.HWType on /vms/101" in problem and "pveum role modify PulumiCephHA --append 1 --privs VM.Config.HWType" in problem
    # the refresh's Read checks only what reading needs: a missing write right waits for Check
    assert rights_problem(FakeApi(documented_rights("VM.Config.HWType")), RIGHTS, only=READ_PRIVILEGES) is None
    assert "lacks VM.Audit" in (rights_problem(FakeApi(documented_rights("VM.Audit")), RIGHTS, only=READ_PRIVILEGES) or "")


def test_the_refresh_leaves_the_rights_to_check_when_it_cannot_ask(monkeypatch: pytest.MonkeyPatch) -> None:
    from clients.pve import api as pve_api
    from components.errors import OperatorError
    from components.owners import OwnersInputs, OwnersProvider

    def unreachable(_: Any) -> Any:
        raise OperatorError("Proxmox VE API: no node of the cluster answers")

    monkeypatch.setattr(pve_api, "connect", unreachable)
    api = pve_api.api_props("https://127.10.20.11:8006", "pulumi@pve!ha=unused", True, None)
    props = {**OwnersInputs(api=api, owner=OURS, objects=[], stack="organization/pve-ceph-ha/Lab", workDir=".", rights=RIGHTS)}
    assert OwnersProvider().read("owners", props).outs == props
    monkeypatch.setattr(pve_api, "connect", lambda _: FakeApi(documented_rights("VM.Audit")))
    with pytest.raises(OperatorError, match="lacks VM.Audit on /vms/101"):
        OwnersProvider().read("owners", props)
