"""HaPreflight (runbook 4): its parsing of the nodes' answers, and its provider against fake node shells."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi.runtime import rpc

from components import ha_preflight
from components.errors import OperatorError
from components.ha_preflight import PreflightInputs, PreflightProvider, mode_problem, parse_ha_status
from tests.unit.fake_nodes import PVE8, PVE9, FakeCluster

NODES = ["pve-node1", "pve-node2", "pve-node3"]


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster.three()


def props(mode: str = "rules", **overrides: Any) -> dict[str, Any]:
    connections = {node: {"host": f"127.10.20.1{node[-1]}", "port": 2222, "user": "root", "privateKey": "unused", "knownHosts": ""} for node in NODES}
    return {**PreflightInputs(nodes=NODES, connections=connections, mode=mode), **overrides}


def failure(cluster: FakeCluster, **overrides: Any) -> str:
    with pytest.raises(OperatorError) as info:
        PreflightProvider(cluster.executor).create(props(**overrides))
    return str(info.value)


# -- a healthy cluster ---------------------------------------------------------------------


def test_a_healthy_cluster_passes_and_reports_every_node(cluster: FakeCluster) -> None:
    outs = PreflightProvider(cluster.executor).create(props()).outs
    assert outs["report"].splitlines() == [
        "pve-node1: quorum OK, master pve-node1 (active, Mon Nov 24 22:40:00 2025)",
        f"pve-node1: {PVE9} (ha.mode rules)",
        "pve-node1: pve-ha-lrm active, pve-ha-crm active",
        "pve-node2: pve-ha-lrm active, pve-ha-crm active",
        "pve-node3: pve-ha-lrm active, pve-ha-crm active",
    ]
    assert outs["skippedNodes"] == [] and outs["pveVersion"] == PVE9


def test_every_node_is_asked_about_its_ha_services(cluster: FakeCluster) -> None:
    PreflightProvider(cluster.executor).create(props())
    for node in NODES:
        assert (node, ["systemctl", "is-active", "pve-ha-lrm", "pve-ha-crm"]) in cluster.commands


def test_a_healthy_unchanged_preflight_is_evaluated_by_every_check_and_its_diff_shows_no_change(cluster: FakeCluster) -> None:
    provider = PreflightProvider(cluster.executor)
    outs = provider.create(props()).outs
    cluster.commands.clear()
    provider.check(props(), props())  # every preview and up: the engine calls Check with the program's inputs
    assert cluster.ran("pve-node1", "ha-manager status")
    cluster.commands.clear()
    assert provider.diff("ha-preflight", outs, props()).changes is False
    assert cluster.commands == []  # Diff is also called for a refresh: it asks nothing


def test_a_new_preflight_is_evaluated_by_check(cluster: FakeCluster) -> None:
    cluster.nodes["pve-node2"].services["pve-ha-lrm"] = "inactive"
    with pytest.raises(OperatorError, match="pve-node2: pve-ha-lrm is inactive"):
        PreflightProvider(cluster.executor).check({}, props())


def test_nothing_runs_while_an_input_is_unknown(cluster: FakeCluster) -> None:
    PreflightProvider(cluster.executor).check(props(), props(mode=rpc.UNKNOWN))
    assert cluster.commands == []


def test_refresh_runs_nothing(cluster: FakeCluster) -> None:
    read = PreflightProvider(cluster.executor).read("ha-preflight", props())
    assert read.outs == props() and cluster.commands == []


def test_a_changed_mode_is_a_change(cluster: FakeCluster) -> None:
    cluster.version = PVE8
    provider = PreflightProvider(cluster.executor)
    assert provider.diff("ha-preflight", props("rules"), props("groups")).changes is True


# -- a failover in progress ----------------------------------------------------------------


def test_a_node_down_and_fenced_is_reported_not_failed(cluster: FakeCluster) -> None:
    """A failover: pve-node1 powered off; preview shows no change and up does not fail because of it."""
    provider = PreflightProvider(cluster.executor)
    outs = provider.create(props()).outs
    cluster.power_off("pve-node1")
    assert provider.diff("ha-preflight", outs, props()).changes is False
    after = provider.update("ha-preflight", outs, props()).outs
    assert after is not None and after["skippedNodes"] == ["pve-node1"]
    assert "pve-node1: not online in the cluster (the HA manager has it unknown) and not answering SSH: skipped" in after["report"]
    assert after["report"].startswith("pve-node2: quorum OK")  # the cluster's view came from the next node


def test_a_dead_lrm_alone_is_enough_to_call_a_node_not_online(cluster: FakeCluster) -> None:
    """The master itself went down: no CRM updates its node state, but its LRM's timestamp goes stale."""
    cluster.power_off("pve-node1")
    cluster.nodes["pve-node1"].crm = "online"
    outs = PreflightProvider(cluster.executor).create(props()).outs
    assert "lrm pve-node1 (old timestamp - dead?)" in outs["report"]


def test_a_node_that_just_died_is_skipped_with_a_warning_while_quorum_holds(cluster: FakeCluster, capsys: pytest.CaptureFixture[str]) -> None:
    """The seconds after a node dies, before the CRM marks it: the cluster still has it online,
    it does not answer SSH; a quorate cluster manages HA without it, so up goes on (issue #20)."""
    cluster.nodes["pve-node3"].down = True
    ha_preflight._WARNED.clear()  # a warning is printed once per provider process
    provider = PreflightProvider(cluster.executor)
    outs = provider.create(props()).outs
    node = cluster.nodes["pve-node3"]
    node.crm, node.lrm = "unknown", "old timestamp - dead?"  # the CRM marks it before the engine asks again
    provider.update("ha-preflight", outs, props())  # asked again in the same run: no second warning
    assert outs["skippedNodes"] == ["pve-node3"]
    assert "pve-node3: not answering SSH (SSH to root@127.10.20.13:2222 failed: Connection refused); the cluster still has it online: skipped" in outs["report"]
    warning = capsys.readouterr().err
    assert warning.startswith("warning: HA preflight: pve-node3: not answering SSH") and "quorum holds" in warning
    assert warning.count("warning:") == 1


def test_a_node_not_answering_ssh_without_quorum_fails(cluster: FakeCluster) -> None:
    cluster.nodes["pve-node3"].down = True
    for node in NODES:
        cluster.quorum[node] = f"No quorum on node '{node}'!"
    assert "no quorum OK" in failure(cluster)


def test_a_node_not_online_whose_services_are_stopped_still_fails(cluster: FakeCluster) -> None:
    node = cluster.nodes["pve-node3"]
    node.crm, node.lrm, node.services["pve-ha-lrm"] = "unknown", "old timestamp - dead?", "inactive"
    assert "pve-node3: pve-ha-lrm is inactive, not active (running); start it: systemctl start pve-ha-lrm" in failure(cluster)


def test_no_node_answering_is_a_failure(cluster: FakeCluster) -> None:
    for node in NODES:
        cluster.power_off(node)
    assert failure(cluster).startswith("HA preflight: no node answered ha-manager status (SSH to root@127.10.20.11:2222 failed: Connection refused;")


# -- failures with their fix ---------------------------------------------------------------


def test_an_online_node_with_a_stopped_lrm_fails_with_the_fix(cluster: FakeCluster) -> None:
    cluster.nodes["pve-node2"].services["pve-ha-lrm"] = "inactive"
    assert failure(cluster) == "HA preflight: pve-node2: pve-ha-lrm is inactive, not active (running); start it: systemctl start pve-ha-lrm"


def test_every_problem_is_named_at_once(cluster: FakeCluster) -> None:
    cluster.nodes["pve-node2"].services["pve-ha-crm"] = "failed"
    cluster.nodes["pve-node3"].services["pve-ha-lrm"] = "inactive"
    message = failure(cluster)
    assert "pve-node2: pve-ha-crm is failed" in message and "pve-node3: pve-ha-lrm is inactive" in message


@pytest.mark.parametrize(
    ("version", "mode", "message"),
    [
        (PVE9, "groups", "HA preflight: ha.mode is groups, but the cluster runs PVE 9, where HA groups were migrated to HA rules; set ha.mode: rules"),
        (PVE8, "rules", "HA preflight: ha.mode is rules, but the cluster runs PVE 8, which has HA groups and no HA rules; set ha.mode: groups"),
    ],
)
def test_pveversion_must_match_the_ha_mode(cluster: FakeCluster, version: str, mode: str, message: str) -> None:
    cluster.version = version
    assert failure(cluster, mode=mode) == message


@pytest.mark.parametrize(("version", "mode"), [(PVE8, "groups"), (PVE9, "rules")])
def test_pveversion_matching_the_ha_mode_passes(cluster: FakeCluster, version: str, mode: str) -> None:
    cluster.version = version
    assert PreflightProvider(cluster.executor).create(props(mode)).outs["pveVersion"] == version


@pytest.mark.parametrize(
    ("answer", "mode", "outcome"),
    [
        (PVE8, "groups", None),
        (PVE9, "rules", None),
        ("pve-manager/10.0.1/0123456789abcdef (running kernel: 6.17.1-1-pve)", "rules", None),
        (PVE9, "groups", "set ha.mode: rules"),
        (PVE8, "rules", "set ha.mode: groups"),
        ("command not found", "rules", "cannot read the PVE version from: command not found"),
    ],
)
def test_the_ha_mode_check_reads_pveversion(answer: str, mode: str, outcome: str | None) -> None:
    problem = mode_problem(answer + "\n", mode)
    assert problem is None if outcome is None else outcome in (problem or "")


def test_no_quorum_anywhere_fails_with_the_fix(cluster: FakeCluster) -> None:
    cluster.quorum = {node: f"No quorum on node '{node}'!" for node in NODES}
    assert "no quorum OK in ha-manager status (pve-node1: quorum No quorum on node 'pve-node1'!); fix the cluster (pvecm status) first" in failure(cluster)


def test_an_isolated_first_node_does_not_speak_for_the_cluster(cluster: FakeCluster) -> None:
    cluster.quorum = {"pve-node1": "No quorum on node 'pve-node1'!"}
    outs = PreflightProvider(cluster.executor).create(props()).outs
    assert outs["report"].startswith("pve-node2: quorum OK")


def test_no_master_fails_with_the_fix(cluster: FakeCluster) -> None:
    cluster.master = None
    assert failure(cluster) == "HA preflight: ha-manager status shows no master; check pve-ha-crm on every node"


def test_a_node_whose_ssh_fails_otherwise_is_a_failure_reported_once(cluster: FakeCluster) -> None:
    cluster.nodes["pve-node1"].ssh_error = "the host key changed since it was recorded in known_hosts; verify the host and update ssh.knownHostsFile"
    message = failure(cluster)
    assert message.count("the host key changed") == 1 and message.startswith("HA preflight: pve-node1: SSH to root@127.10.20.11:2222")


# -- parsing -------------------------------------------------------------------------------

LAB_STATUS = """quorum OK
master pve-node1 (active, Mon Nov 24 22:40:00 2025)
lrm pve-node1 (active, Mon Nov 24 22:40:01 2025)
lrm pve-node2 (idle, Mon Nov 24 22:40:01 2025)
lrm pve-node3 (old timestamp - dead?, Mon Nov 24 22:38:12 2025)
lrm pve-node4 (unable to read lrm status)
lrm pve-node5 (maintenance mode, Mon Nov 24 22:40:01 2025)
service vm:101 (pve-node1, started)
full cluster state:
{
   "manager_status": {"master_node": "pve-node1", "node_status": {"pve-node1": "online", "pve-node2": "fence", "pve-node3": "unknown", "pve-node5": "maintenance"}}
}
"""


def test_ha_status_lines_and_node_states_are_read() -> None:
    status = parse_ha_status(LAB_STATUS)
    assert (status.quorum, status.master) == ("OK", "pve-node1 (active, Mon Nov 24 22:40:00 2025)")
    assert status.lrm == {
        "pve-node1": "active",
        "pve-node2": "idle",
        "pve-node3": "old timestamp - dead?",
        "pve-node4": "unable to read lrm status",
        "pve-node5": "maintenance mode",
    }
    assert status.services == {"vm:101": ("pve-node1", "started")}
    assert [node for node in ("pve-node1", "pve-node2", "pve-node3", "pve-node4", "pve-node5") if status.not_online(node)] == [
        "pve-node2",
        "pve-node3",
        "pve-node4",
    ]


def test_ha_status_without_the_verbose_part_still_reads_the_lrm_lines() -> None:
    status = parse_ha_status(LAB_STATUS.split("full cluster state:")[0])
    assert status.node_status == {} and status.not_online("pve-node3") == "lrm pve-node3 (old timestamp - dead?)"
