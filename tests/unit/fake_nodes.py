"""Recording SSH executors for the Proxmox nodes' shells: dpkg-query, apt-get, systemctl, ha-manager, pveversion.

Like :mod:`tests.unit.fake_ceph`, every command must survive the remote shell's word splitting
unchanged (it was quoted) and is recorded. The answers follow the real tools' formats (and the
lab's shims, lab/pve/shims); a node that is down refuses the connection as a powered-off host does.
The same providers run against the lab's nodes in lab/tests and tests/integration.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from clients.ssh import Connection, RemoteError, Result, Unreachable, render

PVE8 = "pve-manager/8.4.1/2a5fa54a8503f96d (running kernel: 6.8.12-9-pve)"
PVE9 = "pve-manager/9.0.10/c3c7c6d5b2a3e4f1 (running kernel: 6.14.11-2-pve)"
WHEN = "Mon Nov 24 22:40:00 2025"
CEPH_VERSION = "16.2.15+ds-0+deb12u2"


@dataclass
class FakeNode:
    name: str
    host: str
    # dpkg's view: package -> (${Status}, ${Version}); a package absent here was never installed (or purged)
    packages: dict[str, tuple[str, str]] = field(default_factory=lambda: {"ceph-common": ("install ok installed", CEPH_VERSION)})
    services: dict[str, str] = field(default_factory=lambda: {"pve-ha-lrm": "active", "pve-ha-crm": "active"})
    down: bool = False  # powered off: the SSH connection is refused
    ssh_error: str | None = None  # the host answers but SSH fails (e.g. its host key changed)
    apt_error: str | None = None  # apt-get install fails with this on stderr
    crm: str = "online"  # the HA manager's node state (NodeStatus.pm)
    lrm: str = "active"  # the LRM word of `ha-manager status` (Status.pm)


@dataclass
class FakeCluster:
    nodes: dict[str, FakeNode] = field(default_factory=dict)
    version: str = PVE9
    quorum: dict[str, str] = field(default_factory=dict)  # node -> its `quorum` word, when not "OK"
    master: str | None = "pve-node1"
    commands: list[tuple[str, list[str]]] = field(default_factory=list)

    @classmethod
    def three(cls) -> FakeCluster:
        return cls({f"pve-node{i}": FakeNode(f"pve-node{i}", f"127.10.20.1{i}") for i in (1, 2, 3)})

    def executor(self, connection: Connection) -> NodeShell:
        (node,) = [n for n in self.nodes.values() if n.host == connection.host]
        return NodeShell(self, node)

    def ran(self, node: str, prefix: str) -> bool:
        return any(n == node and " ".join(argv).startswith(prefix) for n, argv in self.commands)

    def power_off(self, name: str) -> None:
        """A node powered off and fenced: no SSH, and the cluster no longer has it online."""
        node = self.nodes[name]
        node.down, node.crm, node.lrm = True, "unknown", "old timestamp - dead?"

    def ha_status(self, local: str) -> str:
        """``ha-manager status --verbose`` as PVE 8/9 prints it on ``local``."""
        lines = [f"quorum {self.quorum.get(local, 'OK')}"]
        if self.master:
            lines.append(f"master {self.master} (active, {WHEN})")
        for node in sorted(self.nodes.values(), key=lambda n: n.name):
            lines.append(f"lrm {node.name} (unable to read lrm status)" if node.lrm.startswith("unable") else f"lrm {node.name} ({node.lrm}, {WHEN})")
        lines.append(f"service vm:101 ({'pve-node1'}, started)")
        lines.append("full cluster state:")
        state = {
            "lrm_status": {n.name: {"mode": "active", "state": "active"} for n in self.nodes.values()},
            "manager_status": {"master_node": self.master, "node_status": {n.name: n.crm for n in self.nodes.values()}, "service_status": {}},
            "quorum": {"node": local, "quorate": "1" if self.quorum.get(local, "OK") == "OK" else "0"},
        }
        return "\n".join(lines) + "\n" + json.dumps(state, indent=3, sort_keys=True) + "\n"


@dataclass
class NodeShell:
    cluster: FakeCluster
    node: FakeNode

    def read(self, argv: list[str], *, stdin: str | None = None, timeout: float | None = None, fresh: bool = False) -> Result:
        return self.run(argv, stdin=stdin, timeout=timeout)  # no run memo here: every asking is recorded

    def run(self, argv: list[str], *, stdin: str | None = None, timeout: float | None = None) -> Result:
        assert shlex.split(render(argv)) == argv
        node = self.node
        if node.down:
            raise Unreachable(f"SSH to root@{node.host}:2222 failed: Connection refused")
        if node.ssh_error:
            raise RemoteError(f"SSH to root@{node.host}:2222: {node.ssh_error}")
        self.cluster.commands.append((node.name, argv))
        return self.answer(argv)

    def answer(self, argv: list[str]) -> Result:
        node = self.node
        match argv:
            case ["dpkg-query", "-W", "-f=${Status}\\t${Version}", package]:
                if package not in node.packages:
                    return Result(1, "", f"dpkg-query: no packages found matching {package}\n")
                status, version = node.packages[package]
                return Result(0, f"{status}\t{version}", "")
            case ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-o", lock, "install", "-y", package] if lock.startswith("DPkg::Lock::Timeout="):
                if node.apt_error:
                    return Result(100, "Reading package lists...\n", node.apt_error)
                node.packages[package] = ("install ok installed", CEPH_VERSION)
                return Result(0, f"Setting up {package} ({CEPH_VERSION}) ...\n", "")
            case ["systemctl", "is-active", *units]:
                states = [node.services.get(unit, "inactive") for unit in units]
                return Result(0 if all(s == "active" for s in states) else 3, "".join(f"{s}\n" for s in states), "")
            case ["ha-manager", "status", "--verbose"]:
                return Result(0, self.cluster.ha_status(node.name), "")
            case ["pveversion"]:
                return Result(0, self.cluster.version + "\n", "")
        raise AssertionError(f"the fake node does not know {argv}")
