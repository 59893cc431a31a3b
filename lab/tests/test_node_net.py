"""`ip` on the lab's PVE nodes (lab/pve/shims/ip, lab/node_network.py): the host's iproute2 passed
through (every node shares the host's loopback network), with a node's per-interface overrides
(mtu, master) applied to `ip -j link` / `ip -j addr`; `python -m lab node-net` and
lab.set_node_link / lab.reset_node_net set them.

The shim runs locally against a temporary state dir (PVE_LAB_NODE, LAB_STATE_DIR), so no lab is
needed; the same commands over SSH on a node and on the Ceph admin node are in test_ceph_sshd.py
(its fresh lab).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import lab  # noqa: E402
from lab import node_network, paths  # noqa: E402

SHIM = ROOT / "lab" / "pve" / "shims" / "ip"
REAL_IP = shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")

pytestmark = [pytest.mark.timeout(60), pytest.mark.skipif(REAL_IP is None, reason="the host has no ip (iproute2)")]


@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    """A private state dir: lab.set_node_link writes there, the shim reads there."""
    monkeypatch.setattr(paths, "NODES", tmp_path / "nodes")
    return tmp_path


def node_ip(state: Path, *argv: str, node: str = "pve-node1") -> subprocess.CompletedProcess:
    env = dict(os.environ, PVE_LAB_NODE=node, LAB_STATE_DIR=str(state), PATH=f"{SHIM.parent}:{os.environ.get('PATH', '')}")
    return subprocess.run(["ip", *argv], capture_output=True, text=True, env=env, timeout=30)


def host_ip(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REAL_IP), *argv], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    "argv",
    [("-j", "route", "get", "127.10.10.101"), ("-j", "link", "show", "dev", "lo"), ("-j", "link", "show"), ("-j", "addr"), ("link", "show", "dev", "lo")],
)
def test_without_overrides_a_node_answers_as_the_host(state, argv):
    mine, host = node_ip(state, *argv), host_ip(*argv)
    assert (mine.returncode, mine.stderr) == (host.returncode, host.stderr)
    if argv[0] == "-j":
        assert json.loads(mine.stdout) == json.loads(host.stdout)
    else:
        assert mine.stdout == host.stdout


def test_route_get_passes_through_unchanged_even_with_overrides(state):
    lab.set_node_link("pve-node1", "lo", mtu=1500, master="vmbr0")
    mine = node_ip(state, "-j", "route", "get", "127.10.10.101")
    assert mine.returncode == 0
    assert mine.stdout == host_ip("-j", "route", "get", "127.10.10.101").stdout
    assert json.loads(mine.stdout)[0]["dev"] == "lo"


def test_mtu_and_master_overrides_change_only_those_fields(state):
    assert lab.set_node_link("pve-node1", "lo", mtu=1500, master="vmbr0") == {"mtu": 1500, "master": "vmbr0"}
    assert json.loads((state / "nodes" / "pve-node1" / "network.json").read_text()) == {"links": {"lo": {"master": "vmbr0", "mtu": 1500}}}
    host = json.loads(host_ip("-j", "link", "show", "dev", "lo").stdout)[0]
    mine = node_ip(state, "-j", "link", "show", "dev", "lo")
    assert mine.returncode == 0 and mine.stdout.endswith("]\n")
    got = json.loads(mine.stdout)[0]
    assert got["mtu"] == 1500 and got["master"] == "vmbr0"
    assert {k: v for k, v in got.items() if k not in ("mtu", "master")} == {k: v for k, v in host.items() if k not in ("mtu", "master")}
    keys = list(got)
    assert keys.index("master") == keys.index("qdisc") + 1  # where iproute2 prints it (ipaddress.c print_linkinfo)
    whole = json.loads(node_ip(state, "-j", "link", "show").stdout)
    assert [e for e in whole if e["ifname"] == "lo"] == [got]
    assert [e for e in whole if e["ifname"] != "lo"] == [e for e in json.loads(host_ip("-j", "link", "show").stdout) if e["ifname"] != "lo"]
    addr = json.loads(node_ip(state, "-j", "addr", "show", "dev", "lo").stdout)[0]
    assert (addr["mtu"], addr["master"]) == (1500, "vmbr0")
    assert addr["addr_info"] == json.loads(host_ip("-j", "addr", "show", "dev", "lo").stdout)[0]["addr_info"]
    pretty = node_ip(state, "-j", "-p", "link", "show", "dev", "lo")
    assert json.loads(pretty.stdout) == [got]
    # abbreviations as iproute2 takes them: `ip -j l`, `ip -j a s lo`
    assert json.loads(node_ip(state, "-j", "l").stdout) == whole
    assert json.loads(node_ip(state, "-j", "a", "s", "lo").stdout)[0]["master"] == "vmbr0"
    # other nodes keep the host's values; the text form passes through unchanged
    assert json.loads(node_ip(state, "-j", "link", "show", "dev", "lo", node="pve-node2").stdout)[0] == host
    assert node_ip(state, "link", "show", "dev", "lo").stdout == host_ip("link", "show", "dev", "lo").stdout


def test_overrides_accumulate_and_reset(state):
    lab.set_node_link("pve-node3", "lo", mtu=9000)
    lab.set_node_link("pve-node3", "lo", master="vmbr1")
    assert lab.node_net("pve-node3") == {"lo": {"mtu": 9000, "master": "vmbr1"}}
    lab.set_node_link("pve-node3", "lo", master="")  # no master, whatever the host has
    assert lab.node_net("pve-node3") == {"lo": {"mtu": 9000, "master": None}}
    got = json.loads(node_ip(state, "-j", "link", "show", "dev", "lo", node="pve-node3").stdout)[0]
    assert got["mtu"] == 9000 and "master" not in got
    lab.set_node_link("pve-node1", "lo", mtu=1500)
    lab.reset_node_net("pve-node3")
    assert lab.node_net("pve-node3") == {} and lab.node_net("pve-node1") == {"lo": {"mtu": 1500}}
    lab.reset_node_net()
    assert all(lab.node_net(n) == {} for n in node_network.NODES)
    assert json.loads(node_ip(state, "-j", "link", "show", "dev", "lo").stdout) == json.loads(host_ip("-j", "link", "show", "dev", "lo").stdout)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: lab.set_node_link("ceph-admin", "lo", mtu=1500), "unknown node"),
        (lambda: lab.set_node_link("pve-node1", "lo"), "give an mtu and/or a master"),
        (lambda: lab.set_node_link("pve-node1", "lo", mtu=10), "mtu 10"),
        (lambda: lab.set_node_link("pve-node1", "lo", mtu=True), "mtu True"),
        (lambda: lab.set_node_link("pve-node1", "../x", mtu=1500), "not an interface name"),
        (lambda: lab.set_node_link("pve-node1", "lo", master="a bridge"), "not an interface name"),
    ],
)
def test_bad_overrides_are_refused(state, call, message):
    with pytest.raises(lab.LabError, match=message):
        call()
    assert not (state / "nodes").exists() or not any((state / "nodes").rglob("network.json"))


def test_commands_that_would_change_the_host_are_refused(state):
    for argv in (
        ("link", "set", "lo", "mtu", "1500"),
        ("addr", "add", "127.10.99.1/32", "dev", "lo"),
        ("route", "add", "10.99.0.0/16", "dev", "lo"),
        ("-batch", "-"),
    ):
        r = node_ip(state, *argv)
        assert r.returncode == 255 and r.stdout == "" and "lab ip:" in r.stderr, (argv, r)


def test_the_node_net_knob(tmp_path):
    env = dict(os.environ, LAB_STATE_DIR=str(tmp_path))

    def knob(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lab", "node-net", *argv], capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)

    r = knob("pve-node2", "--mtu", "lo=1500", "--master", "lo=vmbr0")
    assert (r.returncode, r.stdout) == (0, "pve-node2: lo master vmbr0 mtu 1500\n"), r.stderr
    assert json.loads((tmp_path / "nodes" / "pve-node2" / "network.json").read_text()) == {"links": {"lo": {"master": "vmbr0", "mtu": 1500}}}
    got = json.loads(node_ip(tmp_path, "-j", "link", "show", "dev", "lo", node="pve-node2").stdout)[0]
    assert (got["mtu"], got["master"]) == (1500, "vmbr0")
    r = knob("--all")
    assert r.stdout == "pve-node1: the host's values\npve-node2: lo master vmbr0 mtu 1500\npve-node3: the host's values\n"
    r = knob("pve-node2", "--mtu", "lo=x")
    assert r.returncode == 1 and "the mtu must be an integer" in r.stderr
    r = knob("pve-node2", "--mtu", "1500")
    assert r.returncode == 1 and "give IF=N" in r.stderr
    r = knob("--all", "--mtu", "lo=1500")
    assert r.returncode == 2
    r = knob("--all", "--reset")
    assert (r.returncode, r.stdout) == (0, "node-net reset: every node\n")
    assert not (tmp_path / "nodes" / "pve-node2" / "network.json").exists()
    helptext = subprocess.run([sys.executable, "-m", "lab", "--help"], capture_output=True, text=True, env=env, cwd=ROOT).stdout
    assert "python -m lab node-net pve-node1 --mtu lo=1500 --master lo=vmbr0" in helptext
    assert "systemctl stop pve-ha-lrm" in helptext and "cluster_network" in helptext
