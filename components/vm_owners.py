"""Whose VM is at each id: checked before anything is changed, on every preview and up.

Every VM the program makes carries its stack's owner tag, ``pulumi-stack.<project>.<stack>``,
set in the create call itself (components/ha_vm.py). bpg's create treats PVE's "VM <id> already
exists" as done once its retry meets it (``CreateVM``, ``WithAlreadyDoneCheck``), so a VM at a
configured id that is not the stack's would be adopted, changed and, by a later destroy, deleted;
bpg #2925 (closed as wontfix) is the same danger after a VM was deleted outside and its id reused.
This check holds with the official plugin too; the plugin built here also checks each VM's
create, update, delete and read on its own (tools/proxmoxve/ownership.go), which covers
``pulumi destroy``, where the program does not run.

A VM at a configured id is the stack's when:
- it carries the stack's owner tag (made by the stack, an interrupted ``up``'s half-made VM
  included: the tag went in with the create call);
- or the stack's state holds a VM at that id recorded with the owner tag it carries now: a VM made
  before the tags existed (none recorded, none carried) or one the operator took over with
  ``pulumi import`` (README, "Sharing a cluster"). The state is read (``pulumi stack export``)
  only for a VM that does not carry the stack's tag.

Anything else (a VM made by hand, another stack's VM, an id reused after a deletion outside)
stops the run before any change, naming the id, the node, the VM's name and the way out.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

import pulumi
from pulumi.dynamic import CheckResult, CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from components.dynamic import OperatorError, checks_due, has_unknowns
from components.graph import child_options

ID = "vm-owners"
TAG_PREFIX = "pulumi-stack."  # tools/proxmoxve/ownership.go OwnerTagPrefix
VM_TYPE = "proxmoxve:index/vmLegacy:VmLegacy"


def owner_tag(project: str, stack: str) -> str:
    """The stack's owner tag (PVE tags: ``[a-z0-9_][a-z0-9_-+.]*``; Pulumi's names fit once lower-cased)."""
    return f"{TAG_PREFIX}{project}.{stack}".lower()


def owner_of(tags: Any) -> str:
    """The owner tag in TAGS (PVE's ``a;b`` string or a list), "" when none."""
    items = tags.replace(",", ";").split(";") if isinstance(tags, str) else list(tags or [])
    return next((t.strip().lower() for t in items if str(t).strip().lower().startswith(TAG_PREFIX)), "")


def recorded_owners(export: dict[str, Any]) -> dict[int, str]:
    """The VMs the state holds, by id: the owner tag each was recorded with ("" when none)."""
    out: dict[int, str] = {}
    for resource in (export.get("deployment") or {}).get("resources") or []:
        if resource.get("type") != VM_TYPE:
            continue
        outputs = resource.get("outputs") or {}
        vmid = outputs.get("vmId")
        if isinstance(vmid, int):
            out[vmid] = owner_of(outputs.get("tags"))
    return out


def problems(
    wanted: Sequence[dict[str, Any]], cluster: Sequence[dict[str, Any]], owner: str, state: Callable[[], dict[int, str]]
) -> list[str]:
    """What is wrong with the configured VMs (WANTED: id, name) against the cluster's VMs."""
    by_id = {int(vm["vmid"]): vm for vm in cluster if "vmid" in vm}
    held: dict[int, str] | None = None
    out = []
    for vm in wanted:
        found = by_id.get(int(vm["id"]))
        if found is None or owner_of(found.get("tags")) == owner:
            continue
        if held is None:
            held = state()
        carries = owner_of(found.get("tags"))
        if int(vm["id"]) in held and held[int(vm["id"])] == carries:
            continue  # made before the tags, or imported: the state is the stack's word
        whose = f"it belongs to stack {carries.removeprefix(TAG_PREFIX)} (tag {carries})" if carries else "it carries no owner tag (made by hand, or by another tool)"
        if int(vm["id"]) in held:
            whose += f"; this stack recorded {held[int(vm['id'])] or 'no tag'} for it: the stack's VM was deleted outside and its id reused"
        out.append(
            f"vms[] id {vm['id']} ({vm['name']}): VM {vm['id']} {found.get('name', '')!r} on {found.get('node', '?')} is not this stack's: {whose}. "
            f"Give the entry a free id, or take that VM over on purpose with `pulumi import` (README, Sharing a cluster)"
        )
    return out


def read_state(stack: str, work_dir: str) -> dict[int, str]:
    """The state's VMs and their recorded owner tags (``pulumi stack export``: no secret is decrypted)."""
    pulumi_bin = shutil.which("pulumi")
    if pulumi_bin is None:
        raise OperatorError("VM owners: the pulumi CLI is not on PATH, so the stack's state cannot be read; run through `pulumi` (tools/env.sh)")
    done = subprocess.run([pulumi_bin, "stack", "export", "--stack", stack, "--cwd", work_dir], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        if "no stack named" in done.stderr or "has no deployment" in done.stderr:
            return {}
        raise OperatorError(f"VM owners: reading the stack's state failed (pulumi stack export, exit {done.returncode}): {done.stderr.strip()[-300:]}")
    return recorded_owners(json.loads(done.stdout or "{}"))


class VmOwnersProvider(ResourceProvider):
    def run_check(self, props: dict[str, Any]) -> dict[str, Any]:
        wanted = props.get("vms") or []
        if wanted:
            from components.pve_api import api_errors, connect, reason

            try:
                cluster = connect(props["api"]).cluster.resources.get(type="vm")
            except api_errors() as exc:
                raise OperatorError(f"VM owners: GET /cluster/resources failed: {reason(exc)}") from None
            found = problems(wanted, cluster, props["owner"], lambda: read_state(props["stack"], props["workDir"]))
            if found:
                raise OperatorError("VM owners: " + "; ".join(found) + "; nothing was changed")
        # an output the inputs lack: a preview's or up's Diff (inputs against the recorded outputs)
        # differs, a refresh's (Read's outputs against the same) does not (checks_due)
        return {**props, "checked": [int(vm["id"]) for vm in wanted]}

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        if not olds and not has_unknowns(news):  # not created yet: a preview must evaluate it too
            self.run_check(news)
        return CheckResult(inputs=news, failures=[])

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=ID, outs=self.run_check(props))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)  # a check is not a state

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        if checks_due(olds, news):
            self.run_check(news)  # every preview and every up
        changed = [key for key in ("vms", "owner") if olds.get(key) != news.get(key)]
        return DiffResult(changes=bool(changed), replaces=[], stables=[])

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self.run_check(news))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        return  # nothing in the world to remove


class VmOwnersResource(Resource, module="pveceph", name="VmOwners"):
    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(VmOwnersProvider(), name, {"checked": None, **props}, pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["api"])))


class VmOwners(pulumi.ComponentResource):
    """Every configured VM id free, or holding the stack's own VM; before anything is changed."""

    def __init__(self, name: str, api: dict[str, Any], owner: str, vms: Sequence[dict[str, Any]], work_dir: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__("pveceph:proxmox:VmOwners", name, None, opts)
        stack = f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"
        props = {"api": api, "owner": owner, "vms": list(vms), "stack": stack, "workDir": work_dir}
        self.check = VmOwnersResource(f"{name}-check", props, child_options(self, opts))
        self.register_outputs({})
