"""`python -m maintain`'s checks (maintain/checks.py): each refusal, with its fix, from a view of the
cluster; and the command's argument rules."""

from __future__ import annotations

import io

from maintain import checks
from maintain.cli import Maintenance, parser

GIB = 1024**3
NODES = ("pve-node1", "pve-node2", "pve-node3")


def view(**extra) -> checks.View:
    v = checks.View(
        nodes={n: True for n in NODES},
        ha_nodes={n: "online" for n in NODES},
        free={n: 6 * GIB for n in NODES},
        services={f"vm:{100 + i}": checks.Service(f"vm:{100 + i}", n, "started", GIB) for i, n in enumerate(NODES, 1)},
        quorate=True,
        master="pve-node1",
    )
    for key, value in extra.items():
        setattr(v, key, value)
    return v


def test_a_healthy_cluster_can_take_any_node() -> None:
    for node in NODES:
        assert checks.problems(view(), node) == []


def test_quorum_a_node_down_and_rolling() -> None:
    v = view(nodes={"pve-node1": True, "pve-node2": True, "pve-node3": False})
    assert checks.problems(v, "pve-node1") == ["without pve-node1 1 of 3 nodes stay online: quorum needs 2; bring the down node(s) back first (pve-node3)"]
    assert "pve-node3 is down: a rolling maintenance needs every node up; bring it back first" in checks.problems(v, "pve-node1", rolling=True)
    assert checks.problems(v, "pve-node3") == ["pve-node3 is offline: maintenance moves VMs off a running node; bring it back first"]
    assert checks.problems(v, "pve-node9")[0].startswith("pve-node9 is not a node of this cluster")


def test_memory_and_the_ha_manager() -> None:
    v = view(free={"pve-node1": 0, "pve-node2": GIB // 2, "pve-node3": 0})
    assert checks.problems(v, "pve-node1") == ["pve-node1's HA VMs need 1024 MiB, the other online nodes have 512 MiB free: stop or move some VMs first"]
    v = view()
    v.services["vm:102"].state = "error"
    assert "vm:102 is in error: fix it and ha-manager set vm:102 --state started first" in checks.problems(v, "pve-node1")
    assert "the HA manager has no quorum or no master" in checks.problems(view(master=None), "pve-node1")[0]
    v = view(ha_nodes={"pve-node1": "online", "pve-node2": "maintenance", "pve-node3": "online"})
    assert checks.problems(v, "pve-node1") == ["pve-node2 already in maintenance: one node at a time; disable it first"]


def test_node_and_resource_affinity() -> None:
    v = view(strict_nodes={"vm:101": {"pve-node1"}})
    assert checks.problems(v, "pve-node1") == [
        "vm:101 may run only on pve-node1 (a strict node affinity): it cannot leave pve-node1; widen its rule or group first"
    ]
    v = view(apart={"vm:101": {"vm:102", "vm:103"}})
    assert checks.problems(v, "pve-node1") == [
        "vm:101 is kept apart from vm:102, vm:103, which run on pve-node2, pve-node3: no node is left for it; add a node or relax the rule"
    ]
    assert checks.problems(view(apart={"vm:101": {"vm:102"}}), "pve-node1") == []  # pve-node3 is left


def test_one_node_or_all() -> None:
    out = io.StringIO()
    assert Maintenance(parser().parse_args(["--lab-file", "/nonexistent"]), out).run() == 2
    assert "name one node, or --all" in out.getvalue()
    out = io.StringIO()
    assert Maintenance(parser().parse_args(["pve-node1", "--all"]), out).run() == 2


def test_an_interrupt_says_how_to_end_the_maintenance(monkeypatch, capsys) -> None:
    from maintain import cli

    def interrupted(self) -> int:
        self.runs.append(cli.NodeRun("pve-node2"))
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.Maintenance, "run", interrupted)
    assert cli.main(["pve-node2", "--lab-file", "/nonexistent"]) == 130
    assert "ha-manager crm-command node-maintenance disable pve-node2" in capsys.readouterr().out
