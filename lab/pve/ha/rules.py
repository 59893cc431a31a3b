"""Where a service may and should run: HA groups (PVE 8) and rules (PVE 9), after pve-ha-manager's
Groups.pm, Rules.pm and Rules/NodeAffinity.pm (groups migrated to node-affinity rules, Groups.pm
migrate_groups_to_rules), and Manager.pm select_service_node with the basic scheduler's usage
(Usage/Basic.pm: services per node; or, with datacenter.cfg `crs: ha=static`, Usage/Static.pm:
usage.py), resource affinity (PVE 9: affinity.py) and the maintenance fallback node."""

from __future__ import annotations

from typing import Any

import lab.pve.ha.affinity as affinity
import lab.pve.ha.usage as crs
from lab.pve.ha.common import (
    parse_node_list,
    split_list,
)


class RulesMixin:
    """The HA config's groups and rules, and the choice of a service's node. A part of :class:`lab.pve.ha.manager.HaManager`, whose state it reads and writes."""

    def groups_migrated(self) -> bool:
        return self.pve.mode == "rules"

    def service_removed(self, sid: str) -> None:
        self.ss.pop(sid, None)
        self.results.pop(sid, None)
        self.restarts.pop(sid, None)
        vm = self.vm_of(sid)
        if vm is not None:
            vm.ha_state = None

    def purge_rules(self, sid: str) -> None:
        for rid in list(self.rules):
            res = [r for r in split_list(self.rules[rid].get("resources")) if r != sid]
            if res:
                self.rules[rid]["resources"] = ",".join(res)
            else:
                del self.rules[rid]
                self.rule_order.pop(rid, None)

    def migrate_groups_to_rules(self) -> None:
        """PVE 9's persistent migration (Groups.pm migrate_groups_to_rules + Manager.pm)."""
        used: dict[str, list[str]] = {}
        for sid, res in self.resources.items():
            if res.get("group"):
                used.setdefault(res["group"], []).append(sid)
        for group, sids in sorted(used.items()):
            cfg = self.groups.get(group)
            if cfg is None:
                continue
            rid = f"ha-group-{group}"
            self.rules[rid] = {
                "type": "node-affinity",
                "resources": ",".join(sorted(sids)),
                "nodes": cfg["nodes"],
                "comment": cfg.get("comment") or f"Generated from HA group '{group}'.",
            }
            if cfg.get("restricted"):
                self.rules[rid]["strict"] = 1
            self.rule_order[rid] = max(self.rule_order.values(), default=0) + 1
            for sid in sids:
                if cfg.get("nofailback"):
                    self.resources[sid]["failback"] = 0
                self.resources[sid].pop("group", None)
            self.log(self.master or self.pve.node_names[0], "pve-ha-crm", "info", f"migrated HA group '{group}' to node affinity rule '{rid}'")
        for sid in self.resources:
            self.resources[sid].pop("group", None)
        self.groups.clear()

    def compiled(self) -> dict[str, Any]:
        """Manager.pm manage: the rules transformed and compiled again when the rules, the
        resources or the node list changed; the dropped rules are logged."""
        key = (self.digest("rules"), self.digest("resources"), tuple(self.pve.node_names))
        if getattr(self, "_compiled_key", None) != key:
            rules = affinity.enabled(self.rules, self.rule_order)
            rules, messages = affinity.transform(rules, self.pve.node_names)
            for message in messages:
                self.log(self.master or self.pve.node_names[0], "pve-ha-crm", "info", message)
            self._compiled = affinity.compile_rules(rules, self.pve.node_names)
            self._compiled_key = key
        return self._compiled

    def node_affinity(self, sid: str, cd: dict[str, Any]) -> tuple[dict[str, int] | None, bool]:
        """(nodes with priority, failback) for the service, or None: no restriction."""
        failback = bool(int(cd.get("failback", 1)))
        if self.pve.mode == "rules":
            return self.compiled()["node-affinity"].get(sid), failback
        group = self.groups.get(cd.get("group") or "")
        if group is None:
            return None, True
        nodes = {n: (p if p is not None else 0) for n, p in parse_node_list(group["nodes"]).items()}
        if not group.get("restricted"):
            for n in self.pve.node_names:
                nodes.setdefault(n, -1)
        return nodes, not group.get("nofailback")

    def motion_info(self, sid: str, target: str) -> tuple[list[str], list[str]]:
        """Config.pm get_resource_motion_info (PVE 9): the services that move with SID (positive
        affinity) and those on or moving to TARGET that block the move (negative affinity)."""
        if self.pve.mode != "rules":
            return [], []
        compiled = self.compiled()
        together = sorted(c for c in compiled["positive"].get(sid, ()) if c in self.ss)
        blocking = sorted(
            c for c in compiled["negative"].get(sid, ()) if c in self.ss and self.ss[c].get("node") == target and self.ss[c].get("target", target) == target
        )
        return together, blocking

    def queue_motion(self, cmd: str, sid: str, target: str) -> None:
        """Manager.pm update_crm_commands / queue_resource_motion: a move refused while a service
        in negative affinity is on or moving to TARGET; the services in positive affinity move
        with it."""
        master = self.master or self.pve.node_names[0]
        together, blocking = self.motion_info(sid, target)
        if blocking:
            self.log(
                master,
                "pve-ha-crm",
                "err",
                f"crm command '{cmd} {sid} {target}' error - service '{blocking[0]}' on node '{target}' in negative affinity with service '{sid}'",
            )
            return
        self.log(master, "pve-ha-crm", "info", f"got crm command: {cmd} {sid} {target}")
        self.ss[sid]["cmd"] = (cmd, target)
        for csid in together:
            other = self.ss[csid]
            if other.get("node") == target or other.get("target") == target:
                continue
            self.log(
                master,
                "pve-ha-crm",
                "info",
                f"crm command '{cmd} {sid} {target}' - {cmd} service '{csid}' to node '{target}' (service '{csid}' in positive affinity with service '{sid}')",
            )
            other["cmd"] = (cmd, target)

    def usage(self) -> dict[str, int]:
        count = {n: 0 for n in self.pve.node_names}
        for sd in self.ss.values():
            if sd["state"] in ("started", "request_start", "migrate", "relocate", "recovery"):
                node = sd.get("target") or sd["node"]
                if node in count:
                    count[node] += 1
        return count

    def static_scores(self, sid: str, online: set[str]) -> dict[str, float]:
        """Usage/Static.pm score_nodes_to_start_service (usage.py): the online nodes' capacities, the
        load of every other service on (or moving to) each, and SID's own configured usage."""
        capacity = {n: self.pve.lab_node_capacity(n) for n in online}
        load = {n: [0.0, 0] for n in online}
        for other, sd in self.ss.items():
            vm = self.vm_of(other)
            if other == sid or vm is None:
                continue
            cpus, memory = crs.service_usage(vm.config)
            for node in {n for n in affinity.used_nodes(online, sd) if n}:
                load[node][0] += cpus or capacity[node][0]
                load[node][1] += memory
        vm = self.vm_of(sid)
        return crs.static_scores(capacity, load, crs.service_usage(vm.config) if vm is not None else (0.0, 0))

    def select_service_node(self, sid: str, cd: dict[str, Any], sd: dict[str, Any], preference: str) -> str | None:
        """Manager.pm select_service_node: node affinity (get_node_affinity: the highest priority
        among the online nodes), resource affinity (negative, then positive), the maintenance
        fallback node, then the current node or the least used."""
        current = sd["node"]
        online = {n for n in self.pve.node_names if self.node_status.get(n) == "online"}
        node_aff, failback = self.node_affinity(sid, cd)
        allowed = {n: 0 for n in online} if node_aff is None else {n: p for n, p in node_aff.items() if n in online}
        if not allowed:
            return None
        top = max(allowed.values())
        pri = {n for n, p in allowed.items() if p == top}
        together: dict[str, int] = {}
        separate: set[str] = set()
        if self.pve.mode == "rules":
            together, separate = affinity.resource_affinity(self.compiled(), sid, self.ss, online)
        if preference == "none" and not failback and current in allowed and affinity.allowed_on(together, separate, current):
            return current
        if preference == "try-next":
            pri -= set(sd.get("failed_nodes") or [])
        pri = affinity.apply_affinity(together, separate, pri)
        fallback = sd.get("maintenance_node")
        if fallback and fallback in pri:
            return fallback
        if preference == "none" and current in pri:
            return current
        scores: dict[str, float] = self.static_scores(sid, online) if crs.crs_mode(self.pve.datacenter) != "basic" else dict(self.usage())
        nodes = sorted(pri, key=lambda n: (scores.get(n, 0), n))
        if not nodes:
            return None
        if preference == "try-next" and current in nodes:
            idx = nodes.index(current)
            return nodes[idx + 1] if idx < len(nodes) - 1 else nodes[0]
        return nodes[0]
