"""`ha.resourceAffinities`: the rules between keys, so that PVE never drops a rule the stack makes.

PVE 9 checks the whole rule set when a rule is made (API2/HA/Rules.pm $assert_feasibility) and
again whenever the HA manager compiles it, dropping each infeasible rule ("Drop rule 'x',
because ...", Manager.pm manage): a pair meant to stay apart would then share a node after a
failover, silently. So every check of pve-ha-manager's Rules/ResourceAffinity.pm and the
inter-plugin checks of Rules.pm run here, on the config, before anything changes, and name the
key, the value, the rule and the fix:

- a rule names HA VMs of `vms`, two or more (check_resource_affinity_resources_count);
- `apart` names no more VMs than there are nodes (check_negative_resource_affinity_resources_count);
- no two VMs are both together and apart, counting `together` rules that share a VM as one
  (check_inter_resource_affinity_rules_consistency, Helpers.pm find_disjoint_rules_resource_sets);
- a VM of a resource-affinity rule has a node affinity of one priority
  (check_single_priority_node_affinity_in_resource_affinity_rules);
- the VMs kept together name at most one node affinity (check_single_node_affinity_per_positive_resource_affinity_rule);
- the VMs kept apart are not pinned to fewer nodes than VMs (check_negative_resource_affinity_node_affinity_consistency);
- PVE 8 (`ha.mode: groups`) has no HA rules: refused with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from components.config_base import _entries, _true_or_false

Problem = tuple[str, Any, str]


def _is_ha(vm: Mapping[str, Any]) -> bool:
    try:
        return bool(_true_or_false(vm.get("ha", True)))
    except ValueError:
        return True  # refused by its own field check


def _groups(rules: list[tuple[int, set[str]]]) -> list[tuple[list[int], set[str]]]:
    """`together` rules sharing a VM are one group (PVE merges them: find_disjoint_rules_resource_sets)."""
    out: list[tuple[list[int], set[str]]] = []
    for i, names in rules:
        hits = [g for g in out if g[1] & names]
        merged = ([i], set(names))
        for g in hits:
            merged[0].extend(g[0])
            merged[1].update(g[1])
            out.remove(g)
        out.append((sorted(merged[0]), merged[1]))
    return out


def resource_affinity_checks(raw: Mapping[str, Any], vms: list[tuple[int, Mapping[str, Any]]], nodes: list[str]) -> list[Problem]:
    rules = _entries(raw, "ha", "resourceAffinities")
    if not rules:
        return []
    ha = raw.get("ha")
    if isinstance(ha, Mapping) and ha.get("mode", "rules") == "groups":
        why = "resource affinity is an HA rule of PVE 9; PVE 8 (ha.mode: groups) has HA groups and no rules: on PVE 9 set ha.mode: rules, on PVE 8 remove ha.resourceAffinities"
        return [("ha.resourceAffinities", [rule.get("name") for _, rule in rules], why)]
    problems: list[Problem] = []
    by_name = {str(vm.get("name")): vm for _, vm in vms if isinstance(vm.get("name"), str)}
    node_affinities = {str(a.get("name")): a for _, a in _entries(raw, "ha", "affinities")}
    taken = set(node_affinities)
    members: dict[int, set[str]] = {}
    for i, rule in rules:
        name = rule.get("name")
        if isinstance(name, str) and name in taken:
            problems.append((f"ha.resourceAffinities[{i}].name", name, "HA rule names must be unique across ha.affinities and ha.resourceAffinities"))
        taken.add(str(name))
        listed = rule.get("vms")
        members[i] = set()
        for j, vm_name in enumerate(listed if isinstance(listed, list) else []):
            if not isinstance(vm_name, str):
                continue
            vm = by_name.get(vm_name)
            if vm is None:
                problems.append((f"ha.resourceAffinities[{i}].vms[{j}]", vm_name, f"must name a VM of vms ({', '.join(sorted(by_name)) or 'none defined'})"))
            elif not _is_ha(vm):
                problems.append((f"ha.resourceAffinities[{i}].vms[{j}]", vm_name, "must name an HA VM: this one has ha: false, so HA never places it"))
            else:
                members[i].add(vm_name)
    keep = {i: rule.get("keep") for i, rule in rules}
    apart = [(i, members[i]) for i, _ in rules if keep[i] == "apart"]
    together = _groups([(i, members[i]) for i, _ in rules if keep[i] == "together"])
    for i, names in apart:
        if nodes and len(names) > len(nodes):
            problems.append(
                (f"ha.resourceAffinities[{i}].vms", sorted(names), f"keeps {len(names)} VMs apart on {len(nodes)} nodes: name at most {len(nodes)}")
            )
        for ids, group in together:
            shared = sorted(names & group)
            if len(shared) >= 2:
                where = ", ".join(f"ha.resourceAffinities[{t}]" for t in ids)
                why = f"keeps {' and '.join(shared)} apart while {where} keeps them together; PVE would drop both rules: remove one"
                problems.append((f"ha.resourceAffinities[{i}].vms", sorted(names), why))
    problems += _with_node_affinity(rules, members, by_name, node_affinities, keep, together)
    return problems


def _with_node_affinity(
    rules: list[tuple[int, Mapping[str, Any]]],
    members: dict[int, set[str]],
    by_name: dict[str, Mapping[str, Any]],
    node_affinities: dict[str, Mapping[str, Any]],
    keep: dict[int, Any],
    together: list[tuple[list[int], set[str]]],
) -> list[Problem]:
    """The inter-plugin checks of Rules.pm, with the node affinities (ha.affinities) the VMs name."""
    problems: list[Problem] = []

    def affinity_of(vm_name: str) -> str | None:
        name = by_name[vm_name].get("affinity")
        return name if isinstance(name, str) and name in node_affinities else None

    for i, _ in rules:
        for vm_name in sorted(members[i]):
            name = affinity_of(vm_name)
            prios = node_affinities[name].get("nodes") if name else None
            if isinstance(prios, Mapping) and len({str(p) for p in prios.values()}) > 1:
                rule = f"is pinned by ha.affinities '{name}', whose nodes have different priorities; PVE drops such a rule: give its nodes one priority"
                problems.append((f"ha.resourceAffinities[{i}].vms", vm_name, rule))
    for ids, group in together:
        names = sorted({a for a in (affinity_of(v) for v in group) if a})
        if len(names) > 1:
            rule = f"keeps together VMs of {len(names)} node affinities ({', '.join(names)}); PVE drops it: give them one ha.affinities entry"
            problems.append((f"ha.resourceAffinities[{ids[0]}].vms", sorted(group), rule))
    for i, _ in rules:
        if keep[i] != "apart":
            continue
        pinned = {v: a for v in members[i] if (a := affinity_of(v))}
        allowed = {n for a in set(pinned.values()) for n in (node_affinities[a].get("nodes") or {})}
        if pinned and len(allowed) < len(pinned):
            rule = f"keeps {len(pinned)} VMs apart that their node affinities allow on {len(allowed)} node(s) ({', '.join(sorted(allowed))}); PVE drops it: widen ha.affinities"
            problems.append((f"ha.resourceAffinities[{i}].vms", sorted(pinned), rule))
    return problems
