"""The lab nodes' packages (lab/pve/shims): each node has its own dpkg view, so `ceph-common
removed from a node by hand` can be made, seen by CephCommonPackage's refresh, and put back.

Needs the running lab (`python -m lab up`); skipped without it. Never starts or stops the lab.
Every test puts ceph-common back on every node it touched, whatever happened.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import lab  # noqa: E402
from lab import sshd  # noqa: E402

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]  # lab: needs the running lab (tools/run-tests.sh selects by marks)

NODE = "pve-node3"  # the node these tests remove the package from
OTHERS = ("pve-node1", "pve-node2")
QUERY = "dpkg-query -W -f='${Status}\\t${Version}' ceph-common"


def host_version() -> str:
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", "ceph-common"], capture_output=True, text=True, check=True).stdout


def ssh(role: str, command: str, *, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*sshd.ssh_argv(role), command], input=input, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def ssh_info() -> dict[str, Any]:
    try:
        info = lab.load()["ssh"]
    except (lab.LabError, KeyError, ValueError):
        pytest.skip("needs the running lab (python -m lab up)")
    if not all(lab.port_open(info["hosts"][node], info["port"]) for node in (NODE, *OTHERS)):
        pytest.skip("the lab's PVE nodes' sshd do not answer")
    return dict(info)


@pytest.fixture(autouse=True)
def put_back(ssh_info: dict[str, Any]) -> Iterator[None]:
    yield
    for node in (NODE, *OTHERS):
        ssh(node, "apt-get install -y ceph-common")


def test_dpkg_query_on_a_node_answers_as_the_real_one() -> None:
    done = ssh(NODE, QUERY)
    assert (done.returncode, done.stdout) == (0, f"install ok installed\t{host_version()}")


def test_apt_get_remove_removes_it_from_that_node_only() -> None:
    done = ssh(NODE, "apt-get remove -y ceph-common")
    assert done.returncode == 0, done.stderr
    assert "The following packages will be REMOVED:\n  ceph-common\n" in done.stdout
    assert f"Removing ceph-common ({host_version()}) ..." in done.stdout
    assert ssh(NODE, QUERY).stdout == f"deinstall ok config-files\t{host_version()}"  # dpkg keeps its config files
    for other in OTHERS:
        assert ssh(other, QUERY).stdout == f"install ok installed\t{host_version()}", other
    assert host_version()  # the host's own package is untouched


def test_apt_get_install_puts_it_back() -> None:
    ssh(NODE, "apt-get remove -y ceph-common")
    done = ssh(NODE, "DEBIAN_FRONTEND=noninteractive apt-get install -y ceph-common")
    assert done.returncode == 0, done.stderr
    assert "The following NEW packages will be installed:\n  ceph-common\n" in done.stdout
    assert f"Setting up ceph-common ({host_version()}) ..." in done.stdout
    assert ssh(NODE, QUERY).stdout == f"install ok installed\t{host_version()}"
    again = ssh(NODE, "apt-get install -y ceph-common")
    assert f"ceph-common is already the newest version ({host_version()})." in again.stdout


def test_a_purged_package_is_unknown_to_dpkg_query() -> None:
    assert ssh(NODE, "apt-get purge -y ceph-common").returncode == 0
    done = ssh(NODE, QUERY)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", "dpkg-query: no packages found matching ceph-common\n")


@pytest.mark.parametrize(("command", "status"), [("dpkg -r ceph-common", "deinstall ok config-files"), ("dpkg -P ceph-common", None)])
def test_dpkg_removes_it_too(command: str, status: str | None) -> None:
    assert ssh(NODE, command).returncode == 0
    done = ssh(NODE, QUERY)
    assert done.stdout == (f"{status}\t{host_version()}" if status else ""), done


def test_apt_get_remove_without_yes_asks_and_an_ssh_session_without_input_aborts() -> None:
    done = ssh(NODE, "apt-get remove ceph-common", input="")
    assert done.returncode == 1 and done.stdout.endswith("Do you want to continue? [Y/n] Abort.\n"), done
    assert ssh(NODE, QUERY).stdout.startswith("install ok installed\t")


def test_dpkg_l_shows_a_removed_package_as_rc() -> None:
    ssh(NODE, "apt-get remove -y ceph-common")
    line = ssh(NODE, "dpkg -l ceph-common").stdout.splitlines()[-1]
    assert line.startswith("rc  ceph-common ") and host_version() in line


def test_the_package_provider_sees_a_package_removed_by_hand_and_puts_it_back(ssh_info: dict[str, Any]) -> None:
    """CephCommonPackage over real SSH: refresh drops it from the state, the next up creates it again."""
    from components.ceph_common import PackageProvider

    connection = {
        "host": ssh_info["hosts"][NODE],
        "port": ssh_info["port"],
        "user": ssh_info["user"],
        "privateKey": Path(ssh_info["private_key_path"]).read_text(),
        "knownHosts": Path(ssh_info["known_hosts"]).read_text(),
    }
    props = {"connection": connection, "node": NODE, "package": "ceph-common"}
    provider = PackageProvider()
    created = provider.create(props)
    assert created.outs["version"] == host_version()
    assert provider.read(created.id, created.outs).id == created.id
    ssh(NODE, "apt-get remove -y ceph-common")
    assert provider.read(created.id, created.outs).id == ""
    again = provider.create(props)
    assert again.outs["version"] == host_version()
    assert ssh(NODE, QUERY).stdout == f"install ok installed\t{host_version()}"
