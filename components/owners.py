"""Whose object is at each name the stack will create: checked before anything is changed, on
every preview and up.

Every VM the program makes carries its stack's owner tag, ``pulumi-stack.<project>.<stack>``,
set in the create call itself (components/ha_vm.py); every HA resource, group and rule carries it
in its comment. bpg's VM create treats PVE's "VM <id> already exists" as done once its retry meets
it (``CreateVM``, ``WithAlreadyDoneCheck``), so a VM at a configured id that is not the stack's
would be adopted, changed and, by a later destroy, deleted; bpg #2925 (closed as wontfix) is the
same danger after a VM was deleted outside and its id reused. This check holds with the official
plugin too; the plugin built here also checks each VM's create, update, delete and read on its own
(tools/proxmoxve/ownership.go), which covers ``pulumi destroy``, where the program does not run.

An object (a VM, an HA resource, an HA group or rule) at a name the stack declares is the stack's
when:
- it carries the stack's owner tag (made by the stack, an interrupted ``up``'s half-made VM
  included: the tag went in with the create call);
- or the stack's state holds it, recorded with the owner tag it carries now: an object made
  before the tags existed (none recorded, none carried) or one the operator took over with
  ``pulumi import`` (docs/operations.md, "Sharing a cluster"). The state is read (``pulumi stack export``)
  only when some object does not carry the stack's tag.

Anything else (made by hand, another stack's, an id reused after a deletion outside) stops the
run before any change, naming the object, where it is and the way out.

The same check holds the API token's rights against what the config needs (components/pve_rights.py,
``GET /access/permissions``, one call): a missing privilege stops the run before any change, naming
the privilege, the path, the calls that need it and the ``pveum`` command that grants it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast

import pulumi
from pulumi.dynamic import CheckResult, CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from components import pve_rights, vm_changes
from components.dynamic import has_unknowns
from components.errors import OperatorError, failed
from components.graph import child_options

if TYPE_CHECKING:  # the client is imported where it is called (the provider process)
    from clients.pve.api import ApiProps, PveApi

ID = "owners"
_SAID: set[str] = set()  # the VM change lines this provider process printed
TAG_PREFIX = "pulumi-stack."  # tools/proxmoxve/ownership.go OwnerTagPrefix


def owner_tag(project: str, stack: str) -> str:
    """The stack's owner tag (PVE tags: ``[a-z0-9_][a-z0-9_-+.]*``; Pulumi's names fit once lower-cased)."""
    return f"{TAG_PREFIX}{project}.{stack}".lower()


def owned_comment(owner: str) -> str:
    """The comment of the stack's HA resources, groups and rules."""
    return f"managed by pve-ceph-ha ({owner})" if owner else "managed by pve-ceph-ha"


def owner_of(marks: Any) -> str:
    """The owner tag in MARKS (a VM's tags, as PVE's ``a;b`` string or a list; an HA object's comment), "" when none."""
    items = marks.replace(",", ";").replace("(", " ").replace(")", " ").replace(" ", ";").split(";") if isinstance(marks, str) else list(marks or [])
    return next((str(t).strip().lower() for t in items if str(t).strip().lower().startswith(TAG_PREFIX)), "")


@dataclass(frozen=True)
class Kind:
    """A kind of object the check covers: where the cluster lists it, and how the state records it."""

    noun: str
    path: str  # the API's list, relative to /api2/json
    key: str  # the list entry's field that names the object
    marks: str  # the list entry's field that carries the owner tag
    state_type: str  # the resource type in the stack's state
    state_key: str  # its output that names the object
    state_marks: str  # its output that carries the owner tag

    def describe(self, name: str, entry: dict[str, Any]) -> str:
        if self.noun == "VM":
            return f"VM {name} {entry.get('name', '')!r} on {entry.get('node', '?')}"
        return f"{self.noun} {name}"


KINDS = {
    "vm": Kind("VM", "cluster/resources?type=vm", "vmid", "tags", "proxmoxve:index/vmLegacy:VmLegacy", "vmId", "tags"),
    "haresource": Kind("HA resource", "cluster/ha/resources", "sid", "comment", "proxmoxve:index/haresource:Haresource", "resourceId", "comment"),
    "hagroup": Kind("HA group", "cluster/ha/groups", "group", "comment", "proxmoxve:index/hagroup:Hagroup", "group", "comment"),
    "harule": Kind("HA rule", "cluster/ha/rules", "rule", "comment", "proxmoxve:index/harule:Harule", "rule", "comment"),
}


def plain(name: Any) -> str:
    """An object's name as text: 150, 150.0 (how the engine hands a dynamic provider a number) and "150" alike."""
    if isinstance(name, float) and name.is_integer():
        name = int(name)
    return str(name)


def recorded_owners(export: dict[str, Any]) -> dict[tuple[str, str], str]:
    """The objects the state holds, by (kind, name): the owner tag each was recorded with ("" when none)."""
    by_type = {kind.state_type: (name, kind) for name, kind in KINDS.items()}
    out: dict[tuple[str, str], str] = {}
    for resource in (export.get("deployment") or {}).get("resources") or []:
        if resource.get("type") not in by_type:
            continue
        name, kind = by_type[resource["type"]]
        outputs = resource.get("outputs") or {}
        if outputs.get(kind.state_key) not in (None, ""):
            out[(name, plain(outputs[kind.state_key]))] = owner_of(outputs.get(kind.state_marks))
    return out


def problems(
    wanted: Sequence[dict[str, Any]], cluster: dict[str, Sequence[dict[str, Any]]], owner: str, state: Callable[[], dict[tuple[str, str], str]]
) -> list[str]:
    """What is wrong with the objects the stack declares (WANTED: kind, name, entry: the config
    entry that declares it) against what the cluster has (CLUSTER: the API's list of each kind)."""
    held: dict[tuple[str, str], str] | None = None
    out = []
    for want in wanted:
        kind = KINDS[want["kind"]]
        name = plain(want["name"])
        found = next((e for e in cluster.get(want["kind"]) or [] if plain(e.get(kind.key)) == name), None)
        if found is None or owner_of(found.get(kind.marks)) == owner:
            continue
        if held is None:
            held = state()
        key = (want["kind"], name)
        carries = owner_of(found.get(kind.marks))
        if key in held and held[key] == carries:
            continue  # made before the tags, or imported: the state is the stack's word
        whose = (
            f"it belongs to stack {carries.removeprefix(TAG_PREFIX)} ({carries})" if carries else "it carries no owner tag (made by hand, or by another tool)"
        )
        if key in held:
            whose += f"; this stack recorded {held[key] or 'no tag'} for it: the stack's was deleted outside and the name reused"
        out.append(
            f"{want['entry']}: {kind.describe(name, found)} is not this stack's: {whose}. "
            f"Give the entry another {'id' if want['kind'] == 'vm' else 'name'}, or take it over on purpose with `pulumi import` (docs/operations.md, Sharing a cluster)"
        )
    return out


def template_problems(clones: Sequence[dict[str, Any]], vms: Sequence[dict[str, Any]], owner: str = "") -> list[str]:
    """Each clone's template (one the stack does not make) against the cluster's VMs (/cluster/resources):
    it must exist, be a template, be where the clone is told to find it, and not be one the stack
    made and no longer declares (the next up would delete it, which PVE refuses while a linked
    clone uses its base image: "base volume ... is still in use by linked cloned", PVE::Storage vdisk_free)."""
    out = []
    for clone in clones:
        template, key = plain(clone["template"]), clone["key"]
        found = next((vm for vm in vms if plain(vm.get("vmid")) == template), None)
        if found is None:
            out.append(
                f"{key}.template = {template}: the cluster has no VM {template} (or the token may not see it: PVETemplateUser on /vms/{template}); "
                "name an existing template, or one of templates"
            )
        elif str(found.get("template", 0)) not in ("1", "1.0", "True"):
            out.append(
                f"{key}.template = {template}: VM {template} {found.get('name', '')!r} on {found.get('node', '?')} is not a template "
                f"(a clone of a running VM copies a disk in use); name a template, or make this one with `qm template {template}`"
            )
        elif owner and owner_of(found.get("tags")) == owner:
            out.append(
                f"{key}.template = {template}: template {template} {found.get('name', '')!r} is this stack's and is no longer in templates, "
                "so this up would delete it while its clones use it; keep it in templates, or clone another template"
            )
        elif found.get("node") != (clone.get("node") or clone["vmNode"]):
            out.append(
                f"{key}.node = {clone.get('node') or '(not set)'}: template {template} is on {found.get('node')}, and PVE clones "
                f"a template on its own node; set {key}.node: {found.get('node')}"
            )
    return out


def read_state(stack: str, work_dir: str) -> dict[tuple[str, str], str]:
    """The state's objects and their recorded owner tags (``pulumi stack export``: no secret is decrypted)."""
    pulumi_bin = shutil.which("pulumi")
    if pulumi_bin is None:
        raise OperatorError("owners: the pulumi CLI is not on PATH, so the stack's state cannot be read; run through `pulumi` (tools/env.sh)")
    done = subprocess.run([pulumi_bin, "stack", "export", "--stack", stack, "--cwd", work_dir], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise OperatorError(f"owners: reading the stack's state failed (pulumi stack export, exit {done.returncode}): {done.stderr.strip()[-300:]}")
    return recorded_owners(json.loads(done.stdout or "{}"))


def not_on_this_version(exc: Exception) -> bool:
    """PVE 8 has no rules API (501, "Method ... not implemented"); PVE 9 refuses the groups API
    ("ha groups have been migrated to rules")."""
    text = f"{getattr(exc, 'status_code', '')} {getattr(exc, 'content', '')} {getattr(exc, 'errors', '')} {exc}"
    return getattr(exc, "status_code", None) == 501 or "not implemented" in text or "migrated to rules" in text


def rights_problem(api: PveApi, rights: dict[str, Any], only: tuple[str, ...] = ()) -> str | None:
    """The token's missing rights for RIGHTS (tokenId, storageId, vms), or None; ONLY: of these privileges."""
    from clients.pve.api import api_errors, reason

    try:
        effective = api("access/permissions").get()
    except api_errors() as exc:
        raise failed("rights: GET /access/permissions failed", reason(exc)) from None
    if not isinstance(effective, dict):
        return None  # not PVE's answer: the calls themselves will say
    vms = [pve_rights.VmRights.from_input(v) for v in rights.get("vms") or []]
    lacking = [
        n
        for n in pve_rights.missing(effective, pve_rights.needed(rights["storageId"], vms, bool(rights.get("clusterOptions"))))
        if not only or n.privilege in only
    ]
    if not lacking:
        return None
    return pve_rights.describe_missing(lacking, rights["tokenId"], effective)


class OwnersInputs(TypedDict):
    """The Owners resource's inputs: Owners writes them, OwnersProvider reads them, the tests build them.
    The keys are the state's: renaming one changes every deployed stack. (``checked`` is an output.)"""

    api: ApiProps  # the endpoint, its fallback nodes, the token (a secret)
    owner: str  # the stack's owner tag
    objects: list[dict[str, Any]]  # what the stack creates by name: {"kind", "name", "entry"} (components/stack.py declared_objects)
    stack: str  # org/project/stack, for `pulumi stack export`
    workDir: str
    rights: dict[str, Any] | None  # what the token's rights check needs (components/stack.py rights_input); None: not checked
    builds: NotRequired[list[dict[str, Any]]]  # each VM's build (components/vm_changes.py build_of): the next run's baseline
    clones: NotRequired[list[dict[str, Any]]]  # clones of templates the stack does not make: {"entry", "key", "template", "node", "vmNode"}


def owners_inputs(props: Mapping[str, Any]) -> OwnersInputs:
    """The typed view of a call's inputs: the SDK hands the provider the state's keys as a plain dict."""
    return cast(OwnersInputs, props)


class OwnersProvider(ResourceProvider):
    def run_check(self, props: OwnersInputs) -> dict[str, Any]:
        wanted = props.get("objects") or []
        rights = props.get("rights")
        if wanted or rights:
            from clients.pve.api import api_errors, connect, reason

            api = connect(props["api"])
            if rights:
                problem = rights_problem(api, rights)
                if problem:
                    raise OperatorError(f"rights: {problem}; nothing was changed")
            cluster: dict[str, Any] = {}
            for name in sorted({w["kind"] for w in wanted}):
                path, _, query = KINDS[name].path.partition("?")
                try:
                    cluster[name] = api(path).get(**dict([query.split("=")] if query else []))
                except api_errors() as exc:
                    if name in ("hagroup", "harule") and not_on_this_version(exc):
                        cluster[name] = []  # nothing of that kind can exist; the HA preflight names the version
                        continue
                    raise failed(f"owners: GET /{KINDS[name].path} failed", reason(exc)) from None
            found = problems(wanted, cluster, props["owner"], lambda: read_state(props["stack"], props["workDir"])) if wanted else []
            found += template_problems(props.get("clones") or [], cluster.get("vm") or [], props["owner"])
            if found:
                raise OperatorError("owners: " + "; ".join(found) + "; nothing was changed")
        return self.outputs(props)

    # The check runs in Check: the engine calls it with the program's inputs on every preview and
    # every up, never in a refresh (the refresh that starts `pulumi destroy` included: a destroy
    # removes only what the state holds, whoever holds the names now).
    def check(self, old: dict[str, Any], new: dict[str, Any]) -> CheckResult:
        if not has_unknowns(new):
            builds = owners_inputs(new).get("builds") or []
            refused = vm_changes.refusals(old.get("builds"), builds)
            if refused:
                raise OperatorError("VM changes: " + "; ".join(refused) + "; nothing was changed")
            self.run_check(owners_inputs(new))
            for line in vm_changes.effects(old.get("builds"), builds):
                if line not in _SAID:  # once a provider process: the engine asks for the check more than once
                    _SAID.add(line)
                    print(f"warning: {line}", file=sys.stderr, flush=True)
        return CheckResult(inputs=new, failures=[])

    @staticmethod
    def outputs(props: OwnersInputs) -> dict[str, Any]:
        return {**props, "checked": len(props.get("objects") or [])}

    def create(self, raw: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=ID, outs=self.outputs(owners_inputs(raw)))

    def read(self, id_: str, raw: dict[str, Any]) -> ReadResult:
        props = owners_inputs(raw)
        # A check is not a state. A refresh reads the stack's objects before Check runs; a token
        # that may not read them fails the refresh with PVE's 403, so the privileges reads need
        # are checked here too, naming the `pveum` command (the others wait for Check: a refresh
        # that starts `pulumi destroy` must not need them).
        # Best effort: the state's outputs may be an older program's (an `api` without the nodes to
        # fall back on) and a node may be down; a refresh that cannot ask leaves it to Check.
        rights = props.get("rights")
        if rights and props.get("api"):
            from clients.pve.api import connect

            try:
                problem = rights_problem(connect(props["api"]), rights, only=pve_rights.READ_PRIVILEGES)
            except OperatorError:
                problem = None
            if problem:
                raise OperatorError(f"rights: {problem}; nothing was changed")
        return ReadResult(id_=id_, outs=raw)

    def diff(self, id_: str, old: dict[str, Any], new: dict[str, Any]) -> DiffResult:
        olds, news = owners_inputs(old), owners_inputs(new)
        changed = [key for key in ("objects", "owner", "builds", "clones") if olds.get(key) != news.get(key)]
        return DiffResult(changes=bool(changed), replaces=[], stables=[])

    def update(self, id_: str, old: dict[str, Any], new: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self.outputs(owners_inputs(new)))

    def delete(self, id_: str, raw: dict[str, Any]) -> None:
        return  # nothing in the world to remove


class OwnersResource(Resource, module="pveceph", name="Owners"):
    def __init__(self, name: str, props: OwnersInputs, opts: pulumi.ResourceOptions | None = None):
        secret = pulumi.ResourceOptions(additional_secret_outputs=["api"])
        super().__init__(OwnersProvider(), name, {"checked": None, **props}, pulumi.ResourceOptions.merge(opts, secret))


class Owners(pulumi.ComponentResource):
    """Every VM id and HA name the stack declares free, or holding the stack's own; before anything is changed."""

    def __init__(
        self,
        name: str,
        api: ApiProps,
        owner: str,
        objects: Sequence[dict[str, Any]],
        work_dir: str,
        rights: dict[str, Any] | None = None,
        builds: Sequence[dict[str, Any]] = (),
        clones: Sequence[dict[str, Any]] = (),
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("pveceph:proxmox:Owners", name, None, opts)
        stack = f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"
        props = OwnersInputs(
            api=api, owner=owner, objects=list(objects), stack=stack, workDir=work_dir, rights=rights, builds=list(builds), clones=list(clones)
        )
        self.check = OwnersResource(f"{name}-check", props, child_options(self, opts))
        self.register_outputs({})
