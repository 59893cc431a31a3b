"""HA rules as the scheduler sees them (PVE 9): the feasibility checks, the transforms and the
compiled form, and where resource affinity lets a service run. After pve-ha-manager
src/PVE/HA/Rules.pm (check_feasibility, transform, compile, and the inter-plugin checks and
transforms at its end), Rules/NodeAffinity.pm (check_single_resource_reference,
get_node_affinity), Rules/ResourceAffinity.pm (its checks, merge_connected_positive_resource_affinity_rules,
create_implicit_negative_resource_affinity_rules, get_resource_affinity,
apply_positive/negative_resource_affinity), Rules/Helpers.pm find_disjoint_rules_resource_sets
and Usage.pm get_used_service_nodes.

A rule here is {"type", "resources": set of sids, "nodes": {node: priority or None},
"strict", "affinity"}; only enabled rules take part (foreach_rule exclude_disabled_rules).
The API (api/cluster_ha.py) refuses a rule that makes the set infeasible ("Rule 'x' is
invalid.", API2/HA/Rules.pm $assert_feasibility) and lists each rule's errors; the CRM drops
such rules when it compiles ("Drop rule 'x', because ...", Manager.pm manage)."""

from __future__ import annotations

from typing import Any

from lab.pve.ha.common import parse_node_list, split_list

Rules = dict[str, dict[str, Any]]


def enabled(rules: dict[str, dict[str, Any]], order: dict[str, int]) -> Rules:
    """The config's enabled rules, in their order, with resources as sets and nodes as a map."""
    out: Rules = {}
    for rid in sorted(rules, key=lambda r: (order.get(r, 0), r)):
        rule = rules[rid]
        if rule.get("disable"):
            continue
        out[rid] = {
            "type": rule.get("type"),
            "resources": set(split_list(rule.get("resources"))),
            "nodes": parse_node_list(rule.get("nodes") or ""),
            "strict": bool(int(rule.get("strict") or 0)),
            "affinity": rule.get("affinity") or "positive",
        }
    return out


def _of(rules: Rules, kind: str, affinity: str | None = None) -> Rules:
    return {rid: r for rid, r in rules.items() if r["type"] == kind and (affinity is None or r["affinity"] == affinity)}


def disjoint_sets(rules: Rules) -> list[tuple[list[str], set[str]]]:
    """Helpers.pm find_disjoint_rules_resource_sets: rules sorted by their lowest resource, each
    joining the first set it overlaps."""
    out: list[tuple[list[str], set[str]]] = []
    for rid in sorted(sorted(rules), key=lambda r: min(rules[r]["resources"], default="")):
        for ids, resources in out:
            if resources & rules[rid]["resources"]:
                ids.append(rid)
                resources |= rules[rid]["resources"]
                break
        else:
            out.append(([rid], set(rules[rid]["resources"])))
    return out


def _priorities(rule: dict[str, Any]) -> set[int]:
    return {p if p is not None else 0 for p in rule["nodes"].values()}


def feasibility_errors(rules: Rules, nodes: list[str]) -> dict[str, list[str]]:
    """Rules.pm check_feasibility: every registered check, per rule its messages (on `resources`)."""
    errors: dict[str, list[str]] = {}

    def add(rid: str, message: str) -> None:
        errors.setdefault(rid, []).append(message)

    node_aff = _of(rules, "node-affinity")
    res_aff = _of(rules, "resource-affinity")
    positive, negative = _of(rules, "resource-affinity", "positive"), _of(rules, "resource-affinity", "negative")
    # NodeAffinity.pm check_single_resource_reference
    used: dict[str, list[str]] = {}
    for rid, rule in node_aff.items():
        for sid in rule["resources"]:
            used.setdefault(sid, []).append(rid)
    for sid, rids in sorted(used.items()):
        if len(rids) > 1:
            for rid in rids:
                add(rid, f"resource '{sid}' is already used in another node affinity rule")
    # ResourceAffinity.pm
    for rid, rule in sorted(res_aff.items()):
        if len(rule["resources"]) < 2:
            add(rid, "rule is ineffective as there are less than two resources")
    for rid, rule in sorted(negative.items()):
        if len(rule["resources"]) > len(nodes):
            add(rid, "rule defines more resources than available nodes")
    for ids, resources in disjoint_sets(positive):
        for nid, rule in sorted(negative.items()):
            if len(resources & rule["resources"]) >= 2:
                add(nid, "rule shares two or more resources with a positive resource affinity rule")
                for pid in ids:
                    add(pid, "rule shares two or more resources with a negative resource affinity rule")
    # Rules.pm, the inter-plugin checks
    for rid, rule in sorted(res_aff.items()):
        paired = [nid for nid, n in node_aff.items() if n["resources"] & rule["resources"]]
        if any(len(_priorities(node_aff[nid])) > 1 for nid in paired):
            add(rid, "resources are in node affinity rules with multiple priorities")
            for nid in paired:
                add(nid, "resources are in a resource affinity rule and cannot be in a node affinity rule with multiple priorities")
    for ids, resources in disjoint_sets(positive):
        paired = [nid for nid, n in node_aff.items() if n["resources"] & resources]
        if len(paired) > 1:
            for pid in ids:
                add(pid, "resources are in multiple node affinity rules")
            for nid in paired:
                add(
                    nid,
                    "at least one resource is in a positive resource affinity rule and there are other resources in at least one other node affinity rule already",
                )
    for rid, rule in sorted(negative.items()):
        located: set[str] = set()
        allowed: set[str] = set()
        paired = []
        for nid, n in node_aff.items():
            common = rule["resources"] & n["resources"]
            if common:
                located |= common
                allowed |= set(n["nodes"])
                paired.append(nid)
        if len(allowed) < len(located):
            add(rid, "two or more resources are restricted to less nodes than available to the resources")
            for nid in paired:
                add(
                    nid,
                    "at least one resource is in a negative resource affinity rule and this rule would restrict these to less nodes than available to the resources",
                )
    return errors


def transform(rules: Rules, nodes: list[str]) -> tuple[Rules, list[str]]:
    """Rules.pm transform: the infeasible rules dropped (with Manager.pm's log lines), then the
    transforms: connected positive rules merged, the implicit negative rules of a positive
    group, and a positive group's resources joined to the node affinity rule one of them is in."""
    errors = feasibility_errors(rules, nodes)
    messages = [f"Drop rule '{rid}', because {message}." for rid in sorted(errors) for message in errors[rid]]
    kept = {rid: dict(r, resources=set(r["resources"])) for rid, r in rules.items() if rid not in errors}
    for ids, resources in disjoint_sets(_of(kept, "resource-affinity", "positive")):
        if len(ids) < 2:
            continue
        for rid in ids:
            del kept[rid]
        kept["_merged-" + "-".join(ids)] = {"type": "resource-affinity", "affinity": "positive", "resources": resources, "nodes": {}, "strict": False}
    negative = _of(kept, "resource-affinity", "negative")
    for pid, prule in list(_of(kept, "resource-affinity", "positive").items()):
        separated: dict[str, set[str]] = {}
        for nrule in negative.values():
            for sid in prule["resources"] & nrule["resources"]:
                for csid in nrule["resources"] - {sid}:
                    separated.setdefault(csid, set()).add(sid)
        for csid, sids in sorted(separated.items()):
            for sid in sorted(prule["resources"] - sids):
                kept[f"_implicit-negative-{pid}-{sid}-{csid}"] = {
                    "type": "resource-affinity",
                    "affinity": "negative",
                    "resources": {sid, csid},
                    "nodes": {},
                    "strict": False,
                }
    for prule in _of(kept, "resource-affinity", "positive").values():
        for nrule in _of(kept, "node-affinity").values():
            if nrule["resources"] & prule["resources"]:
                nrule["resources"] |= prule["resources"]
                break
    return kept, messages


def compile_rules(rules: Rules, nodes: list[str]) -> dict[str, Any]:
    """Rules.pm compile: node affinity per resource (NodeAffinity.pm plugin_compile: a non-strict
    rule allows every other node at priority -1) and the positive/negative partners of each."""
    node_affinity: dict[str, dict[str, int]] = {}
    for rule in _of(rules, "node-affinity").values():
        prio = {n: (p if p is not None else 0) for n, p in rule["nodes"].items()}
        if not rule["strict"]:
            for n in nodes:
                prio.setdefault(n, -1)
        for sid in rule["resources"]:
            node_affinity.setdefault(sid, prio)
    positive: dict[str, set[str]] = {}
    negative: dict[str, set[str]] = {}
    for rule in _of(rules, "resource-affinity").values():
        target = positive if rule["affinity"] == "positive" else negative
        for sid in rule["resources"]:
            target.setdefault(sid, set()).update(rule["resources"] - {sid})
    return {"node-affinity": node_affinity, "positive": positive, "negative": negative}


def used_nodes(online: set[str], sd: dict[str, Any]) -> tuple[str | None, str | None]:
    """Usage.pm get_used_service_nodes: the current node (if online) of a service that is not
    stopped, and its target while it moves."""
    state, node, target = sd.get("state"), sd.get("node"), sd.get("target")
    if state in ("stopped", "request_start"):
        return None, None
    current = node if node in online and state in ("started", "request_stop", "fence", "freeze", "error", "recovery", "migrate", "relocate") else None
    moving = target if state in ("migrate", "relocate", "request_start_balance") and target in online else None
    return current, moving


def resource_affinity(compiled: dict[str, Any], sid: str, ss: dict[str, dict[str, Any]], online: set[str]) -> tuple[dict[str, int], set[str]]:
    """ResourceAffinity.pm get_resource_affinity: the nodes where SID's positive partners run (and
    how many), and the nodes where its negative partners run or are moving to."""
    together: dict[str, int] = {}
    separate: set[str] = set()
    for csid in compiled["positive"].get(sid, ()):
        if csid in ss:
            current, moving = used_nodes(online, ss[csid])
            node = moving or current
            if node:
                together[node] = together.get(node, 0) + 1
    for csid in compiled["negative"].get(sid, ()):
        if csid in ss:
            separate |= {n for n in used_nodes(online, ss[csid]) if n}
    return together, separate


def allowed_on(together: dict[str, int], separate: set[str], node: str) -> bool:
    """ResourceAffinity.pm is_allowed_on_node."""
    return bool(together.get(node)) or node not in separate


def apply_affinity(together: dict[str, int], separate: set[str], nodes: set[str]) -> set[str]:
    """apply_negative_resource_affinity, then apply_positive_resource_affinity: the nodes left."""
    nodes = nodes - separate
    possible = sorted((n for n in together if n in nodes), key=lambda n: (-together[n], n))
    return {possible[0]} if possible else nodes
