"""The PVE rights the program needs, checked before anything is changed, and the ``pveum``
commands that grant them (docs/permissions.md).

One role, ``PulumiCephHA``, holds every privilege the program's API calls need (:data:`ROLE_PRIVILEGES`,
each with the calls that need it, from PVE's API schema and qemu-server's checks). It is granted
to the stack's user and its privilege-separated token (a token holds what both it and its user
hold) on four paths:

- ``/``, not propagated: ``Sys.Audit`` (HA status and lists) and ``Sys.Console`` (every write to
  ``/cluster/ha/...``: PVE checks HA resources, groups and rules on ``/`` itself);
- ``/storage``, propagated: PVE checks a new storage definition and its deletion on ``/storage``
  itself (``Datastore.Allocate``), and drops ``/storage/<id>`` ACLs when the definition is deleted;
- ``/vms/<id>`` for each VM of the stack; PVE drops a VM's ACL when the VM is destroyed, so it is
  granted again before the VM is made again. ``/vms``, propagated, is the per-cluster form
  (:data:`CLUSTER_WIDE`): every VM, for a team whose VMs come and go (the lab's token has it);
- ``/sdn/zones/localnetwork/<bridge>`` for each bridge the VMs use (``SDN.Use``, PVE 8+), or
  ``/sdn/zones/localnetwork``, propagated, for every bridge.

:func:`needed` lists the (privilege, path) pairs a stack's config needs; :func:`missing` holds
them against the token's effective permissions (``GET /access/permissions``: path -> privilege ->
propagate flag, for ``/``, the top-level paths and every path with an ACL); :func:`excess` lists
what the token holds beyond the role on its paths (verify warns of it). Pure: no pulumi, no I/O.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

ROLE = "PulumiCephHA"  # PVE refuses role ids in its own namespace: "PVE..." (API2/Role.pm create_role)

# privilege -> the calls that need it (what the rights check names when it is missing)
ROLE_PRIVILEGES: dict[str, str] = {
    "Sys.Audit": "GET /cluster/ha/resources, /cluster/ha/groups and /cluster/ha/rules (the owner check, the HA resources' reads)",
    "Sys.Console": "POST, PUT and DELETE /cluster/ha/resources, /cluster/ha/groups and /cluster/ha/rules",
    "Datastore.Allocate": "POST /storage and DELETE /storage/{storage} (checked on /storage), GET and PUT /storage/{storage}",
    "Datastore.AllocateSpace": "POST /nodes/{node}/qemu (the VM's disk; its ISO), GET /nodes/{node}/storage/{storage}/status",
    "VM.Allocate": "POST /nodes/{node}/qemu and DELETE /nodes/{node}/qemu/{vmid}",
    "VM.Audit": "GET /nodes/{node}/qemu/{vmid}/config and /status/current, the VM in /cluster/resources",
    "VM.PowerMgmt": "POST /nodes/{node}/qemu/{vmid}/status/start and /status/stop",
    "VM.Config.CPU": "POST /nodes/{node}/qemu and PUT .../config: cores, sockets, cpu, numa",
    "VM.Config.Memory": "POST /nodes/{node}/qemu and PUT .../config: memory, balloon",
    "VM.Config.Disk": "POST /nodes/{node}/qemu and PUT .../config: boot, the disk",
    "VM.Config.CDROM": "PUT /nodes/{node}/qemu/{vmid}/config: ide2 (the VM's ISO)",
    "VM.Config.Network": "POST /nodes/{node}/qemu and PUT .../config: net0",
    "VM.Config.Options": "POST /nodes/{node}/qemu and PUT .../config: name, onboot, ostype, agent, bios, tags, protection",
    "VM.Config.HWType": "POST /nodes/{node}/qemu and PUT .../config: acpi, scsihw, tablet, vga, smbios1",
    "SDN.Use": "POST /nodes/{node}/qemu and PUT .../config: net0's bridge (PVE 8+, on /sdn/zones/localnetwork/<bridge>)",
}
VM_PRIVILEGES = tuple(p for p in ROLE_PRIVILEGES if p.startswith("VM."))
HA_PRIVILEGES = ("Sys.Audit", "Sys.Console")
STORAGE_PRIVILEGES = ("Datastore.Allocate", "Datastore.AllocateSpace")


@dataclass(frozen=True)
class Acl:
    """One ACL of the documented set: the role on PATH for the user and its token."""

    path: str
    propagate: bool
    why: str

    def command(self, token_id: str) -> str:
        user = token_id.split("!")[0]
        return f"pveum acl modify {self.path} --users {user} --tokens {shlex.quote(token_id)} --roles {ROLE}" + ("" if self.propagate else " --propagate 0")


@dataclass(frozen=True)
class Need:
    """A privilege (or any one of ALTERNATIVES) the program needs on PATH, and the ACL that grants it."""

    privilege: str
    path: str
    acl: Acl
    what: str  # the config entry that needs it
    alternatives: tuple[str, ...] = ()


def bridge_path(bridge: str) -> str:
    return f"/sdn/zones/localnetwork/{bridge}"


@dataclass(frozen=True)
class VmRights:
    """What the rights of one VM depend on (config.VmSpec's fields)."""

    id: int
    name: str
    bridge: str
    iso: str | None
    ha: bool


def acls(storage_id: str, vms: Sequence[VmRights]) -> list[Acl]:
    """The documented ACLs for a stack's config, narrowest first where PVE allows it."""
    out = [
        Acl("/", False, "Sys.Audit and Sys.Console: PVE checks the HA API on / itself"),
        Acl("/storage", True, f"Datastore.*: a storage is created and deleted with rights on /storage itself ({storage_id} and the ISOs' storages below it)"),
    ]
    out += [Acl(f"/vms/{vm.id}", True, f"VM.*: {vm.name} (PVE drops this ACL when the VM is destroyed)") for vm in vms]
    out += [Acl(bridge_path(b), True, "SDN.Use: the VMs' bridge") for b in sorted({vm.bridge for vm in vms})]
    return out


def needed(storage_id: str, vms: Sequence[VmRights]) -> list[Need]:
    """Every (privilege, path) the config's calls need, with the ACL that grants it."""
    by_path = {a.path: a for a in acls(storage_id, vms)}
    root, storages = by_path["/"], by_path["/storage"]
    out: list[Need] = []
    if any(vm.ha for vm in vms):
        out += [Need(p, "/", root, "the HA resources") for p in HA_PRIVILEGES]
    out.append(Need("Datastore.Allocate", "/storage", storages, f"storage.id {storage_id} (create, delete)"))
    out += [Need(p, f"/storage/{storage_id}", storages, f"storage.id {storage_id}") for p in STORAGE_PRIVILEGES]
    for i, vm in enumerate(vms):
        entry = f"vms[{i}] ({vm.name})"
        acl = by_path[f"/vms/{vm.id}"]
        out += [Need(p, f"/vms/{vm.id}", acl, entry) for p in VM_PRIVILEGES]
        if vm.iso:
            iso_storage = vm.iso.split(":", 1)[0]
            out.append(Need("Datastore.AllocateSpace", f"/storage/{iso_storage}", storages, f"{entry}.iso {vm.iso}", ("Datastore.Audit",)))
        out.append(Need("SDN.Use", bridge_path(vm.bridge), by_path[bridge_path(vm.bridge)], f"{entry}.bridge {vm.bridge}"))
    return out


Effective = Mapping[str, Mapping[str, object]]  # path -> privilege -> propagate flag


def held(effective: Effective, path: str, privilege: str) -> bool:
    """Whether the token holds PRIVILEGE on PATH: the path's own entry, else the nearest ancestor
    listed, if it propagates there. (GET /access/permissions lists `/`, the top-level paths and every
    path with an ACL; a path listed with nothing held is left out, so a NoAccess ACL on a leaf is
    seen only by the call itself, which PVE refuses.)"""
    if path in effective:
        return privilege in effective[path]
    parts = path.rstrip("/").split("/")
    while len(parts) > 1:
        parts.pop()
        ancestor = "/".join(parts) or "/"
        if ancestor in effective:
            flag = effective[ancestor].get(privilege)
            return bool(flag) and str(flag) not in ("0", "False")
    return False


def grant_command(need: Need, token_id: str, effective: Effective) -> str:
    """The command that grants NEED: the role lacks the privilege when the token holds some of the
    role's other privileges on the path; otherwise the ACL is missing."""
    others = [p for p in ROLE_PRIVILEGES if p != need.privilege and held(effective, need.path, p)]
    if others:
        return f"pveum role modify {ROLE} --append 1 --privs {need.privilege}"
    return need.acl.command(token_id)


REFUSED = re.compile(r"Permission check failed \((/[^,)]*), ([A-Za-z.|]+)\)")
# What a refresh reads (the HA resources, the VMs, the storage's definition): without them the
# refresh itself is refused, before the program's Check runs.
READ_PRIVILEGES = ("Sys.Audit", "VM.Audit", "Datastore.Allocate")


def refused_hint(message: str) -> str:
    """For PVE's 403 `Permission check failed (<path>, <privilege>)`: the command that grants it."""
    found = REFUSED.search(message)
    if not found:
        return ""
    path, privilege = found.group(1), found.group(2).split("|")[0]
    if privilege not in ROLE_PRIVILEGES:
        return f" (the role {ROLE} does not grant {privilege}: docs/permissions.md)"
    return f"; grant it: pveum role modify {ROLE} --append 1 --privs {privilege}, or the ACL on {path} (docs/permissions.md)"


def missing(effective: Effective, needs: Iterable[Need]) -> list[Need]:
    return [n for n in needs if not any(held(effective, n.path, p) for p in (n.privilege, *n.alternatives))]


def describe_missing(lacking: Sequence[Need], token_id: str, effective: Effective) -> str:
    """One line per missing privilege: the privilege and path, the calls that need it, the config
    entry, the command that grants it."""
    lines = []
    for need in lacking:
        either = " (or " + " or ".join(need.alternatives) + ")" if need.alternatives else ""
        lines.append(
            f"the API token {token_id} lacks {need.privilege}{either} on {need.path} for {need.what}, "
            f"needed by {ROLE_PRIVILEGES[need.privilege]}; grant it: {grant_command(need, token_id, effective)}"
        )
    return "; ".join(lines)


# The per-cluster forms of the narrow ACLs (docs/permissions.md): every VM, every local bridge.
CLUSTER_WIDE = ("/vms", "/sdn/zones/localnetwork")


def excess(effective: Effective, storage_id: str, vms: Sequence[VmRights]) -> list[str]:
    """What the token holds beyond the role on the documented paths ("Sys.Modify on /"), for verify's warning."""
    documented = {a.path for a in acls(storage_id, vms)} | set(CLUSTER_WIDE)

    def covered(path: str) -> bool:
        return path in documented or any(path.startswith(d + "/") for d in documented if d != "/")

    out = []
    for path in sorted(effective):
        privileges = effective[path]
        if not covered(path):
            out += [f"{p} on {path}" for p in sorted(privileges)]
            continue
        out += [f"{p} on {path}" for p in sorted(privileges) if p not in ROLE_PRIVILEGES]
        if path == "/":
            out += [f"{p} on / propagated to every path" for p in sorted(privileges) if p in ROLE_PRIVILEGES and str(privileges[p]) not in ("0", "False")]
    return out


# The rights that matter most when a token has too many: named first.
WEIGHTY = ("Permissions.Modify", "Sys.Modify", "Sys.PowerMgmt", "User.Modify", "Realm.Allocate", "Realm.AllocateUser", "Sys.Console", "VM.Allocate")


def describe_excess(extra: Sequence[str], token_id: str) -> str:
    """EXCESS's findings ("<privilege> on <path>") as one sentence, by path ("/" first), the weightiest privileges first."""
    by_path: dict[str, list[str]] = {}
    for item in extra:
        privilege, _, path = item.partition(" on ")
        by_path.setdefault(path, []).append(privilege)
    parts = []
    for path in sorted(by_path, key=lambda p: (p != "/" and not p.startswith("/ "), p)):
        privileges = sorted(by_path[path], key=lambda p: (WEIGHTY.index(p) if p in WEIGHTY else len(WEIGHTY), p))
        shown = ", ".join(privileges[:5]) + (f" and {len(privileges) - 5} more" if len(privileges) > 5 else "")
        parts.append(f"{shown} on {path}")
    return f"the stack's token {token_id} has " + "; ".join(parts) + ", which the program does not need"


def setup_commands(token_id: str, storage_id: str, vms: Sequence[VmRights]) -> list[str]:
    """The pveum commands that make the role, the user, the token and the ACLs."""
    user, _, name = token_id.partition("!")
    return [
        f"pveum role add {ROLE} --privs {shlex.quote(','.join(ROLE_PRIVILEGES))}",
        f"pveum user add {user}",
        f"pveum user token add {user} {name} --privsep 1",
        *(a.command(token_id) for a in acls(storage_id, vms)),
    ]
