"""systemd units on the lab's PVE nodes (lab/pve/units.py, the systemctl shim, ha.py): `systemctl
stop|start|restart UNIT` on a node takes effect there, `systemctl is-active|status` show it, and a
stopped pve-ha-lrm / pve-ha-crm is what PVE's HA stack shows (pve-ha-manager LRM.pm, CRM.pm,
Manager.pm, API2/HA/Status.pm): the LRM in restart mode freezes its services and is then `old
timestamp - dead?`, never fencing its node; a stopped CRM is never master.

Runs against the running lab (`python -m lab up`) or, without one, the standalone API of
conftest.py; the shims run locally with PVE_LAB_NODE and LAB_PVE_CONTROL (SSH is the lab's own
transport, tested once at the end when the lab's sshd runs). Every test leaves every unit active.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from pve_client import ROOT, Api, poll, service

from lab.pve.control import Control, ControlError

SHIMS = ROOT / "lab" / "pve" / "shims"
DATE = r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}"

pytestmark = [
    pytest.mark.lab,
    pytest.mark.timeout(300),
    pytest.mark.usefixtures("pve_restore", "units_restored"),
]  # lab: needs the running lab (tools/run-tests.sh selects by marks)


@pytest.fixture
def units_restored(ctl: Control):
    yield
    ctl.reset_services()


def shim(lab_env, node: str, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PVE_LAB_NODE=node, LAB_PVE_CONTROL=lab_env["pve"]["control"], PATH=f"{SHIMS}:{os.environ.get('PATH', '')}")
    return subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=timeout)


def lrm_line(lab_env, node: str, seen_from: str = "pve-node1") -> str:
    out = shim(lab_env, seen_from, "ha-manager", "status").stdout.splitlines()
    return next(line for line in out if line.startswith(f"lrm {node} "))


def master_line(lab_env, seen_from: str = "pve-node1") -> str:
    out = shim(lab_env, seen_from, "ha-manager", "status").stdout.splitlines()
    return next((line for line in out if line.startswith("master ")), "")


def stale_after(ctl: Control) -> float:
    """Real seconds until Status.pm calls a status 30 s old `old timestamp - dead?`, plus slack."""
    return 30 * max(ctl.status()["time_scale"], 0.01) + 10


# ---------------------------------------------------------------------- systemctl


def test_every_unit_runs_on_a_powered_node(lab_env):
    r = shim(lab_env, "pve-node1", "systemctl", "is-active", "pve-ha-lrm", "pve-ha-crm", "watchdog-mux")
    assert (r.returncode, r.stdout) == (0, "active\nactive\nactive\n")


def test_stopping_watchdog_mux_changes_its_state_only(lab_env, ctl):
    before = ctl.services("pve-node2")["watchdog-mux"]
    r = shim(lab_env, "pve-node2", "systemctl", "stop", "watchdog-mux")
    assert (r.returncode, r.stderr) == (0, "")
    r = shim(lab_env, "pve-node2", "systemctl", "is-active", "watchdog-mux")
    assert (r.returncode, r.stdout) == (3, "inactive\n")
    r = shim(lab_env, "pve-node2", "systemctl", "status", "watchdog-mux")
    assert r.returncode == 3
    assert r.stdout.startswith("○ watchdog-mux.service - Proxmox VE watchdog multiplexer\n")
    assert re.search(r"^     Active: inactive \(dead\) since .*; \d+s ago$", r.stdout, re.M), r.stdout
    # other nodes and units are untouched
    assert shim(lab_env, "pve-node1", "systemctl", "is-active", "watchdog-mux").stdout == "active\n"
    assert shim(lab_env, "pve-node2", "systemctl", "is-active", "pve-ha-lrm").stdout == "active\n"
    r = shim(lab_env, "pve-node2", "systemctl", "start", "watchdog-mux.service")
    assert r.returncode == 0
    after = ctl.services("pve-node2")["watchdog-mux"]
    assert after["active"] == "active" and after["pid"] != before["pid"]
    r = shim(lab_env, "pve-node2", "systemctl", "status", "watchdog-mux")
    assert r.returncode == 0 and "Active: active (running) since" in r.stdout and f"Main PID: {after['pid']} (watchdog-mux)" in r.stdout


def test_is_active_exits_0_when_any_unit_is_active(lab_env):
    """systemd's check_unit_generic (systemctl-is-active.c): one line per unit; exit 0 if any
    unit is active, 3 if none is, 4 if every unit is unknown."""
    assert shim(lab_env, "pve-node3", "systemctl", "stop", "pve-ha-lrm").returncode == 0
    r = shim(lab_env, "pve-node3", "systemctl", "is-active", "pve-ha-lrm", "pve-ha-crm")
    assert (r.returncode, r.stdout) == (0, "inactive\nactive\n")
    assert shim(lab_env, "pve-node3", "systemctl", "stop", "pve-ha-crm").returncode == 0
    r = shim(lab_env, "pve-node3", "systemctl", "is-active", "pve-ha-lrm", "pve-ha-crm")
    assert (r.returncode, r.stdout) == (3, "inactive\ninactive\n")
    r = shim(lab_env, "pve-node3", "systemctl", "is-active", "--quiet", "pve-ha-lrm")
    assert (r.returncode, r.stdout) == (3, "")
    r = shim(lab_env, "pve-node3", "systemctl", "is-active", "no-such-unit")
    assert (r.returncode, r.stdout) == (4, "inactive\n")
    r = shim(lab_env, "pve-node3", "systemctl", "restart", "pve-ha-lrm", "pve-ha-crm")
    assert r.returncode == 0
    r = shim(lab_env, "pve-node3", "systemctl", "is-active", "pve-ha-lrm", "pve-ha-crm")
    assert (r.returncode, r.stdout) == (0, "active\nactive\n")


def test_unknown_units_and_bad_requests_are_refused(lab_env, ctl):
    r = shim(lab_env, "pve-node1", "systemctl", "stop", "no-such-unit")
    assert (r.returncode, r.stderr) == (5, "Failed to stop no-such-unit.service: Unit no-such-unit.service not loaded.\n")
    r = shim(lab_env, "pve-node1", "systemctl", "start", "no-such-unit")
    assert (r.returncode, r.stderr) == (5, "Failed to start no-such-unit.service: Unit no-such-unit.service not found.\n")
    with pytest.raises(ControlError) as exc:
        ctl.service_action("pve-node1", "stop", ["no-such-unit"])
    assert exc.value.status == 404
    with pytest.raises(ControlError) as exc:
        ctl.service_action("pve-node1", "mask", ["pve-ha-lrm"])
    assert exc.value.status == 400
    assert all(u["active"] == "active" for u in ctl.services("pve-node1").values())


def test_try_restart_leaves_a_stopped_unit_stopped(lab_env, ctl):
    shim(lab_env, "pve-node1", "systemctl", "stop", "pvestatd")
    assert shim(lab_env, "pve-node1", "systemctl", "try-restart", "pvestatd").returncode == 0
    assert ctl.services("pve-node1")["pvestatd"]["active"] == "inactive"
    pid = ctl.services("pve-node1")["pvedaemon"]["pid"]
    assert shim(lab_env, "pve-node1", "systemctl", "try-restart", "pvedaemon").returncode == 0
    assert ctl.services("pve-node1")["pvedaemon"]["pid"] != pid


def test_a_powered_off_node_shows_every_unit_inactive_and_boots_them_all(lab_env, ctl):
    shim(lab_env, "pve-node3", "systemctl", "stop", "pve-ha-lrm", "watchdog-mux")
    ctl.fault("pve-node3", "poweroff")
    assert {u["active"] for u in ctl.services("pve-node3").values()} == {"inactive"}
    with pytest.raises(ControlError) as exc:
        ctl.service_action("pve-node3", "start", ["pve-ha-lrm"])
    assert exc.value.status == 409
    ctl.fault("pve-node3", "restore")
    units = ctl.services("pve-node3")
    assert {u["active"] for u in units.values()} == {"active"}, units
    r = shim(lab_env, "pve-node3", "systemctl", "is-active", "pve-ha-lrm", "pve-ha-crm", "watchdog-mux")
    assert (r.returncode, r.stdout) == (0, "active\nactive\nactive\n")
    poll("node3's LRM writing its status again", lambda: re.fullmatch(rf"lrm pve-node3 \((idle|active), {DATE}\)", lrm_line(lab_env, "pve-node3")), 30)


def test_reset_services_starts_every_stopped_unit(lab_env, ctl):
    shim(lab_env, "pve-node2", "systemctl", "stop", "pve-ha-crm", "pveproxy")
    views = ctl.reset_services()
    assert {u["active"] for u in views["pve-node2"].values()} == {"active"}
    assert all(u["active"] == "active" for u in ctl.services("pve-node2").values())


# ---------------------------------------------------------------------- what PVE's HA stack shows


def test_a_stopped_lrm_without_services_is_in_restart_mode_then_dead_and_is_not_fenced(lab_env, ctl):
    """LRM.pm shutdown_request (no node shutdown): mode restart, status written once; Status.pm:
    `restart mode` while the timestamp is fresh, `old timestamp - dead?` after 30 s."""
    node = "pve-node2"
    r = shim(lab_env, node, "systemctl", "stop", "pve-ha-lrm")
    assert (r.returncode, r.stderr) == (0, "")
    assert ctl.services(node)["pve-ha-lrm"]["active"] == "inactive"
    line = lrm_line(lab_env, node)
    stamp = re.fullmatch(rf"lrm {node} \(restart mode, ({DATE})\)", line)
    assert stamp, line
    dead = poll(
        "the LRM's status gone stale", lambda: re.fullmatch(rf"lrm {node} \(old timestamp - dead\?, ({DATE})\)", lrm_line(lab_env, node)), stale_after(ctl)
    )
    assert dead.group(1) == stamp.group(1)  # nothing wrote its status since it stopped
    st = ctl.status()
    assert st["nodes"][node]["ha_node_state"] == "online" and st["nodes"][node]["power"] == "on"
    assert st["quorate"]
    r = shim(lab_env, node, "systemctl", "start", "pve-ha-lrm")
    assert r.returncode == 0
    assert re.fullmatch(rf"lrm {node} \(idle, {DATE}\)", lrm_line(lab_env, node)), lrm_line(lab_env, node)


def test_a_stopped_lrm_freezes_its_services_and_starting_it_unfreezes_them(lab_env, ctl, vms):
    """Manager.pm: services on a node whose LRM is in restart mode go to `freeze` (their VMs keep
    running, unmanaged, not fenced); the LRM exits once none is active (TimeoutStopSec=infinity:
    `systemctl stop` returns then); an LRM started again (mode active) unfreezes them."""
    node = "pve-node2"
    api = Api(lab_env["pve"], "pve-node1")
    vms(951, node=node)
    api.ok("POST", "/cluster/ha/resources", sid="vm:951")
    poll("vm:951 started", lambda: (s := service(api, "vm:951")) and s["status"] == f"vm:951 ({node}, started)", 60)
    r = shim(lab_env, node, "systemctl", "stop", "pve-ha-lrm")
    assert r.returncode == 0, r.stderr
    assert ctl.services(node)["pve-ha-lrm"]["active"] == "inactive"  # stop returned once it had exited
    assert service(api, "vm:951")["status"] == f"vm:951 ({node}, freeze)"
    assert f"service vm:951 ({node}, freeze)" in shim(lab_env, "pve-node1", "ha-manager", "status").stdout
    assert shim(lab_env, node, "qm", "status", "951").stdout == "status: running\n"
    poll("the LRM's status gone stale", lambda: "old timestamp - dead?" in lrm_line(lab_env, node), stale_after(ctl))
    # long past the fence delay: the node is not fenced, the VM still runs where it was
    assert ctl.status()["nodes"][node]["ha_node_state"] == "online"
    assert service(api, "vm:951")["status"] == f"vm:951 ({node}, freeze)"
    assert shim(lab_env, node, "qm", "status", "951").stdout == "status: running\n"
    r = shim(lab_env, node, "systemctl", "start", "pve-ha-lrm")
    assert r.returncode == 0
    poll("vm:951 unfrozen", lambda: service(api, "vm:951")["status"] == f"vm:951 ({node}, started)", 30)
    poll("the LRM active", lambda: re.fullmatch(rf"lrm {node} \(active, {DATE}\)", lrm_line(lab_env, node)), 30)
    assert shim(lab_env, node, "qm", "status", "951").stdout == "status: running\n"


def test_a_stopped_crm_is_never_master(lab_env, ctl):
    """CRM.pm: a master that stops releases the manager lock; a running CRM takes it at once.
    With no CRM running the master line keeps its last timestamp and goes stale."""
    master = master_line(lab_env).split()[1]
    r = shim(lab_env, master, "systemctl", "stop", "pve-ha-crm")
    assert r.returncode == 0
    new = poll("a new master", lambda: (m := master_line(lab_env).split()[1]) != master and m, 30)
    assert ctl.services(new)["pve-ha-crm"]["active"] == "active"
    others = [n for n in ("pve-node1", "pve-node2", "pve-node3") if n != master]
    for node in others:
        assert shim(lab_env, node, "systemctl", "stop", "pve-ha-crm").returncode == 0
    line = master_line(lab_env)
    stamp = re.fullmatch(rf"master (\S+) \((?:active|idle), ({DATE})\)", line)
    assert stamp, line
    dead = poll(
        "the master's status gone stale",
        lambda: re.fullmatch(rf"master {stamp.group(1)} \((?:old timestamp - dead\?|idle), ({DATE})\)", master_line(lab_env)),
        stale_after(ctl),
    )
    assert dead.group(1) == stamp.group(2)
    assert shim(lab_env, master, "systemctl", "start", "pve-ha-crm").returncode == 0
    poll("master again", lambda: re.fullmatch(rf"master {master} \(active, {DATE}\)", master_line(lab_env)), 30)


def test_lab_up_starts_every_stopped_unit_again(lab_env, ctl):
    if lab_env["standalone"]:
        pytest.skip("needs the running lab (`lab up` reuses its API)")
    import lab

    shim(lab_env, "pve-node1", "systemctl", "stop", "pveproxy", "pve-ha-crm")
    assert ctl.services("pve-node1")["pveproxy"]["active"] == "inactive"
    lab.up(log=lambda _msg: None)
    assert all(u["active"] == "active" for u in ctl.services("pve-node1").values())


def test_systemctl_over_ssh(lab_env, ctl):
    ssh = lab_env.get("ssh")
    if not ssh or lab_env["standalone"]:
        pytest.skip("needs the running lab's sshd")
    from lab import sshd

    def run(node: str, command: str) -> subprocess.CompletedProcess:
        return subprocess.run([*sshd.ssh_argv(node), command], capture_output=True, text=True, timeout=120)

    r = run("pve-node1", "systemctl stop pve-ha-lrm; systemctl is-active pve-ha-lrm pve-ha-crm")
    assert (r.returncode, r.stdout) == (0, "inactive\nactive\n"), r.stderr
    assert ctl.services("pve-node1")["pve-ha-lrm"]["active"] == "inactive"
    r = run("pve-node1", "systemctl start pve-ha-lrm && systemctl is-active pve-ha-lrm")
    assert (r.returncode, r.stdout) == (0, "active\n"), r.stderr
