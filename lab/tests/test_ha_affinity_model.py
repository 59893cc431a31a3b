"""The lab's HA rules model (lab/pve/ha/affinity.py) against pve-ha-manager's Rules.pm,
Rules/ResourceAffinity.pm and Rules/NodeAffinity.pm: each feasibility check with PVE's text, the
transforms, and where resource affinity lets a service run. No lab needed."""

from __future__ import annotations

from lab.pve.ha import affinity

NODES = ["pve-node1", "pve-node2", "pve-node3"]


def rules(**defs: dict) -> dict:
    raw = {}
    for rid, d in defs.items():
        raw[rid] = dict(d, resources=",".join(d["resources"]))
    return affinity.enabled(raw, {rid: i for i, rid in enumerate(defs)})


def apart(*sids: str) -> dict:
    return {"type": "resource-affinity", "affinity": "negative", "resources": list(sids)}


def together(*sids: str) -> dict:
    return {"type": "resource-affinity", "affinity": "positive", "resources": list(sids)}


def pinned(nodes: str, *sids: str, strict: int = 0) -> dict:
    return {"type": "node-affinity", "nodes": nodes, "strict": strict, "resources": list(sids)}


def test_a_feasible_set_has_no_errors():
    assert affinity.feasibility_errors(rules(a=apart("vm:1", "vm:2"), b=together("vm:3", "vm:4"), n=pinned("pve-node1", "vm:3")), NODES) == {}


def test_each_check_of_resource_affinity_with_pves_text():
    errors = affinity.feasibility_errors(
        rules(one=apart("vm:1"), many=apart("vm:1", "vm:2", "vm:3", "vm:4"), pos=together("vm:5", "vm:6"), neg=apart("vm:5", "vm:6")),
        NODES,
    )
    assert errors == {
        "one": ["rule is ineffective as there are less than two resources"],
        "many": ["rule defines more resources than available nodes"],
        "neg": ["rule shares two or more resources with a positive resource affinity rule"],
        "pos": ["rule shares two or more resources with a negative resource affinity rule"],
    }


def test_connected_positive_rules_conflict_with_a_negative_one_as_a_whole():
    """Helpers.pm find_disjoint_rules_resource_sets: 1-2 and 2-3 together make 1,2,3 one group."""
    errors = affinity.feasibility_errors(rules(p1=together("vm:1", "vm:2"), p2=together("vm:2", "vm:3"), n=apart("vm:1", "vm:3")), NODES)
    assert sorted(errors) == ["n", "p1", "p2"]


def test_the_inter_plugin_checks():
    multi = affinity.feasibility_errors(rules(n=pinned("pve-node1:2,pve-node2:1", "vm:1"), a=apart("vm:1", "vm:2")), NODES)
    assert multi == {
        "a": ["resources are in node affinity rules with multiple priorities"],
        "n": ["resources are in a resource affinity rule and cannot be in a node affinity rule with multiple priorities"],
    }
    two = affinity.feasibility_errors(rules(n1=pinned("pve-node1", "vm:1"), n2=pinned("pve-node2", "vm:2"), p=together("vm:1", "vm:2")), NODES)
    assert two["p"] == ["resources are in multiple node affinity rules"]
    assert sorted(two) == ["n1", "n2", "p"]
    narrow = affinity.feasibility_errors(rules(n=pinned("pve-node1", "vm:1", "vm:2", strict=1), a=apart("vm:1", "vm:2")), NODES)
    assert narrow["a"] == ["two or more resources are restricted to less nodes than available to the resources"]


def test_a_resource_in_two_node_affinity_rules():
    errors = affinity.feasibility_errors(rules(n1=pinned("pve-node1", "vm:1"), n2=pinned("pve-node2", "vm:1")), NODES)
    assert errors == {r: ["resource 'vm:1' is already used in another node affinity rule"] for r in ("n1", "n2")}


def test_transform_drops_merges_and_infers():
    kept, messages = affinity.transform(
        rules(p1=together("vm:1", "vm:2"), p2=together("vm:2", "vm:3"), n=apart("vm:3", "vm:9"), bad=apart("vm:7")),
        NODES,
    )
    assert messages == ["Drop rule 'bad', because rule is ineffective as there are less than two resources."]
    assert kept["_merged-p1-p2"]["resources"] == {"vm:1", "vm:2", "vm:3"}
    compiled = affinity.compile_rules(kept, NODES)
    # vm:3 is apart from vm:9, so are its partners vm:1 and vm:2 (create_implicit_negative_resource_affinity_rules)
    assert compiled["negative"]["vm:9"] == {"vm:1", "vm:2", "vm:3"}
    assert compiled["positive"]["vm:1"] == {"vm:2", "vm:3"}


def test_positive_partners_join_the_node_affinity_of_one_of_them():
    kept, _ = affinity.transform(rules(n=pinned("pve-node2", "vm:1", strict=1), p=together("vm:1", "vm:2")), NODES)
    assert affinity.compile_rules(kept, NODES)["node-affinity"]["vm:2"] == {"pve-node2": 0}


def test_where_resource_affinity_lets_a_service_run():
    compiled = affinity.compile_rules(rules(a=apart("vm:1", "vm:2"), p=together("vm:1", "vm:3")), NODES)
    ss = {
        "vm:1": {"state": "recovery", "node": "pve-node1"},
        "vm:2": {"state": "started", "node": "pve-node2"},
        "vm:3": {"state": "stopped", "node": "pve-node3"},
    }
    online = {"pve-node2", "pve-node3"}
    together_, separate = affinity.resource_affinity(compiled, "vm:1", ss, online)
    assert (together_, separate) == ({}, {"pve-node2"})  # a stopped partner pulls nowhere
    assert affinity.apply_affinity(together_, separate, online) == {"pve-node3"}
    ss["vm:3"] = {"state": "migrate", "node": "pve-node2", "target": "pve-node3"}
    together_, _ = affinity.resource_affinity(compiled, "vm:1", ss, online)
    assert together_ == {"pve-node3": 1}  # a moving partner counts at its target
    assert affinity.apply_affinity({"pve-node3": 1}, set(), online) == {"pve-node3"}
    assert affinity.allowed_on({}, {"pve-node2"}, "pve-node2") is False
    assert affinity.allowed_on({"pve-node2": 1}, {"pve-node2"}, "pve-node2") is True


# ---------------------------------------------------------------------- CRS (usage.py)


def test_crs_mode_and_a_vms_static_usage():
    from lab.pve.ha import usage

    assert usage.crs_mode({}) == "basic"
    assert usage.crs_mode({"crs": "ha=static,ha-rebalance-on-start=1"}) == "static"
    assert usage.service_usage({"cores": 2, "sockets": 2, "memory": "2048"}) == (4.0, 2 << 30)
    assert usage.service_usage({"cores": 4, "cpulimit": "1.5", "memory": 512}) == (1.5, 512 << 20)


def test_static_scoring_prefers_the_node_with_room_over_the_emptier_one():
    """The basic scheduler counts services; static weighs what they use. pve-node2 holds one big
    VM (6 GiB of 8), pve-node3 two small ones (1 GiB): basic picks pve-node2 (fewer services),
    static pve-node3 (memory weighs most: the highest memory load would be 81 % against 37 %)."""
    from lab.pve.ha import usage

    capacity = {n: (4, 8 << 30) for n in NODES}
    load = {"pve-node1": [0.0, 0], "pve-node2": [2.0, 6 << 30], "pve-node3": [2.0, 1 << 30]}
    scores = usage.static_scores({n: capacity[n] for n in ("pve-node2", "pve-node3")}, load, (1.0, 1 << 30))
    assert min(scores, key=lambda n: (scores[n], n)) == "pve-node3"
    assert usage.topsis([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]) == [0.0, 0.0]  # all alike: no preference
    best, worst = usage.topsis([[0.1, 0.1, 0.1, 0.1], [0.9, 0.9, 0.9, 0.9]])
    assert best == 1.0 and worst == 0.0
