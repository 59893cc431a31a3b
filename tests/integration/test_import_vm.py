"""Adoption of a VM made by hand: ``pulumi import`` of a ``VmLegacy`` through the real engine and the
real plugin, from the lab's PVE API.

VM 410 is made through the API as an operator makes it by hand (runbook 3-1: scsi0 on the RBD
storage, VirtIO SCSI, cache writeback, discard on, VirtIO net) and started. Then:

1. ``pulumi import proxmoxve:index/vmLegacy:VmLegacy vm410 pve-node1/410`` (bpg's importer takes
   ``<node>/<vmid>``) into a stack whose program declares a matching VmLegacy
   (programs/import_vm): the import reads the VM as it is, and the preview after it names exactly
   the properties the program would still change.
2. Into the stack of the real program: the VM added to ``vms`` and imported under the program's
   own names (an import file: the ``HaVm`` component and the VM, with the stack's provider); the
   next ``up`` changes the VM in place (never re-created: the same disk, the same SMBIOS uuid),
   restarting it once, and registers its HA resource; after it, preview shows 0 changes; destroy
   removes it.

The plain import prints the code that declares the VM (the project's language host implements
GenerateProgram); the import file into the program's stack skips it (``--generate-code=false``):
the program already declares the VM.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.pve.control import Control
from lab.testing.engine import cli, engine_env
from lab.testing.seed import LabAccess, remove_vm
from lab.testing.shared import own_corner, plan, unmodelled
from lab.testing.stack import PROGRAMS, LabStack, admin, changes, names, project_copy, remember_key
from lab.testing.steps import run_steps

# needs the running lab and the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = [pytest.mark.lab, pytest.mark.engine]

PREFIX = "imp"
POOL, STORAGE = f"{PREFIX}-pool", f"{PREFIX}-rbd"
VMID, NODE = 410, "pve-node1"
VM_TYPE = "proxmoxve:index/vmLegacy:VmLegacy"
IMPORT_PROGRAM = PROGRAMS / "import_vm" / "__main__.py"

# What the preview after the import still proposes for the VM made by hand, the program declaring
# it as components/ha_vm.py does: the provider's defaults for blocks the VM made by hand does not
# have (bpg writes `serial0: socket`, an empty CD drive `ide3: cdrom,media=cdrom` and
# `agent: enabled=0`; its watchdog is off, so nothing), memory (512 MiB, bpg's default, which the
# import leaves out; the update writes `balloon: 0`) and stopOnDestroy (a provider setting, not in
# PVE). The next up applies them in place; serial0 and ide3 need a restart of a running VM.
PLAIN_DIFFS = ["agent", "cdrom", "memory", "serialDevices", "stopOnDestroy", "watchdog"]


def stack_config(config: dict[str, Any]) -> None:
    names(PREFIX)(config)
    config["vms"] = []
    config["allowPoolDeletion"] = True  # the test leaves no pool behind


def adopted(config: dict[str, Any]) -> None:
    """The VM made by hand, as an entry of ``vms`` (what the operator adds before the import)."""
    config["vms"] = [{"id": VMID, "name": f"vm{VMID}", "node": NODE, "cores": 1, "memoryMb": 512, "diskGb": 1}]


@pytest.fixture(scope="module")
def lab(lab_state: dict[str, Any]) -> Iterator[LabAccess]:
    with own_corner(lab_state, PREFIX, [VMID]) as access:
        yield access


@pytest.fixture(scope="module")
def program_stack(lab: LabAccess, lab_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabStack]:
    """The real program's stack with no VM yet: its pool, client and RBD storage."""
    stack = LabStack(PREFIX, lab_state, tmp_path_factory.mktemp("imp"), stack_config)
    try:
        assert stack.up().summary.result == "succeeded", stack.text()[-3000:]
        yield stack
    finally:
        stack.retire(PREFIX)


@pytest.fixture(scope="module")
def hand_made(program_stack: LabStack, lab: LabAccess) -> Iterator[dict[str, Any]]:
    """VM 410 made through the API on the stack's RBD storage, as runbook 3-1 says, and started."""
    api = lab.any_api()
    lab.wait_task(
        api.nodes(NODE).qemu.post(
            vmid=VMID,
            name=f"vm{VMID}",
            cores=1,
            memory=512,
            cpu="x86-64-v2-AES",
            ostype="l26",
            onboot=1,
            scsihw="virtio-scsi-pci",
            scsi0=f"{STORAGE}:1,cache=writeback,discard=on",
            net0="virtio,bridge=vmbr0",
        )
    )
    lab.wait_task(api.nodes(NODE).qemu(VMID).status.start.post())
    yield dict(api.nodes(NODE).qemu(VMID).config.get())
    remove_vm(lab, VMID)  # when the stack did not adopt it (a failed test), the stack's destroy would refuse to delete its pool


def vm_config(lab: LabAccess) -> dict[str, Any]:
    node = lab.vm_node(VMID)
    assert node is not None, f"VM {VMID} is gone"
    return dict(lab.any_api().nodes(node).qemu(VMID).config.get())


def state_resources(env: dict[str, str], work: Path, stack: str) -> list[dict[str, Any]]:
    done = cli(env, "stack", "export", "--stack", stack, cwd=work)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout)["deployment"]["resources"])


# -- 1. `pulumi import <type> <name> <node>/<vmid>` into a program that declares the VM -----------


def import_reads_the_vm_made_by_hand_and_names_what_the_program_would_change(
    hand_made: dict[str, Any], lab: LabAccess, lab_state: dict[str, Any], tmp_path: Path
) -> None:
    pve = lab_state["pve"]
    env = engine_env(tmp_path / "state")  # a backend of its own: this stack is not the program's
    env["SSL_CERT_FILE"] = pve["ca_bundle"]
    work = project_copy(tmp_path / "project", IMPORT_PROGRAM)
    for args in (
        ("stack", "init", "plain"),
        ("config", "set", "proxmoxve:endpoint", pve["endpoint"]),
        ("config", "set", "--secret", "proxmoxve:apiToken", f"{pve['token_id']}={pve['token_secret']}"),
        ("config", "set", "vmId", str(VMID)),
        ("config", "set", "node", NODE),
        ("config", "set", "storage", STORAGE),
    ):
        done = cli(env, *args, "--stack", "plain", cwd=work) if args[0] == "config" else cli(env, *args, cwd=work)
        assert done.returncode == 0, done.stdout + done.stderr
    t0 = time.time()
    try:
        # The plain form, as an operator types it: the project's language host generates the code
        # that declares the VM (GenerateProgram, tools/langhost/generate.go).
        done = cli(env, "import", VM_TYPE, f"vm{VMID}", f"{NODE}/{VMID}", "--yes", "--protect=false", "--stack", "plain", cwd=work)
        assert done.returncode == 0, done.stdout + done.stderr
        code = done.stdout
        for part in (f'vm{VMID} = proxmoxve.VmLegacy("vm{VMID}"', f'node_name="{NODE}"', f"vm_id={VMID}", f'"datastore_id": "{STORAGE}"'):
            assert part in code, code[-3000:]
        compile(code[code.index("import pulumi") :], "generated.py", "exec")  # the code it prints is Python
        vm = next(r for r in state_resources(env, work, "plain") if r["type"] == VM_TYPE)
        inputs = vm["inputs"]
        assert vm["id"] == str(VMID)
        assert (inputs["nodeName"], inputs["vmId"], inputs["name"]) == (NODE, VMID, f"vm{VMID}")
        disk = inputs["disks"][0]
        assert (disk["interface"], disk["datastoreId"], disk["size"], disk["cache"], disk["discard"]) == ("scsi0", STORAGE, 1, "writeback", "on")
        assert inputs["cpu"]["type"] == "x86-64-v2-AES"
        steps = plan(env, work, "plain")
        assert [(s["op"], s["type"]) for s in steps] == [("update", VM_TYPE)], steps
        print(f"\n  preview after the import: {steps[0]['detailed']}")
        assert steps[0]["diffs"] == PLAIN_DIFFS, steps
        assert unmodelled(t0, [f"/{VMID}", STORAGE]) == []
    finally:
        # the plain stack lets the VM go without deleting it: the real program adopts it next
        cli(env, "state", "delete", "--force", "--yes", "--stack", "plain", f"urn:pulumi:plain::pve-ceph-ha::{VM_TYPE}::vm{VMID}", cwd=work)
        cli(env, "stack", "rm", "--force", "--yes", "--stack", "plain", cwd=work)
    assert vm_config(lab)["smbios1"] == hand_made["smbios1"]  # the preview changed nothing


# -- 2. into the real program's stack, under the program's own names -----------------------------


def import_file(resources: list[dict[str, Any]], where: Path) -> Path:
    """The HaVm component (created) and the VM (read from PVE), parented and provided as the program
    does: the file docs/operations.md shows, for this stack (URNs as `pulumi stack --show-urns` prints them)."""
    top = next(r["urn"] for r in resources if r["type"] == "pveceph:index:PveCephHa")
    provider = next(r["urn"] for r in resources if r["type"] == "pulumi:providers:proxmoxve")
    assert (top, provider) == (
        f"urn:pulumi:{PREFIX}::pve-ceph-ha::pveceph:index:PveCephHa::{PREFIX}",
        f"urn:pulumi:{PREFIX}::pve-ceph-ha::pveceph:index:PveCephHa$pulumi:providers:proxmoxve::{PREFIX}-pve",
    )
    spec = {
        "nameTable": {"top": top, "pve": provider},
        "resources": [
            {"type": "pveceph:proxmox:HaVm", "name": f"{PREFIX}-vm{VMID}", "component": True, "parent": "top"},
            {"type": VM_TYPE, "name": f"{PREFIX}-vm{VMID}-vm", "id": f"{NODE}/{VMID}", "parent": f"{PREFIX}-vm{VMID}", "provider": "pve"},
        ],
    }
    where.write_text(json.dumps(spec, indent=2))
    return where


def imported_under_the_programs_names_the_vm_needs_an_update_in_place_and_its_ha_resource(
    program_stack: LabStack, hand_made: dict[str, Any], tmp_path: Path
) -> None:
    stack, env, work = program_stack, program_stack.env, program_stack.work
    adopt = import_file(state_resources(env, work, PREFIX), tmp_path / "adopt.json")
    done = cli(env, "import", "--file", str(adopt), "--yes", "--protect=false", "--generate-code=false", "--stack", PREFIX, cwd=work)
    assert done.returncode == 0, done.stdout + done.stderr
    stack.reconfigure(adopted)
    steps = {(s["op"], s["type"]): s["diffs"] for s in plan(env, work, PREFIX)}
    assert steps == {
        # the same as with the plain program, and the stack's owner tag: no replacement
        ("update", VM_TYPE): sorted([*PLAIN_DIFFS, "tags"]),
        ("create", "proxmoxve:index/haresource:Haresource"): [],  # vm:410 under HA (runbook 5)
        ("update", "pulumi-python:dynamic/pveceph:VmImages"): [],  # `rbd ls` now names its disk
        ("update", "pulumi-python:dynamic/pveceph:Owners"): [],  # the check now covers VM 410 and vm:410
    }, steps


def the_first_up_keeps_the_vm_and_its_disk_and_restarts_it_once(program_stack: LabStack, hand_made: dict[str, Any], lab: LabAccess) -> None:
    t0, tasks_before = time.time(), len(Control().tasks(VMID))
    up = program_stack.up()
    assert up.summary.result == "succeeded", program_stack.text()[-3000:]
    after = vm_config(lab)
    assert (after["smbios1"], after["vmgenid"]) == (hand_made["smbios1"], hand_made["vmgenid"])  # the same VM, not a new one
    assert after["scsi0"].split(",")[0] == hand_made["scsi0"].split(",")[0] == f"{STORAGE}:vm-{VMID}-disk-0"  # the same disk
    added = sorted(k for k in after if k not in hand_made)
    assert added == ["agent", "balloon", "ide3", "serial0", "tags"], added  # the provider's defaults and the stack's owner tag, written by the update
    # A change that needs a restart on a running VM: bpg stops it (no guest agent: a hard stop) and starts it again.
    assert [t["type"] for t in Control().tasks(VMID)[tasks_before:]] == ["qmstop", "qmstart"]
    assert f"vm:{VMID}" in [r["sid"] for r in lab.any_api().cluster.ha.resources.get()]
    assert up.outputs["vms"].value == [{"id": VMID, "name": f"vm{VMID}", "initialNode": NODE, "haSid": f"vm:{VMID}", "images": [f"{POOL}/vm-{VMID}-disk-0"]}]
    assert unmodelled(t0, [f"/{VMID}", STORAGE, f"vm:{VMID}"]) == []


def preview_after_the_adoption_shows_no_change(program_stack: LabStack) -> None:
    assert changes(program_stack.preview().change_summary) == {}, program_stack.text()[-3000:]


def destroy_removes_the_adopted_vm_its_disk_and_its_ha_resource(program_stack: LabStack, lab: LabAccess) -> None:
    remember_key(PREFIX)  # for the secrets audit: the destroy deletes the client
    assert program_stack.destroy().summary.result == "succeeded"
    assert lab.vm_node(VMID) is None
    assert f"vm:{VMID}" not in [r["sid"] for r in lab.any_api().cluster.ha.resources.get()]
    assert POOL not in admin("ceph osd pool ls").split()  # allowPoolDeletion: only once its images are gone


def test_a_vm_made_by_hand_imported_then_adopted_then_destroyed(
    program_stack: LabStack, hand_made: dict[str, Any], lab: LabAccess, lab_state: dict[str, Any], tmp_path: Path
) -> None:
    """The import's whole course, each step starting where the one before left it (lab/testing/steps.py)."""
    run_steps(
        [
            import_reads_the_vm_made_by_hand_and_names_what_the_program_would_change,
            imported_under_the_programs_names_the_vm_needs_an_update_in_place_and_its_ha_resource,
            the_first_up_keeps_the_vm_and_its_disk_and_restarts_it_once,
            preview_after_the_adoption_shows_no_change,
            destroy_removes_the_adopted_vm_its_disk_and_its_ha_resource,
        ],
        program_stack=program_stack,
        hand_made=hand_made,
        lab=lab,
        lab_state=lab_state,
        tmp_path=tmp_path,
    )
