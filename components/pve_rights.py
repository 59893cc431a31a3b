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

A stack that sets the HA manager's cluster-wide options (``ha.shutdownPolicy``, ``ha.crs``,
``ha.rebalanceOnStart``: components/ha_options.py) also needs ``Sys.Modify`` on ``/`` (PVE's
API2/Cluster.pm set_options), and only that stack: a second role, :data:`OPTIONS_ROLE`, on ``/``,
not propagated. Sys.Modify on ``/`` also lets the token change other datacenter-wide settings
(datacenter.cfg, the cluster firewall's options); PVE has nothing narrower for datacenter.cfg.

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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from components.config import StackConfig

ROLE = "PulumiCephHA"  # PVE refuses role ids in its own namespace: "PVE..." (API2/Role.pm create_role)

OPTIONS_ROLE = "PulumiCephHAOptions"  # Sys.Modify alone, on / (not propagated): datacenter.cfg's HA options
OPTIONS_PRIVILEGES = ("Sys.Modify",)
OPTIONS_KEYS = "ha.shutdownPolicy, ha.crs, ha.rebalanceOnStart"  # the config keys the role is for
OPTIONS_CALLS = f"PUT /cluster/options ({OPTIONS_KEYS}: datacenter.cfg)"

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
    "VM.Config.Cloudinit": "POST /nodes/{node}/qemu and PUT .../config: ciuser, sshkeys, ipconfig0, nameserver, searchdomain (vms[].cloudInit)",
    "VM.Clone": "POST /nodes/{node}/qemu/{template}/clone (on the template's /vms/<id>: vms[].clone)",
    "VM.Config.Options": "POST /nodes/{node}/qemu and PUT .../config: name, onboot, ostype, agent, bios, tags, protection",
    "VM.Config.HWType": "POST /nodes/{node}/qemu and PUT .../config: acpi, scsihw, tablet, vga, smbios1",
    "SDN.Use": "POST /nodes/{node}/qemu and PUT .../config: net0's bridge (PVE 8+, on /sdn/zones/localnetwork/<bridge>)",
}
# privilege -> the calls that need it, for the role's and those PVE's built-in roles grant (Pool.Audit: PVEPoolUser)
PRIVILEGE_CALLS: dict[str, str] = {
    **ROLE_PRIVILEGES,
    "Pool.Audit": "GET /pools and /pools/{poolid} (bpg reads the VM's PVE pool there: vms[].pvePool)",
    "Sys.Modify": OPTIONS_CALLS,
}
# What every VM needs on its own path; VM.Config.Cloudinit only with cloud-init, VM.Clone only on a template.
VM_PRIVILEGES = tuple(p for p in ROLE_PRIVILEGES if p.startswith("VM.") and p not in ("VM.Clone", "VM.Config.Cloudinit"))
TEMPLATE_ROLE = "PVETemplateUser"  # PVE's built-in role: VM.Clone and VM.Audit, on a template the stack does not own
# PVE's built-in role: Pool.Audit alone. A pool's roles reach each of its members whatever the
# ACL's propagate flag (RPCEnvironment.pm $compile_acl_path), and the pool's other VMs are not the stack's.
POOL_ROLE = "PVEPoolUser"
HA_PRIVILEGES = ("Sys.Audit", "Sys.Console")
STORAGE_PRIVILEGES = ("Datastore.Allocate", "Datastore.AllocateSpace")


@dataclass(frozen=True)
class Acl:
    """One ACL of the documented set: the role on PATH for the user and its token."""

    path: str
    propagate: bool
    why: str
    role: str = ROLE

    def command(self, token_id: str) -> str:
        user = token_id.split("!")[0]
        return f"pveum acl modify {self.path} --users {user} --tokens {shlex.quote(token_id)} --roles {self.role}" + (
            "" if self.propagate else " --propagate 0"
        )


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
    """What the rights of one VM (or a template the stack makes) depend on (config.VmSpec's fields)."""

    id: int
    name: str
    bridge: str
    iso: str | None
    ha: bool
    bridges: tuple[str, ...] = ()  # every NIC's bridge (none: BRIDGE alone)
    clone_of: int | None = None  # the template it is cloned from
    cloud_init: bool = False
    pool: str | None = None  # its PVE pool
    image: str | None = None  # a template the stack makes: the cloud image it imports

    def all_bridges(self) -> tuple[str, ...]:
        return self.bridges or (self.bridge,)

    def as_input(self) -> dict[str, object]:
        """As the Owners resource's inputs hold it (components/stack.py rights_input)."""
        return {
            "id": self.id,
            "name": self.name,
            "bridge": self.bridge,
            "iso": self.iso or "",
            "ha": self.ha,
            "bridges": list(self.bridges),
            "cloneOf": self.clone_of,
            "cloudInit": self.cloud_init,
            "pool": self.pool,
            "image": self.image,
        }

    @classmethod
    def from_input(cls, v: Mapping[str, object]) -> VmRights:
        """From :meth:`as_input` (numbers come back as floats; an older state lacks the later keys)."""
        clone_of = v.get("cloneOf")
        return cls(
            int(str(v["id"]).split(".")[0]),
            str(v["name"]),
            str(v["bridge"]),
            str(v.get("iso") or "") or None,
            bool(v["ha"]),
            tuple(str(b) for b in v.get("bridges") or ()),  # type: ignore[attr-defined]
            int(str(clone_of).split(".")[0]) if clone_of not in (None, "") else None,
            bool(v.get("cloudInit")),
            str(v.get("pool") or "") or None,
            str(v.get("image") or "") or None,
        )


def for_config(config: StackConfig) -> list[VmRights]:
    """What each VM's and each stack template's rights depend on (components/pve_rights.py)."""
    out = [
        VmRights(
            vm.id,
            vm.name,
            vm.nic_list()[0].bridge,
            vm.iso,
            vm.ha,
            bridges=tuple(dict.fromkeys(nic.bridge for nic in vm.nic_list())),
            clone_of=vm.clone.template if vm.clone else None,
            cloud_init=vm.cloud_init is not None,
            pool=vm.pve_pool,
        )
        for vm in config.vms
    ]
    out += [VmRights(t.id, t.name, t.bridge, None, False, image=t.image) for t in config.templates]
    return out


def acls(storage_id: str, vms: Sequence[VmRights], options: bool = False) -> list[Acl]:
    """The documented ACLs for a stack's config, narrowest first where PVE allows it (OPTIONS: the
    stack sets datacenter.cfg's HA options)."""
    out = [
        Acl("/", False, "Sys.Audit and Sys.Console: PVE checks the HA API on / itself"),
        *([Acl("/", False, f"Sys.Modify: {OPTIONS_CALLS}", OPTIONS_ROLE)] if options else []),
        Acl("/storage", True, f"Datastore.*: a storage is created and deleted with rights on /storage itself ({storage_id} and the ISOs' storages below it)"),
    ]
    out += [Acl(f"/vms/{vm.id}", True, f"VM.*: {vm.name} (PVE drops this ACL when the VM is destroyed)") for vm in vms]
    own = {vm.id for vm in vms}
    out += [
        Acl(f"/vms/{t}", False, f"VM.Clone: the template {t} the VMs clone (PVE's {TEMPLATE_ROLE}: clone and read, nothing else)", TEMPLATE_ROLE)
        for t in sorted({vm.clone_of for vm in vms if vm.clone_of is not None} - own)
    ]
    out += [
        Acl(f"/pool/{p}", False, f"Pool.Audit: the VMs' PVE pool (PVE's {POOL_ROLE}: a pool's roles reach all its members)", POOL_ROLE)
        for p in sorted({vm.pool for vm in vms if vm.pool})
    ]
    out += [Acl(bridge_path(b), True, "SDN.Use: the VMs' bridge") for b in sorted({b for vm in vms for b in vm.all_bridges()})]
    return out


def needed(storage_id: str, vms: Sequence[VmRights], options: bool = False) -> list[Need]:
    """Every (privilege, path) the config's calls need, with the ACL that grants it."""
    every = acls(storage_id, vms, options)
    by_path = {a.path: a for a in every if a.role != OPTIONS_ROLE}
    root, storages = by_path["/"], by_path["/storage"]
    out: list[Need] = []
    if any(vm.ha for vm in vms):
        out += [Need(p, "/", root, "the HA resources") for p in HA_PRIVILEGES]
    elif options:  # GET /cluster/options without Sys.Audit answers `console` and `tag-style` alone
        out.append(Need("Sys.Audit", "/", root, OPTIONS_KEYS))
    out += [Need(p, "/", a, OPTIONS_KEYS) for a in every if a.role == OPTIONS_ROLE for p in OPTIONS_PRIVILEGES]
    out.append(Need("Datastore.Allocate", "/storage", storages, f"storage.id {storage_id} (create, delete)"))
    out += [Need(p, f"/storage/{storage_id}", storages, f"storage.id {storage_id}") for p in STORAGE_PRIVILEGES]
    for i, vm in enumerate(vms):
        entry = f"vms[{i}] ({vm.name})"
        acl = by_path[f"/vms/{vm.id}"]
        out += [Need(p, f"/vms/{vm.id}", acl, entry) for p in VM_PRIVILEGES]
        for volume, key in ((vm.iso, "iso"), (vm.image, "image")):
            if volume:
                out.append(Need("Datastore.AllocateSpace", f"/storage/{volume.split(':', 1)[0]}", storages, f"{entry}.{key} {volume}", ("Datastore.Audit",)))
        if vm.cloud_init:
            out.append(Need("VM.Config.Cloudinit", f"/vms/{vm.id}", acl, f"{entry}.cloudInit"))
        if vm.clone_of is not None:
            out.append(Need("VM.Clone", f"/vms/{vm.clone_of}", by_path[f"/vms/{vm.clone_of}"], f"{entry}.clone.template {vm.clone_of}"))
        if vm.pool:
            out.append(Need("Pool.Audit", f"/pool/{vm.pool}", by_path[f"/pool/{vm.pool}"], f"{entry}.pvePool {vm.pool}"))
        out += [Need("SDN.Use", bridge_path(b), by_path[bridge_path(b)], f"{entry}.bridge {b}") for b in vm.all_bridges()]
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
    if need.acl.role == OPTIONS_ROLE:
        return f"pveum role add {OPTIONS_ROLE} --privs {','.join(OPTIONS_PRIVILEGES)} (once), then {need.acl.command(token_id)}"
    if others and need.acl.role == ROLE:
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
            f"needed by {PRIVILEGE_CALLS[need.privilege]}; grant it: {grant_command(need, token_id, effective)}"
        )
    return "; ".join(lines)


# The per-cluster forms of the narrow ACLs (docs/permissions.md): every VM, every PVE pool, every local bridge.
CLUSTER_WIDE = ("/vms", "/pool", "/sdn/zones/localnetwork")


def excess(effective: Effective, storage_id: str, vms: Sequence[VmRights], options: bool = False) -> list[str]:
    """What the token holds beyond the role on the documented paths ("Sys.Modify on /"), for verify's warning."""
    documented = {a.path for a in acls(storage_id, vms, options)} | set(CLUSTER_WIDE)

    def covered(path: str) -> bool:
        return path in documented or any(path.startswith(d + "/") for d in documented if d != "/")

    out = []
    for path in sorted(effective):
        privileges = effective[path]
        if not covered(path):
            out += [f"{p} on {path}" for p in sorted(privileges)]
            continue
        allowed = set(PRIVILEGE_CALLS) - ({"Sys.Modify"} if not options or path != "/" else set())
        out += [f"{p} on {path}" for p in sorted(privileges) if p not in allowed]
        if path == "/":
            out += [
                f"{p} on / propagated to every path"
                for p in sorted(privileges)
                if p in allowed and p in (*ROLE_PRIVILEGES, *OPTIONS_PRIVILEGES) and str(privileges[p]) not in ("0", "False")
            ]
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


def setup_commands(token_id: str, storage_id: str, vms: Sequence[VmRights], options: bool = False) -> list[str]:
    """The pveum commands that make the role (and the options' role), the user, the token and the ACLs."""
    user, _, name = token_id.partition("!")
    return [
        f"pveum role add {ROLE} --privs {shlex.quote(','.join(ROLE_PRIVILEGES))}",
        *([f"pveum role add {OPTIONS_ROLE} --privs {','.join(OPTIONS_PRIVILEGES)}"] if options else []),
        f"pveum user add {user}",
        f"pveum user token add {user} {name} --privsep 1",
        *(a.command(token_id) for a in acls(storage_id, vms, options)),
    ]
