"""Where a service may and should run: HA groups (PVE 8) and rules (PVE 9), after pve-ha-manager's
Groups.pm, Rules.pm and Rules/NodeAffinity.pm (groups migrated to node-affinity rules, Groups.pm
migrate_groups_to_rules), and Manager.pm select_service_node with the basic scheduler's usage
(Usage/Basic.pm: services per node)."""

from __future__ import annotations

from typing import Any

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

    def node_affinity(self, sid: str, cd: dict[str, Any]) -> tuple[dict[str, int], bool] | None:
        """(nodes with priority, failback) for the service, or None: no restriction."""
        if self.pve.mode == "rules":
            for rid in sorted(self.rules, key=lambda r: self.rule_order.get(r, 0)):
                rule = self.rules[rid]
                if rule.get("type") != "node-affinity" or rule.get("disable"):
                    continue
                if sid not in split_list(rule.get("resources")):
                    continue
                nodes = {n: (p if p is not None else 0) for n, p in parse_node_list(rule["nodes"]).items()}
                if not rule.get("strict"):
                    for n in self.pve.node_names:
                        nodes.setdefault(n, -1)
                return nodes, bool(int(cd.get("failback", 1)))
            return None, bool(int(cd.get("failback", 1)))
        group = self.groups.get(cd.get("group") or "")
        if group is None:
            return None, True
        nodes = {n: (p if p is not None else 0) for n, p in parse_node_list(group["nodes"]).items()}
        if not group.get("restricted"):
            for n in self.pve.node_names:
                nodes.setdefault(n, -1)
        return nodes, not group.get("nofailback")

    def usage(self) -> dict[str, int]:
        count = {n: 0 for n in self.pve.node_names}
        for sd in self.ss.values():
            if sd["state"] in ("started", "request_start", "migrate", "relocate", "recovery"):
                node = sd.get("target") or sd["node"]
                if node in count:
                    count[node] += 1
        return count

    def select_service_node(self, sid: str, cd: dict[str, Any], sd: dict[str, Any], preference: str) -> str | None:
        current = sd["node"]
        online = [n for n in self.pve.node_names if self.node_status.get(n) == "online"]
        affinity, failback = self.node_affinity(sid, cd)
        allowed = {n: 0 for n in online} if affinity is None else {n: p for n, p in affinity.items() if n in online}
        if not allowed:
            return None
        top = max(allowed.values())
        pri = {n for n, p in allowed.items() if p == top}
        if preference == "none" and not failback and current in allowed:
            return current
        if preference == "try-next":
            pri -= set(sd.get("failed_nodes") or [])
        if preference == "none" and current in pri:
            return current
        usage = self.usage()
        nodes = sorted(pri, key=lambda n: (usage.get(n, 0), n))
        if not nodes:
            return None
        if preference == "try-next" and current in nodes:
            idx = nodes.index(current)
            return nodes[idx + 1] if idx < len(nodes) - 1 else nodes[0]
        return nodes[0]
