"""Runbook 7-3: watch from another node's API until every VM runs elsewhere, printing each change.

Every ~0.2 s the drill reads ``/cluster/ha/status/current`` (PVE's own service lines such as
``vm:101 (pve-node2, started)``, the quorum and the master), ``/cluster/ha/status/manager_status`` (the HA manager's node
states: online, unknown, fence) and ``/cluster/resources`` (nodes online, VMs running). Each
change is one timeline line with the seconds since the failure.

Milestones per VM, in seconds since the failure:
- detected: the failed node is no longer online (for /cluster/resources or the HA manager);
- fenced: fencing was acknowledged and recovery began (the service in ``recovery``, or already
  placed on another node);
- running: the HA service is ``started`` on another node and that node runs the VM.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clients.pve import cluster as pve_cluster
from clients.pve import cluster_ha
from drill.pve import ApiError, Pve
from drill.sources import Vm

INTERVAL = 0.2


@dataclass
class Snapshot:
    nodes_online: dict[str, bool] = field(default_factory=dict)
    ha_nodes: dict[str, str] = field(default_factory=dict)  # node -> online | unknown | fence | gone
    services: dict[str, dict[str, Any]] = field(default_factory=dict)  # sid -> status/current entry
    vms: dict[int, tuple[str, str]] = field(default_factory=dict)  # vmid -> (node, status)
    quorate: bool | None = None
    master: str | None = None  # the node whose CRM is the HA manager's master
    error: str | None = None


@dataclass
class Progress:
    vm: Vm
    from_node: str
    detected: float | None = None
    fenced: float | None = None
    running: float | None = None
    running_at: float | None = None  # wall clock (time.time()) when the drill saw it running
    node: str | None = None  # where it runs now
    last: str | None = None  # PVE's last status line of the service

    @property
    def recovered(self) -> bool:
        return self.running is not None


@dataclass
class Event:
    t: float
    text: str


def snapshot(api: Pve) -> Snapshot:
    try:
        current = cluster_ha.status_current(api.get)
        ha_nodes = cluster_ha.node_states(api.get)
        resources = pve_cluster.resources(api.get)
    except ApiError as exc:
        return Snapshot(error=str(exc))
    snap = Snapshot(ha_nodes=ha_nodes)
    for entry in current:
        if entry.get("type") == "service":
            snap.services[entry["sid"]] = entry
        elif entry.get("type") == "quorum":
            snap.quorate = bool(entry.get("quorate"))
        elif entry.get("type") == "master":
            snap.master = entry.get("node")
    for res in resources:
        if res.get("type") == "node":
            snap.nodes_online[res["node"]] = res.get("status") == "online"
        elif res.get("type") == "qemu" and "vmid" in res:
            snap.vms[int(res["vmid"])] = (res.get("node", "?"), res.get("status", "?"))
    return snap


def changes(old: Snapshot, new: Snapshot) -> list[str]:
    """Timeline lines for what differs, in the HA manager's and PVE's own words."""
    if new.error:
        return [] if old.error else [f"the watched API did not answer: {new.error}"]
    out = ["the watched API answers again"] if old.error else []
    if old.quorate is not None and new.quorate != old.quorate:
        out.append("quorum OK" if new.quorate else "quorum lost (seen from the watching node)")
    if old.master and new.master != old.master:
        out.append(f"master {new.master or '-'} (was {old.master}: a new master takes over once the old one's lock expires)")
    for node, online in sorted(new.nodes_online.items()):
        if node in old.nodes_online and old.nodes_online[node] != online:
            out.append(f"{node}: {'online' if online else 'offline'} (cluster/resources)")
    for node, state in sorted(new.ha_nodes.items()):
        if node in old.ha_nodes and old.ha_nodes[node] != state:
            out.append(f"node '{node}': state changed from '{old.ha_nodes[node]}' => '{state}'")
    for sid, entry in sorted(new.services.items()):
        before = old.services.get(sid, {})
        if (entry.get("status"), entry.get("crm_state")) != (before.get("status"), before.get("crm_state")):
            crm = entry.get("crm_state")
            out.append(f"{entry.get('status')}" + (f"  [crm: {crm}]" if crm and crm != entry.get("state") else ""))
    for vmid, (node, status) in sorted(new.vms.items()):
        if old.vms.get(vmid) not in (None, (node, status)):
            out.append(f"VM {vmid}: {status} on {node}")
    return out


def advance(progress: Progress, snap: Snapshot, t: float, target: str) -> str | None:
    """Record the VM's milestones reached in SNAP; returns the runbook's line when it runs again."""
    if snap.error:
        return None
    svc = snap.services.get(progress.vm.sid, {})
    progress.last = svc.get("status") or progress.last
    if progress.detected is None and (snap.nodes_online.get(target) is False or snap.ha_nodes.get(target, "online") != "online"):
        progress.detected = t
    moved = svc.get("node") not in (None, progress.from_node)
    if progress.fenced is None and (svc.get("crm_state") == "recovery" or moved):
        progress.fenced = t
        progress.detected = progress.detected if progress.detected is not None else t
    node, status = snap.vms.get(progress.vm.vmid, (None, None))
    if progress.running is None and moved and svc.get("state") == "started" and node == svc.get("node") and status == "running":
        progress.running, progress.running_at, progress.node = t, time.time(), node
        return f"{progress.vm.sid} started on {node}"
    return None


def watch(
    api: Pve,
    subjects: list[Progress],
    target: str,
    t0: float,
    deadline: float,
    say: Callable[[float, str], None],
    first: Snapshot | None = None,
    interval: float = INTERVAL,
) -> list[Event]:
    """Poll until every subject runs on another node or DEADLINE seconds after T0 (monotonic) pass."""
    events: list[Event] = []
    previous = first or Snapshot()

    def note(t: float, text: str) -> None:
        events.append(Event(round(t, 2), text))
        say(t, text)

    while True:
        tick = time.monotonic()
        snap = snapshot(api)
        t = time.monotonic() - t0
        for text in changes(previous, snap):
            note(t, text)
        for progress in subjects:
            line = advance(progress, snap, t, target)
            if line:
                note(t, line)
        if not snap.error:
            previous = snap
        if all(p.recovered for p in subjects) or t >= deadline:
            return events
        time.sleep(max(0.0, min(interval - (time.monotonic() - tick), deadline - t)))
