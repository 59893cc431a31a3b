"""Runbook 7-1: where each HA VM runs, and whether a failure test can be done safely now.

The plan names the node to fail (the VM's node unless ``--node`` says otherwise), the node whose
API the drill watches from (never the failed one), and every precondition that does not hold:
quorum, every node online, the VM's HA state ``started``, its disks on shared storage, and a
majority of the nodes left online after the failure.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from clients.pve import cluster as pve_cluster
from clients.pve import cluster_ha, nodes_qemu
from clients.pve import storage as pve_storage
from drill.pve import ApiError, Pve
from drill.sources import Cluster, Vm

# PVE marks these storage types shared by design (PVE::Storage::Plugin's shared types)
SHARED_TYPES = {"rbd", "cephfs", "nfs", "cifs", "glusterfs", "iscsi", "iscsidirect", "zfs", "pbs"}


@dataclass
class VmPlace:
    vm: Vm
    node: str | None = None  # where /cluster/resources says it runs
    status: str | None = None  # running, stopped
    ha_state: str | None = None  # /cluster/ha/status/current: started, stopped, fence, ...
    ha_status: str | None = None  # PVE's own line: "vm:101 (pve-node1, started)"
    disks: dict[str, str] = field(default_factory=dict)  # scsi0 -> ceph-rbd


@dataclass
class Plan:
    target: str | None  # the node to fail
    watch_from: str | None  # the node whose API the drill watches
    watch_api: str | None
    nodes: dict[str, bool]  # every node: online?
    quorate: bool
    vms: list[VmPlace]  # the HA VMs on the target: the drill's subjects
    elsewhere: list[VmPlace]  # asked for, but on another node: not part of this drill
    monitors: list[str]  # Ceph monitor addresses of the VMs' RBD storages (for isolate)
    node_ips: dict[str, str]  # cluster (corosync) address of each node
    problems: list[str] = field(default_factory=list)

    def majority(self) -> int:
        return len(self.nodes) // 2 + 1


def _disks(config: dict[str, Any]) -> dict[str, str]:
    """Disk key -> storage id (or the path) of every disk; CD-ROMs are not disks."""
    disks = {}
    for key, value in nodes_qemu.disks(config).items():
        volume = value.split(",", 1)[0]
        disks[key] = volume.split(":", 1)[0] if ":" in volume else volume
    return dict(sorted(disks.items()))


def _monitors(monhost: str) -> list[str]:
    """The addresses in a storage's monhost: "10.0.0.1 10.0.0.2", "[v2:10.0.0.1:3300,v1:10.0.0.1:6789]", "[fd00::1]:6789"."""
    found: list[str] = []
    for token in re.split(r"[\s,;]+", monhost.strip()):
        try:
            host = str(ipaddress.ip_address(token))
        except ValueError:
            match = re.fullmatch(r"\[?(?:v[12]:)?(\[[0-9a-fA-F:.]+\]|[^:\[\]]+)(?::\d+)?\]?", token)
            host = match.group(1).strip("[]") if match else ""
        if host and host not in found:
            found.append(host)
    return found


def _place(api: Pve, vm: Vm, where: dict[int, dict[str, Any]], services: dict[str, dict[str, Any]]) -> VmPlace:
    res = where.get(vm.vmid)
    svc = services.get(vm.sid, {})
    place = VmPlace(vm, res.get("node") if res else None, res.get("status") if res else None, svc.get("state"), svc.get("status"))
    if place.node:
        place.disks = _disks(nodes_qemu.config(api.get, place.node, vm.vmid))
    return place


def _first_api(cluster: Cluster) -> Pve:
    """The configured endpoint, or any node's API that answers."""
    urls = list(dict.fromkeys([cluster.endpoint, *(n.api for n in cluster.nodes.values() if n.api)]))
    errors = []
    for url in urls:
        try:
            api = Pve(url, cluster)
            pve_cluster.status(api.get)
            return api
        except ApiError as exc:
            errors.append(str(exc))
    raise ApiError("no PVE API answered: " + "; ".join(errors))


def _watch_point(cluster: Cluster, target: str | None, nodes: dict[str, bool], ips: dict[str, str]) -> tuple[str | None, str | None]:
    """An online node other than the target, with an API that answers."""
    port = urlsplit(cluster.endpoint).port or 8006
    for name in sorted(nodes):
        if name == target or not nodes[name]:
            continue
        url = cluster.node_api(name) or (f"https://{ips[name]}:{port}" if name in ips else None)
        if not url:
            continue
        try:
            pve_cluster.status(Pve(url, cluster, timeout=5).get)
        except ApiError:
            continue
        return name, url
    return None, None


def make(cluster: Cluster, node: str | None = None) -> Plan:
    """Read the cluster and decide; raises :class:`ApiError` only when no API answers."""
    api = _first_api(cluster)
    status = pve_cluster.status(api.get)
    nodes = {e["name"]: bool(e.get("online")) for e in status if e.get("type") == "node"}
    ips = {e["name"]: e["ip"] for e in status if e.get("type") == "node" and e.get("ip")}
    quorate = any(e.get("type") == "cluster" and e.get("quorate") for e in status)
    where = {int(r["vmid"]): r for r in pve_cluster.resources_of_type(api.get, "vm") if "vmid" in r}
    services = {e["sid"]: e for e in cluster_ha.status_current(api.get) if e.get("type") == "service"}
    places = [_place(api, vm, where, services) for vm in cluster.vms]

    target = node or next((p.node for p in places if p.node), None)
    watch_from, watch_api = _watch_point(cluster, target, nodes, ips)
    plan = Plan(target, watch_from, watch_api, nodes, quorate, [], [], [], ips)
    plan.vms = [p for p in places if p.node == target or p.node is None]
    plan.elsewhere = [p for p in places if p not in plan.vms]
    problems = plan.problems

    if not quorate:
        problems.append(f"the cluster has no quorum (seen from {api.url}): repair it before a failure test (pvecm status)")
    if node is not None and node not in nodes:
        problems.append(f"--node {node}: not a node of this cluster ({', '.join(sorted(nodes))})")
    for name, online in sorted(nodes.items()):
        if not online:
            problems.append(f"{name} is offline: every node must be online before a failure test")
    online_after = sum(online for name, online in nodes.items() if name != target)
    if target in nodes and online_after < plan.majority():
        problems.append(
            f"failing {target} would leave {online_after} of {len(nodes)} nodes online: no quorum (a majority, {plan.majority()}, is needed), so HA could not recover anything"
        )
    if target is not None and watch_from is None:
        problems.append(f"no API of another node answered: the drill watches from a node other than {target}; give --node-api NAME=https://HOST:8006")

    storages: dict[str, dict[str, Any]] = {}
    for place in places:
        problems += _vm_problems(api, place, storages)
    if not plan.vms:
        problems.append(f"none of the VMs runs on {target}: nothing to watch there (the VMs run on {', '.join(sorted({p.node or '?' for p in places}))})")
    for info in storages.values():
        if info.get("type") == "rbd" and info.get("monhost"):
            plan.monitors += [m for m in _monitors(str(info["monhost"])) if m not in plan.monitors]
    return plan


def _vm_problems(api: Pve, place: VmPlace, storages: dict[str, dict[str, Any]]) -> list[str]:
    sid = place.vm.sid
    if place.node is None:
        return [f"VM {place.vm.vmid} does not exist in the cluster (/cluster/resources)"]
    if place.ha_state is None:
        return [f"{sid} is not an HA resource: register it first (ha-manager add {sid})"]
    problems = []
    if place.ha_state != "started":
        problems.append(f"{sid} is not started (HA state '{place.ha_state}'): the drill needs it running under HA (ha-manager set {sid} --state started)")
    for key, storage in place.disks.items():
        if storage.startswith("/"):
            problems.append(f"{sid} {key} is a local path ({storage}), not on shared storage: HA cannot start it on another node")
            continue
        if storage not in storages:
            try:
                storages[storage] = pve_storage.config(api.get, storage)
            except ApiError as exc:
                storages[storage] = {"error": str(exc)}
        info = storages[storage]
        if "error" in info:
            problems.append(f"{sid} {key}: storage {storage} could not be read: {info['error']}")
        elif not (info.get("shared") or info.get("type") in SHARED_TYPES):
            problems.append(
                f"{sid} {key} is on {storage} ({info.get('type')}, not shared): HA cannot start it on another node; move the disk to the RBD storage"
            )
    return problems
