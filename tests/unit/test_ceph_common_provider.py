"""CephCommonPackage's provider (runbook 2-2), called directly against fake node shells."""

from __future__ import annotations

from typing import Any

import pytest

from components.ceph_common import PackageInputs, PackageProvider, parse_query
from components.errors import OperatorError
from tests.unit.fake_nodes import CEPH_VERSION, FakeCluster

INSTALL = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "ceph-common"]


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster.three()


def props(node: str = "pve-node2", **overrides: Any) -> dict[str, Any]:
    number = node[-1]
    connection = {"host": f"127.10.20.1{number}", "port": 2222, "user": "root", "privateKey": "unused", "knownHosts": ""}
    return {**PackageInputs(connection=connection, node=node, package="ceph-common"), **overrides}


def test_create_installs_the_package_without_questions_and_reads_its_version_back(cluster: FakeCluster) -> None:
    del cluster.nodes["pve-node2"].packages["ceph-common"]
    result = PackageProvider(cluster.executor).create(props())
    assert ("pve-node2", INSTALL) in cluster.commands
    assert (result.id, result.outs["version"]) == ("pve-node2/ceph-common", CEPH_VERSION)
    assert cluster.commands[-1] == ("pve-node2", ["dpkg-query", "-W", "-f=${Status}\\t${Version}", "ceph-common"])


def test_create_on_a_node_that_has_it_installs_nothing(cluster: FakeCluster) -> None:
    result = PackageProvider(cluster.executor).create(props())
    assert result.outs["version"] == CEPH_VERSION
    assert not cluster.ran("pve-node2", "env DEBIAN_FRONTEND")


@pytest.mark.parametrize("how", ["removed", "purged"])
def test_a_package_removed_by_hand_reads_as_gone_so_preview_shows_it_to_be_created(cluster: FakeCluster, how: str) -> None:
    provider = PackageProvider(cluster.executor)
    outs = provider.create(props()).outs
    if how == "removed":  # `apt-get remove`: dpkg keeps the config files
        cluster.nodes["pve-node2"].packages["ceph-common"] = ("deinstall ok config-files", CEPH_VERSION)
    else:  # `apt-get purge`: dpkg forgets it
        del cluster.nodes["pve-node2"].packages["ceph-common"]
    assert provider.read("pve-node2/ceph-common", outs).id == ""


def test_up_puts_a_removed_package_back(cluster: FakeCluster) -> None:
    provider = PackageProvider(cluster.executor)
    provider.create(props())
    cluster.nodes["pve-node2"].packages["ceph-common"] = ("deinstall ok config-files", CEPH_VERSION)
    provider.create(props())  # the engine dropped it on refresh: the next up creates it again
    assert cluster.nodes["pve-node2"].packages["ceph-common"][0] == "install ok installed"


def test_an_installed_package_reads_back_unchanged(cluster: FakeCluster) -> None:
    provider = PackageProvider(cluster.executor)
    outs = provider.create(props()).outs
    read = provider.read("pve-node2/ceph-common", outs)
    assert (read.id, read.outs["version"]) == ("pve-node2/ceph-common", CEPH_VERSION)
    assert provider.diff(read.id, read.outs, props()).changes is False


def test_an_upgraded_package_is_not_drift(cluster: FakeCluster) -> None:
    provider = PackageProvider(cluster.executor)
    outs = provider.create(props()).outs
    assert provider.diff("pve-node2/ceph-common", {**outs, "version": "18.2.4-pve3"}, props()).changes is False


def test_another_node_is_a_replacement(cluster: FakeCluster) -> None:
    assert PackageProvider(cluster.executor).diff("pve-node2/ceph-common", props(), props("pve-node3")).replaces == ["node"]


def test_a_failed_install_names_the_node_and_the_fix(cluster: FakeCluster) -> None:
    node = cluster.nodes["pve-node2"]
    del node.packages["ceph-common"]
    node.apt_error = "E: Unable to locate package ceph-common\n"
    with pytest.raises(OperatorError, match=r"^pve-node2: apt-get install -y ceph-common failed \(exit 100\): E: Unable to locate package.*APT sources"):
        PackageProvider(cluster.executor).create(props())


def test_delete_never_removes_the_package(cluster: FakeCluster) -> None:
    provider = PackageProvider(cluster.executor)
    outs = provider.create(props()).outs
    count = len(cluster.commands)
    provider.delete("pve-node2/ceph-common", outs)
    assert len(cluster.commands) == count
    assert cluster.nodes["pve-node2"].packages["ceph-common"][0] == "install ok installed"


def test_a_node_that_is_down_keeps_its_recorded_state_on_refresh(cluster: FakeCluster) -> None:
    """During a failover the node is powered off: refresh must not fail, nor drop the package."""
    provider = PackageProvider(cluster.executor)
    outs = provider.create(props()).outs
    cluster.power_off("pve-node2")
    read = provider.read("pve-node2/ceph-common", outs)
    assert (read.id, read.outs) == ("pve-node2/ceph-common", outs)


def test_a_node_that_answers_wrongly_is_an_error_not_a_node_down(cluster: FakeCluster) -> None:
    provider = PackageProvider(cluster.executor)
    outs = provider.create(props()).outs
    cluster.nodes["pve-node2"].ssh_error = "the host key changed since it was recorded in known_hosts; verify the host and update ssh.knownHostsFile"
    with pytest.raises(OperatorError, match=r"^ceph-common on pve-node2: SSH to .*the host key changed"):
        provider.read("pve-node2/ceph-common", outs)


def test_create_on_a_node_that_is_down_is_a_clear_error(cluster: FakeCluster) -> None:
    cluster.power_off("pve-node2")
    with pytest.raises(OperatorError, match=r"^ceph-common on pve-node2: SSH to root@127.10.20.12:2222 failed: Connection refused"):
        PackageProvider(cluster.executor).create(props())


@pytest.mark.parametrize(
    ("exit_status", "stdout", "stderr", "version"),
    [
        (0, "install ok installed\t16.2.15+ds-0+deb12u2", "", "16.2.15+ds-0+deb12u2"),
        (0, "deinstall ok config-files\t16.2.15+ds-0+deb12u2", "", None),
        (0, "install ok half-configured\t16.2.15+ds-0+deb12u2", "", None),
        (1, "", "dpkg-query: no packages found matching ceph-common\n", None),
    ],
)
def test_dpkg_query_answers(exit_status: int, stdout: str, stderr: str, version: str | None) -> None:
    assert parse_query("pve-node1", "ceph-common", exit_status, stdout, stderr) == version


def test_dpkg_query_failing_otherwise_is_an_error() -> None:
    with pytest.raises(OperatorError, match=r"pve-node1: dpkg-query -W ceph-common failed \(exit 2\): dpkg-query: error: parsing file"):
        parse_query("pve-node1", "ceph-common", 2, "", "dpkg-query: error: parsing file '/var/lib/dpkg/status'")
