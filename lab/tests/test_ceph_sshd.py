"""The lab's real Ceph and its sshd: from nothing to HEALTH_OK, the runbook's checks over SSH,
and `down` leaving no process and no listener behind.

Owns the lab for the session: it tears down whatever lab runs first (bring-up from nothing).
Run: .venv/bin/python -m pytest lab/tests -x
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lab
from lab import ceph, paths, sshd

# needs the lab: it brings it up from nothing itself (tools/run-tests.sh selects by these marks)
pytestmark = pytest.mark.lab

UP_TARGET_SECONDS = 60


def _quiet(_msg: str) -> None:
    pass


def ssh(role: str, command: str, *, input: str | None = None, timeout: float = 60):
    return subprocess.run(
        [*sshd.ssh_argv(role), command],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def lab_listeners() -> list[str]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return [ln for ln in out.splitlines() if " 127.10." in f" {ln.split()[3]}"]


def wait_gone(pids, deadline: float = 15.0) -> list[int]:
    """Pids still running after DEADLINE (a zombie waiting for init counts as gone)."""
    end = time.monotonic() + deadline
    while True:
        left = [p for p in pids if lab.alive(p)]
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.1)


@pytest.fixture(scope="session")
def lab_up():
    lab.down(log=_quiet)  # from nothing
    assert not paths.STATE.exists()
    t0 = time.monotonic()
    state = lab.up(log=_quiet, pve=False)
    seconds = time.monotonic() - t0
    daemons = lab.daemon_pids()
    rss = lab.rss_mb(daemons.values())
    yield {"state": state, "seconds": seconds, "rss_mb": rss, "daemons": daemons}
    lab.down(log=_quiet)


@pytest.mark.timeout(300)
def test_bring_up_from_nothing_reaches_health_ok_with_all_pgs_active_clean(lab_up, capsys):
    with capsys.disabled():
        print(f"\n  lab up (ceph + sshd) from nothing: {lab_up['seconds']:.1f}s, RSS of {len(lab_up['daemons'])} daemons: {lab_up['rss_mb']:.0f} MB")
    s = ceph.ceph_json("status")
    assert s["health"]["status"] == "HEALTH_OK", s["health"]
    assert s["quorum_names"] == ["mon1", "mon2", "mon3"]
    assert s["mgrmap"]["available"]
    osd = s["osdmap"].get("osdmap", s["osdmap"])
    assert (osd["num_osds"], osd["num_up_osds"], osd["num_in_osds"]) == (3, 3, 3)
    pg = s["pgmap"]
    assert pg["num_pgs"] > 0
    assert pg["pgs_by_state"] == [{"state_name": "active+clean", "count": pg["num_pgs"]}]
    assert lab_up["seconds"] < UP_TARGET_SECONDS * 2, "far over the 60s target"


def test_lab_json_is_private_and_complete(lab_up):
    st = paths.LAB_JSON.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    data = lab.load()
    assert data == json.loads(json.dumps(lab_up["state"]))
    c, s = data["ceph"], data["ssh"]
    assert c["monitors"] == ["127.10.10.101", "127.10.10.102", "127.10.10.103"]
    assert c["admin_host"] == "127.10.10.101"
    assert (c["public_network"], c["cluster_network"]) == ("127.10.10.0/24", "127.10.30.0/24")
    assert c["fsid"] == ceph.fsid()
    for f in (c["conf"], c["admin_keyring"], s["private_key_path"], s["known_hosts"]):
        assert Path(f).is_absolute() and Path(f).is_file()
    assert s["port"] == 2222 and s["user"] == "root"
    assert s["hosts"] == {"ceph-admin": "127.10.10.101", "pve-node1": "127.10.20.11", "pve-node2": "127.10.20.12", "pve-node3": "127.10.20.13"}
    known = Path(s["known_hosts"]).read_text()
    for host in s["hosts"].values():
        assert f"[{host}]:2222 ssh-ed25519 " in known


def test_ceph_conf_keeps_runbook_defaults(lab_up):
    """Options tests may change stay out of ceph.conf (it would silently win)."""
    conf = paths.CEPH_CONF.read_text()
    for opt in ("mon_max_pg_per_osd", "osd_pool_default_size", "mon_allow_pool_delete"):
        assert opt not in conf
    assert ceph.ceph("config", "get", "mon", "mon_max_pg_per_osd").strip() == "250"
    assert ceph.ceph("config", "get", "mon", "osd_pool_default_size").strip() == "3"
    assert ceph.ceph("config", "get", "mon", "mon_allow_pool_delete").strip() == "true"


def test_ssh_admin_node_runs_ceph_and_rbd(lab_up):
    r = ssh("ceph-admin", "ceph -s && command -v rbd && rbd --version && echo CEPH_CONF=$CEPH_CONF")
    assert r.returncode == 0, r.stderr
    assert "HEALTH_OK" in r.stdout
    assert "quorum mon1,mon2,mon3" in r.stdout
    assert "/usr/bin/rbd" in r.stdout and "ceph version 16.2." in r.stdout
    assert f"CEPH_CONF={paths.CEPH_CONF}" in r.stdout


def test_ssh_pve_nodes_have_their_environment_and_stdin(lab_up):
    for node in ("pve-node1", "pve-node2", "pve-node3"):
        r = ssh(node, 'echo "$PVE_LAB_NODE|$CEPH_CONF|${PATH%%:*}"; cat', input="AQDkey==\n")
        assert r.returncode == 0, r.stderr
        first, piped = r.stdout.splitlines()
        assert first == f"{node}|{paths.node_ceph_conf(node)}|{paths.PVE_SHIMS}"
        assert piped == "AQDkey=="
    assert ssh("pve-node1", "exit 7").returncode == 7


def test_ssh_sessions_have_root_home_as_debian_makes_it_not_this_machines(lab_up):
    """sshd runs each command through root's `bash -c`, which reads ~/.bashrc (Debian's
    SSH_SOURCE_BASHRC): a node's root home holds base-files' dotfiles, never the build machine's."""
    debian = sshd.DEBIAN_DOTFILES / "dot.bashrc"
    for role in sshd.HOSTS:
        r = ssh(role, 'echo "$HOME"; cat ~/.bashrc')
        assert r.returncode == 0, r.stderr
        home, _, bashrc = r.stdout.partition("\n")
        assert home == str(paths.SSH_ROOT_HOME) != os.path.expanduser("~root")
        assert bashrc == (debian.read_text() if debian.is_file() else sshd.DEBIAN_BASHRC)


def test_ssh_rejects_other_keys_and_checks_host_keys(lab_up, tmp_path):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    argv = sshd.ssh_argv("ceph-admin")
    argv[argv.index("-i") + 1] = str(other)
    r = subprocess.run([*argv, "true"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 255 and "Permission denied" in r.stderr
    # the node's host key is not the admin node's: known_hosts pins each address
    wrong = tmp_path / "known_hosts"
    admin_key = Path(lab.load()["ssh"]["known_hosts"]).read_text().splitlines()[0].split(" ", 1)[1]
    wrong.write_text(f"[127.10.20.11]:2222 {admin_key}\n")
    argv = sshd.ssh_argv("pve-node1")
    argv = [a.replace(str(paths.SSH_KNOWN_HOSTS), str(wrong)) for a in argv]
    r = subprocess.run([*argv, "true"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 255 and "HOST IDENTIFICATION HAS CHANGED" in r.stderr


@pytest.mark.timeout(180)
def test_runbook_pool_256_fails_with_erange_32_and_64_work(lab_up):
    r = ssh("ceph-admin", "ceph osd pool create rbd-pool 256")
    assert r.returncode != 0
    assert "ERANGE" in r.stderr and "mon_max_pg_per_osd 250" in r.stderr, r.stderr
    for pgs in (32, 64):
        r = ssh(
            "ceph-admin", f"ceph osd pool create rbd-pool {pgs} && rbd pool init rbd-pool && rbd create --size 1G rbd-pool/vm-101-disk-0 && rbd ls rbd-pool"
        )
        try:
            assert r.returncode == 0, r.stderr
            assert r.stdout.strip().splitlines()[-1] == "vm-101-disk-0"
        finally:
            d = ssh("ceph-admin", "ceph osd pool delete rbd-pool rbd-pool --yes-i-really-really-mean-it")
            assert d.returncode == 0, d.stderr
    assert "rbd-pool" not in ceph.ceph("osd", "pool", "ls")


def test_node_sshd_stops_and_starts_alone(lab_up):
    """What `lab fault NODE poweroff|restore` does to the node's sshd."""
    assert sshd.stop_role("pve-node2")
    assert not lab.port_open("127.10.20.12", 2222)
    assert ssh("pve-node2", "true", timeout=30).returncode == 255
    assert ssh("pve-node1", "true").returncode == 0
    sshd.start_role("pve-node2")
    assert ssh("pve-node2", "echo $PVE_LAB_NODE").stdout.strip() == "pve-node2"


def test_node_sshd_stopped_from_its_own_session(lab_up):
    """A node's `poweroff` shim runs inside an ssh session of that node's sshd: the sshd goes,
    the calling session finishes, and status shows the node's sshd dead."""
    code = "import lab.sshd as s; print(s.stop_role('pve-node3'))"
    r = ssh("pve-node3", f'cd "$LAB_ROOT" && {sys.executable} -c "{code}" && echo survived')
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "survived"]
    assert not lab.port_open("127.10.20.13", 2222)
    assert lab.status()["daemons"]["sshd.pve-node3"] == {"pid": None, "alive": False}
    sshd.start_role("pve-node3")
    assert ssh("pve-node3", "true").returncode == 0


def test_a_runs_reads_share_one_connection_per_host_made_again_after_the_sshd_restarts(lab_up, monkeypatch):
    """The provider process's kept connection (issue #22, clients/ssh.py KeptConnections), against
    a real sshd: two reads, one login; a write, a login of its own; the node's sshd restarted (its
    sessions go with it), the next read logs in again and answers."""
    from clients import ssh as remote

    memo = remote.RunMemo()
    memo.enabled = True
    monkeypatch.setattr(remote, "MEMO", memo)
    monkeypatch.setattr(remote, "KEPT", remote.KeptConnections())
    info = lab.load()["ssh"]
    host = info["hosts"]["pve-node2"]
    node = remote.SshExecutor(
        remote.Connection(host, info["port"], info["user"], Path(info["private_key_path"]).read_text(), Path(info["known_hosts"]).read_text())
    )
    log = paths.LOGS / "sshd.pve-node2.log"

    def logins() -> int:
        return log.read_text().count("Accepted publickey")

    before = logins()
    assert node.read(["echo", "one"]).stdout == "one\n"
    assert node.read(["echo", "two"]).stdout == "two\n"
    assert node.read(["echo", "one"]).stdout == "one\n"  # kept: not asked again
    lab.wait_for("sshd's log", lambda: logins() == before + 1, 5)
    assert node.run(["true"]).exit_status == 0
    lab.wait_for("sshd's log", lambda: logins() == before + 2, 5)
    assert sshd.stop_role("pve-node2")
    sshd.start_role("pve-node2")
    log = paths.LOGS / "sshd.pve-node2.log"
    again = logins()
    assert node.read(["echo", "three"]).stdout == "three\n"
    lab.wait_for("sshd's log", lambda: logins() == again + 1, 5)


def test_ceph_has_separate_public_and_cluster_networks(lab_up):
    """The runbook's best practice 8, as a real cluster has it: public_network and cluster_network
    set (in the mon config db, so `ceph config get mon ...` answers them) and the OSDs' cluster
    side inside the cluster network."""
    import ipaddress

    public, cluster = ipaddress.ip_network("127.10.10.0/24"), ipaddress.ip_network("127.10.30.0/24")
    assert ceph.ceph("config", "get", "mon", "public_network").strip() == str(public)
    assert ceph.ceph("config", "get", "mon", "cluster_network").strip() == str(cluster)
    assert "public_network" not in paths.CEPH_CONF.read_text()  # a value in ceph.conf would win over `ceph config set`
    osds = ceph.ceph_json("osd", "dump")["osds"]
    assert [(o["up"], o["in"]) for o in osds] == [(1, 1)] * 3
    for o in osds:
        for key, net in (("public_addrs", public), ("cluster_addrs", cluster), ("heartbeat_back_addrs", cluster), ("heartbeat_front_addrs", public)):
            addrs = [a["addr"].rsplit(":", 1)[0] for a in o[key]["addrvec"]]
            assert addrs and all(ipaddress.ip_address(a) in net for a in addrs), (o["osd"], key, addrs)
    r = ssh("ceph-admin", "ceph config get mon public_network; ceph config get mon cluster_network")
    assert (r.returncode, r.stdout) == (0, "127.10.10.0/24\n127.10.30.0/24\n"), r.stderr


def host_ip_json(*argv: str):
    return json.loads(subprocess.run(["/usr/sbin/ip", "-j", *argv], capture_output=True, text=True, check=True).stdout)


@pytest.mark.parametrize("role", ["ceph-admin", "pve-node1"])
def test_ip_over_ssh_answers_as_the_host(lab_up, role):
    """Every lab node shares the host's loopback network: the admin node runs the host's own ip,
    a PVE node the ip shim (lab/pve/shims/ip), which passes it through without overrides."""
    lab.reset_node_net()
    r = ssh(role, "command -v ip")
    assert r.stdout.strip() == ("/usr/sbin/ip" if role == "ceph-admin" else str(paths.PVE_SHIMS / "ip")), r
    for argv in (("route", "get", "127.10.10.101"), ("link", "show", "dev", "lo"), ("link", "show")):
        r = ssh(role, "ip -j " + " ".join(argv))
        assert r.returncode == 0, (argv, r.stderr)
        assert json.loads(r.stdout) == host_ip_json(*argv), argv
    route = json.loads(ssh(role, "ip -j route get 127.10.10.101").stdout)[0]
    assert (route["dev"], route["type"]) == ("lo", "local")


def test_node_net_overrides_show_over_ssh_on_that_node_only(lab_up):
    lab.set_node_link("pve-node2", "lo", mtu=1500, master="vmbr0")
    try:
        lo = json.loads(ssh("pve-node2", "ip -j link show dev lo").stdout)[0]
        assert (lo["mtu"], lo["master"]) == (1500, "vmbr0")
        whole = json.loads(ssh("pve-node2", "ip -j link show").stdout)
        assert [e for e in whole if e["ifname"] == "lo"] == [lo]
        assert json.loads(ssh("pve-node1", "ip -j link show dev lo").stdout) == host_ip_json("link", "show", "dev", "lo")
        assert json.loads(ssh("ceph-admin", "ip -j link show dev lo").stdout) == host_ip_json("link", "show", "dev", "lo")
        r = ssh("pve-node2", "ip link set dev lo mtu 1500")
        assert r.returncode == 255 and "would change the host's network" in r.stderr
    finally:
        lab.reset_node_net()
    assert json.loads(ssh("pve-node2", "ip -j link show dev lo").stdout) == host_ip_json("link", "show", "dev", "lo")


def test_status_reports_daemons_and_listeners(lab_up):
    s = lab.status()
    assert s["ceph"]["health"] == "HEALTH_OK"
    assert s["daemons"] and all(d["alive"] for d in s["daemons"].values())
    assert set(s["daemons"]) >= {*ceph.daemon_names(), *(f"sshd.{r}" for r in sshd.HOSTS)}
    bound = {(ln["address"], ln["port"]) for ln in s["listeners"]}
    for ip in ceph.MONS.values():
        assert {(ip, 6789), (ip, 3300)} <= bound
    for ip in sshd.HOSTS.values():
        assert (ip, 2222) in bound
    assert any(addr == ceph.OSD_CLUSTER_ADDR for addr, _ in bound)  # the OSDs' cluster side
    assert all(ln["address"].startswith("127.") for ln in s["listeners"])


def test_up_again_reuses_what_runs(lab_up):
    before = lab.daemon_pids()
    t0 = time.monotonic()
    lab.up(log=_quiet, pve=False)
    assert lab.daemon_pids() == before
    assert time.monotonic() - t0 < 15


def test_up_again_clears_the_nodes_network_overrides(lab_up):
    lab.set_node_link("pve-node3", "lo", mtu=1500)
    lab.up(log=_quiet, pve=False)
    assert lab.node_net("pve-node3") == {}
    assert json.loads(ssh("pve-node3", "ip -j link show dev lo").stdout) == host_ip_json("link", "show", "dev", "lo")


@pytest.mark.timeout(120)
def test_down_leaves_no_process_and_no_listener(lab_up):
    session = subprocess.Popen([*sshd.ssh_argv("pve-node1"), "sleep 600"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lab.wait_for("an ssh session on pve-node1", lambda: lab.descendants(lab.running("sshd.pve-node1")), 15)
        pids = set(lab.daemon_pids().values())
        for pid in list(pids):
            pids.update(lab.descendants(pid))
        assert len(pids) > len(lab.daemon_pids())  # the session's processes are included
        t0 = time.monotonic()
        lab.down(log=_quiet)
        print(f"\n  lab down: {time.monotonic() - t0:.1f}s")
        assert wait_gone(pids) == []
        assert lab_listeners() == []
        assert not paths.STATE.exists()
        leftovers = subprocess.run(["pgrep", "-a", "-f", str(paths.STATE)], capture_output=True, text=True).stdout
        assert [ln for ln in leftovers.splitlines() if int(ln.split()[0]) != os.getpid()] == []
    finally:
        session.kill()
        session.wait()
