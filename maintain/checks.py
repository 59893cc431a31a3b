"""Can the cluster take a node's HA VMs? Read-only: what `python -m maintain` checks before it
enables maintenance, from the PVE API alone.

- quorum without the node (a node in maintenance is often rebooted: the others must keep quorum);
- every node up for a rolling maintenance (`--all`), and no other node already in maintenance;
- an HA manager with a master, no service in `error`, no migration under way;
- memory: the HA VMs that run on the node fit in the free memory of the nodes that stay;
- node affinity: each VM has an online node other than this one its rule or group allows
  (a strict rule, or PVE 8's restricted group, that names only this node keeps it there);
- resource affinity (PVE 9): a VM kept apart from others has a node none of them runs on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clients.pve import cluster as pve_cluster
from clients.pve import cluster_ha
from drill.pve import ApiError, Pve

MIB = 1024 * 1024


@dataclass
class Service:
    sid: str
    node: str
    state: str
    memory: int = 0  # the VM's configured memory, bytes (maxmem)


@dataclass
class View:
    """The cluster as the HA manager and /cluster/resources see it."""

    nodes: dict[str, bool] = field(default_factory=dict)  # node -> online in the cluster
    ha_nodes: dict[str, str] = field(default_factory=dict)  # node -> online | maintenance | unknown | fence | gone
    free: dict[str, int] = field(default_factory=dict)  # node -> maxmem - mem, bytes
    services: dict[str, Service] = field(default_factory=dict)
    quorate: bool = False
    master: str | None = None
    strict_nodes: dict[str, set[str]] = field(default_factory=dict)  # sid -> the only nodes it may run on
    apart: dict[str, set[str]] = field(default_factory=dict)  # sid -> the sids kept apart from it
    together: dict[str, set[str]] = field(default_factory=dict)  # sid -> the sids kept with it

    def on(self, node: str) -> list[Service]:
        return [s for s in self.services.values() if s.node == node and s.state not in ("stopped", "ignored", "disabled")]


def _affinities(api: Pve, view: View) -> None:
    """Strict node affinity and resource affinity from PVE 9's rules, or PVE 8's restricted groups."""
    try:
        rules = cluster_ha.rules(api.get)
    except ApiError:
        rules = None  # PVE 8: no rules API
    if rules is not None:
        for rule in rules:
            if rule.get("disable") or rule.get("errors"):
                continue  # the HA manager drops a rule with errors
            sids = [s for s in str(rule.get("resources", "")).split(",") if s]
            if rule.get("type") == "node-affinity" and int(rule.get("strict") or 0):
                nodes = {n.split(":")[0] for n in str(rule.get("nodes", "")).split(",") if n}
                for sid in sids:
                    view.strict_nodes[sid] = nodes
            elif rule.get("type") == "resource-affinity":
                target = view.together if rule.get("affinity") == "positive" else view.apart
                for sid in sids:
                    target.setdefault(sid, set()).update(set(sids) - {sid})
        return
    groups = {str(g["group"]): g for g in api.get("cluster/ha/groups")}
    for res in cluster_ha.resources(api.get):
        group = groups.get(str(res.get("group") or ""))
        if group and int(group.get("restricted") or 0):
            view.strict_nodes[str(res["sid"])] = {n.split(":")[0] for n in str(group.get("nodes", "")).split(",") if n}


def read(api: Pve) -> View:
    view = View(ha_nodes=cluster_ha.node_states(api.get))
    memory: dict[int, int] = {}
    for res in pve_cluster.resources(api.get):
        if res.get("type") == "node":
            view.nodes[str(res["node"])] = res.get("status") == "online"
            view.free[str(res["node"])] = int(res.get("maxmem") or 0) - int(res.get("mem") or 0)
        elif res.get("type") == "qemu" and "vmid" in res:
            memory[int(res["vmid"])] = int(res.get("maxmem") or 0)
    for entry in cluster_ha.status_current(api.get):
        kind = entry.get("type")
        if kind == "quorum":
            view.quorate = bool(int(entry.get("quorate") or 0))
        elif kind == "master":
            view.master = entry.get("node")
        elif kind == "service":
            sid = str(entry["sid"])
            vmid = int(sid.split(":")[1]) if sid.split(":")[-1].isdigit() else 0
            view.services[sid] = Service(sid, str(entry.get("node")), str(entry.get("state")), memory.get(vmid, 0))
    _affinities(api, view)
    return view


def problems(view: View, node: str, rolling: bool = False) -> list[str]:
    """Why NODE cannot go into maintenance now, each with the fix; none: it can."""
    out: list[str] = []
    if node not in view.nodes:
        return [f"{node} is not a node of this cluster (nodes: {', '.join(sorted(view.nodes))})"]
    if not view.nodes[node]:
        return [f"{node} is offline: maintenance moves VMs off a running node; bring it back first"]
    if view.ha_nodes.get(node) == "maintenance":
        out.append(f"{node} is already in maintenance: ha-manager crm-command node-maintenance disable {node} first, or leave it")
    down = sorted(n for n, up in view.nodes.items() if not up)
    if rolling and down:
        out.append(
            f"{', '.join(down)} {'is' if len(down) == 1 else 'are'} down: a rolling maintenance needs every node up; bring {'it' if len(down) == 1 else 'them'} back first"
        )
    others = sorted(n for n, state in view.ha_nodes.items() if state == "maintenance" and n != node)
    if others:
        out.append(f"{', '.join(others)} already in maintenance: one node at a time; disable it first")
    majority = len(view.nodes) // 2 + 1
    staying = [n for n, up in view.nodes.items() if up and n != node]
    if len(staying) < majority:
        out.append(
            f"without {node} {len(staying)} of {len(view.nodes)} nodes stay online: quorum needs {majority}; bring the down node(s) back first ({', '.join(down) or 'none down'})"
        )
    if not view.quorate or not view.master:
        out.append("the HA manager has no quorum or no master (ha-manager status): fix the cluster first")
    for service in view.services.values():
        if service.state == "error":
            out.append(f"{service.sid} is in error: fix it and ha-manager set {service.sid} --state started first")
        elif service.state in ("migrate", "relocate", "recovery", "fence"):
            out.append(f"{service.sid} is in {service.state}: wait until the HA manager settles")
    moving = view.on(node)
    targets = {n for n in staying if view.ha_nodes.get(n) == "online"}
    need = sum(s.memory for s in moving)
    room = sum(max(view.free.get(n, 0), 0) for n in targets)
    if need > room:
        out.append(f"{node}'s HA VMs need {need // MIB} MiB, the other online nodes have {room // MIB} MiB free: stop or move some VMs first")
    for service in moving:
        allowed = targets & view.strict_nodes.get(service.sid, targets)
        if not allowed:
            pinned = ", ".join(sorted(view.strict_nodes.get(service.sid, set())))
            out.append(f"{service.sid} may run only on {pinned} (a strict node affinity): it cannot leave {node}; widen its rule or group first")
            continue
        blocked = {view.services[p].node for p in view.apart.get(service.sid, set()) if p in view.services}
        if not allowed - blocked:
            partners = ", ".join(sorted(view.apart[service.sid]))
            out.append(
                f"{service.sid} is kept apart from {partners}, which run on {', '.join(sorted(blocked))}: no node is left for it; add a node or relax the rule"
            )
    return out
