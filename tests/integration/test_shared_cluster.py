"""Issue #21: a shared cluster. The real engine, the real plugin, the real program on the lab.

The stack touches only what is its own: every VM it makes carries its owner tag from the create
call on, every HA object its comment; a VM id or HA name held by anything else stops `preview` and
`up` before any change (components/owners.py), and the plugin refuses such a VM on its own
(tools/proxmoxve/ownership.go), `destroy` included. Two stacks share the cluster: each its own
pool, client, storage and VMs, one scrub window (owned by the first), and destroying one leaves
the other whole.

Cases:
1. A VM made by hand at a configured id: preview and up refuse it, naming the id, the node, the
   VM's name and `pulumi import`; its config digest and its disk's bytes are unchanged, nothing of
   it is in the state or under HA. The plugin alone (a program without the check) refuses it too.
2. An id reused after a deletion outside: the stack's VM deleted through the API, another VM made
   at its id; preview and up refuse it ("deleted outside and the name reused"), and destroy
   leaves it alone.
3. An HA rule of the same name made by hand: refused, named.
4. Two stacks: B naming A's VM id is refused naming A's stack, before B creates anything; B with
   its own id comes up beside A (the scrub window read-only: A owns it); B's destroy leaves A
   whole: A previews 0 changes, verify passes on A, A's VM disk keeps its marker, the window and
   its owner stay.
5. A stack deployed before the owner tags (tests/integration/programs/before_owners): its first
   `up` with the program tags its VM and HA objects in place (nothing replaced), and claims the
   scrub window; the preview after it is clean.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

import lab
from components.ceph_scrub import OWNER_KEY
from components.owners import owner_tag
from lab.testing.engine import cli, engine_env
from lab.testing.seed import LabAccess
from lab.testing.shared import settled
from lab.testing.stack import PROGRAMS, LabStack, admin, api, base_config, changes, forget_stack, names, pool_exists, project_copy, storages
from lab.testing.vms import MARKER, DiskMarker

# needs the running lab and the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = [pytest.mark.lab, pytest.mark.engine]

A, B, OLD = "sca", "scb", "sco"
HAND, REUSED, SHARED_A, OWN_B, RULED, LEGACY = 520, 521, 522, 523, 524, 525
ALL_IDS = [HAND, REUSED, SHARED_A, OWN_B, RULED, LEGACY]
VM_TYPE = "proxmoxve:index/vmLegacy:VmLegacy"


def with_vms(prefix: str, *vms: dict[str, Any], affinities: list[dict[str, Any]] | None = None) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        names(prefix)(config)
        base = {k: v for k, v in base_config()["vms"][0].items() if k != "affinity"}
        config["vms"] = [{**base, "memoryMb": 256, **vm} for vm in vms]
        config["ha"] = {**config["ha"], "affinities": affinities or []}
        config["allowPoolDeletion"] = True  # each case leaves no pool behind (3 OSDs hold few)

    return edit


def vm(vmid: int, **extra: Any) -> dict[str, Any]:
    return {"id": vmid, "name": f"vm{vmid}", "node": "pve-node2", **extra}


@pytest.fixture(scope="module")
def access(lab_state: dict[str, Any]) -> Iterator[LabAccess]:
    for prefix in (A, B, OLD):
        forget_stack(prefix, ALL_IDS)
    settled()
    yield LabAccess(lab_state)
    for prefix in (A, B, OLD):
        forget_stack(prefix, ALL_IDS)


@pytest.fixture
def stacks(access: LabAccess, lab_state: dict[str, Any], tmp_path: Path) -> Iterator[Callable[..., LabStack]]:
    """Makes stacks; destroys and removes them afterwards (a stack that never came up is only removed)."""
    made: list[LabStack] = []

    def make(prefix: str, edit: Callable[[dict[str, Any]], None], **kwargs: Any) -> LabStack:
        forget_stack(prefix, [])
        made.append(LabStack(prefix, lab_state, tmp_path / prefix, edit, **kwargs))
        return made[-1]

    yield make
    for stack in reversed(made):
        try:
            stack.destroy()
        except auto.CommandError as error:
            print(f"\n  destroy of {stack.name} failed: {str(error)[-500:]}")
        finally:
            stack.remove()


def hand_made(access: LabAccess, vmid: int, storage: str | None = None, node: str = "pve-node1") -> dict[str, Any]:
    """A VM made through the API as a person makes it (no tag; a 1 GiB disk on STORAGE if given)."""
    body: dict[str, Any] = {"vmid": vmid, "name": f"hand{vmid}", "cores": 1, "memory": 256, "ostype": "l26", "tags": "backup"}
    if storage:
        body.update(scsihw="virtio-scsi-pci", scsi0=f"{storage}:1,cache=writeback,discard=on")
    access.wait_task(access.any_api().nodes(node).qemu.post(**body))
    return config_of(access, vmid)


def config_of(access: LabAccess, vmid: int) -> dict[str, Any]:
    node = access.vm_node(vmid)
    assert node is not None, f"VM {vmid} is gone"
    return dict(access.any_api().nodes(node).qemu(vmid).config.get())


def disk_digest(pool: str, vmid: int, mode: str = "read") -> str:
    return admin(f"/usr/bin/python3 -c '{MARKER}' {pool} vm-{vmid}-disk-0 {mode}").strip()


def refused(run: Callable[[], Any], *parts: str) -> str:
    with pytest.raises(auto.CommandError) as info:
        run()
    message = str(info.value)
    assert "Traceback" not in message, message[-3000:]
    for part in parts:
        assert part in message, f"{part!r} not in:\n{message[-3000:]}"
    said = next((line.strip() for line in message.splitlines() if "owners:" in line or "cannot create VM" in line), message[-300:])
    print(f"\n  refused: {said[:400]}")
    return message


def recorded_vms(stack: LabStack) -> list[int]:
    done = cli(stack.env, "stack", "export", "--stack", stack.name, cwd=stack.work)
    assert done.returncode == 0, done.stderr
    return sorted(int(r["id"]) for r in json.loads(done.stdout)["deployment"].get("resources") or [] if r["type"] == VM_TYPE)


def ha_sids() -> set[str]:
    return {r["sid"] for r in api().cluster.ha.resources.get()}


def scrub_owner() -> str:
    return admin(f"ceph config-key exists {OWNER_KEY} && ceph config-key get {OWNER_KEY} || true").strip()


# -- 1 --------------------------------------------------------------------------------------------


def test_a_vm_made_by_hand_at_a_configured_id_is_refused_and_left_as_it_is(
    stacks: Callable[..., LabStack], access: LabAccess, lab_state: dict[str, Any], tmp_path: Path
) -> None:
    stack = stacks(A, with_vms(A))
    stack.up()
    before = hand_made(access, HAND, storage=f"{A}-rbd")
    digest = disk_digest(f"{A}-pool", HAND, "write")
    try:
        stack.reconfigure(with_vms(A, vm(HAND, node="pve-node1")))
        parts = (f"vms[0].id {HAND} (vm{HAND})", f"VM {HAND} 'hand{HAND}' on pve-node1 is not this stack's", "no owner tag", "pulumi import")
        refused(stack.preview, *parts)
        refused(stack.up, *parts, "nothing was changed")
        assert config_of(access, HAND)["digest"] == before["digest"]
        assert disk_digest(f"{A}-pool", HAND) == digest
        assert f"vm:{HAND}" not in ha_sids() and recorded_vms(stack) == []

        # The plugin on its own: a program that declares the VM with the stack's tag, no check of its own.
        pve = lab_state["pve"]
        env = engine_env(tmp_path / "plain-state")
        env["SSL_CERT_FILE"] = pve["ca_bundle"]
        work = project_copy(tmp_path / "plain", PROGRAMS / "import_vm" / "__main__.py")
        settings = {"proxmoxve:endpoint": pve["endpoint"], "vmId": str(HAND), "node": "pve-node1", "storage": f"{A}-rbd"}
        assert cli(env, "stack", "init", "plain", cwd=work).returncode == 0
        for key, value in settings.items():
            assert cli(env, "config", "set", key, value, "--stack", "plain", cwd=work).returncode == 0
        assert (
            cli(env, "config", "set", "--secret", "proxmoxve:apiToken", f"{pve['token_id']}={pve['token_secret']}", "--stack", "plain", cwd=work).returncode
            == 0
        )
        assert cli(env, "config", "set", "--path", "tags[0]", owner_tag("pve-ceph-ha", "plain"), "--stack", "plain", cwd=work).returncode == 0
        done = cli(env, "up", "--yes", "--skip-preview", "--stack", "plain", cwd=work)
        text = done.stdout + done.stderr
        assert done.returncode != 0 and f"cannot create VM {HAND}" in text and "it is not this stack's" in text, text[-3000:]
        print(f"\n  the plugin alone: {next(line.strip() for line in text.splitlines() if 'cannot create VM' in line)[:300]}")
        cli(env, "stack", "rm", "--force", "--yes", "--stack", "plain", cwd=work)
        assert config_of(access, HAND)["digest"] == before["digest"]
        assert disk_digest(f"{A}-pool", HAND) == digest
    finally:
        from lab.testing.seed import remove_vm

        remove_vm(access, HAND)
        stack.reconfigure(with_vms(A))


# -- 2 --------------------------------------------------------------------------------------------


def test_an_id_reused_after_a_deletion_outside_is_refused_and_destroy_leaves_it(stacks: Callable[..., LabStack], access: LabAccess) -> None:
    from lab.testing.seed import remove_vm

    stack = stacks(A, with_vms(A, vm(REUSED)))
    stack.up()
    assert recorded_vms(stack) == [REUSED]
    remove_vm(access, REUSED)  # deleted outside the program
    before = hand_made(access, REUSED)  # and the id reused by someone else
    try:
        parts = (f"VM {REUSED} 'hand{REUSED}' on pve-node1 is not this stack's", "deleted outside and the name reused")
        refused(stack.preview, *parts)
        refused(stack.up, *parts)
        assert config_of(access, REUSED)["digest"] == before["digest"]
        destroyed = stack.destroy()
        assert destroyed.summary.result == "succeeded"
        assert access.vm_node(REUSED) is not None and config_of(access, REUSED)["digest"] == before["digest"]
        assert f"{A}-rbd" not in storages()
    finally:
        remove_vm(access, REUSED)


# -- 3 --------------------------------------------------------------------------------------------


def test_an_ha_rule_of_the_same_name_made_by_hand_is_refused(stacks: Callable[..., LabStack], access: LabAccess) -> None:
    rule = {"name": "sc-hand", "nodes": {"pve-node2": 1, "pve-node3": 1}, "strict": False, "failback": True}
    other = hand_made(access, RULED, node="pve-node3")  # a VM of someone else's, in a rule of theirs
    api().cluster.ha.resources.post(sid=f"vm:{RULED}", state="stopped")
    api().cluster.ha.rules.post(rule="sc-hand", type="node-affinity", resources=f"vm:{RULED}", nodes="pve-node3")
    try:
        stack = stacks(A, with_vms(A, vm(OWN_B, affinity="sc-hand"), affinities=[rule]))
        refused(stack.preview, "ha.affinities[0].name: HA rule sc-hand is not this stack's", "another name")
        rules = {r["rule"]: r for r in api().cluster.ha.rules.get()}
        assert rules["sc-hand"]["resources"] == f"vm:{RULED}" and access.vm_node(OWN_B) is None
        assert config_of(access, RULED)["digest"] == other["digest"]
    finally:
        from lab.testing.seed import remove_vm

        api().cluster.ha.rules("sc-hand").delete()
        remove_vm(access, RULED)


# -- 4 --------------------------------------------------------------------------------------------


def test_two_stacks_share_the_cluster_and_destroying_one_leaves_the_other_whole(stacks: Callable[..., LabStack], access: LabAccess) -> None:
    first = stacks(A, with_vms(A, vm(SHARED_A)))
    first.up()
    assert scrub_owner() == owner_tag("pve-ceph-ha", A)
    marker = DiskMarker(f"{A}-pool", SHARED_A)

    second = stacks(B, with_vms(B, vm(SHARED_A)))
    refused(second.up, f"VM {SHARED_A} 'vm{SHARED_A}' on pve-node2 is not this stack's", f"belongs to stack pve-ceph-ha.{A}", "nothing was changed")
    assert not pool_exists(f"{B}-pool") and f"{B}-rbd" not in storages()  # refused before B made anything

    second.reconfigure(with_vms(B, vm(OWN_B)))
    second.up()
    assert changes(second.preview().change_summary) == {}, second.text()[-3000:]
    assert scrub_owner() == owner_tag("pve-ceph-ha", A)  # B only reads the window
    assert second.destroy().summary.result == "succeeded"
    second.remove()

    assert changes(first.preview().change_summary) == {}, first.text()[-3000:]
    code, report, lines = first.verify()
    assert code == 0, lines
    assert marker.intact()
    assert scrub_owner() == owner_tag("pve-ceph-ha", A)
    assert admin("ceph config get osd osd_scrub_begin_hour").strip() == "22"


# -- 5 --------------------------------------------------------------------------------------------


def test_a_stack_from_before_the_tags_is_tagged_in_place_by_its_first_up(stacks: Callable[..., LabStack], access: LabAccess) -> None:
    old = stacks(OLD, with_vms(OLD, vm(LEGACY)), program=PROGRAMS / "before_owners" / "__main__.py")
    old.up()
    before = config_of(access, LEGACY)
    assert "pulumi-stack." not in str(before.get("tags", "")) and scrub_owner() == ""

    from lab.testing.engine import ROOT

    (old.work / "__main__.py").unlink()
    (old.work / "__main__.py").symlink_to(ROOT / "__main__.py")
    result = old.up()
    changed = changes(result.summary.resource_changes or {})
    assert set(changed) <= {"update", "create"} and changed.get("create", 0) == 1, changed  # the owners check is new
    after = config_of(access, LEGACY)
    assert owner_tag("pve-ceph-ha", OLD) in str(after.get("tags")) and after["smbios1"] == before["smbios1"]
    assert owner_tag("pve-ceph-ha", OLD) in next(r["comment"] for r in api().cluster.ha.resources.get() if r["sid"] == f"vm:{LEGACY}")
    assert scrub_owner() == owner_tag("pve-ceph-ha", OLD)
    assert changes(old.preview().change_summary) == {}, old.text()[-3000:]
    lab.load()  # the lab is still answering
