"""The lab's PVE API (lab/pve): fakepve's pinned coupling, HTTPS with API tokens, stateful HA
in both PVE modes, the HA manager (failover, failback, quorum, watchdog), faults on demand,
the node shims, and -- with the lab's real Ceph -- RBD storages, real images and the librbd
lock handover on failover.

With a running lab (`python -m lab up`: .lab/lab.json with a Ceph-backed "pve") every test
runs against it and cleans up after itself (its VMs, storages, pool and clients; nodes
restored; mode and time scale put back). Without one, the API is started standalone on
127.10.120.10-13 with no Ceph, and the Ceph tests are skipped (LAB_PVE_TEST_STANDALONE=1
forces that even while the lab runs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
from pve_client import ROOT, STANDALONE_NODES, WATCH_TIMEOUT, Api, make_rbd_storage, poll, rbd_ls, recovery_deadline, service, time_scale, vm_node

import lab.pve as labpve
from lab.pve import compat
from lab.pve.control import Control

SHIMS = ROOT / "lab" / "pve" / "shims"

pytestmark = [
    pytest.mark.lab,
    pytest.mark.timeout(600),
    pytest.mark.usefixtures("pve_restore"),
]  # lab: needs the running lab (tools/run-tests.sh selects by marks)


# ---------------------------------------------------------------------- fakepve coupling


def test_fakepve_version_and_hooks_are_pinned():
    import fakepve

    assert fakepve.__version__ == compat.FAKEPVE_VERSION == "0.5.0"
    from lab.pve.app import LabPve

    assert compat.changed_hooks() == [], "fakepve changed under lab.pve: review, then `python -m lab.pve.server --pin-fakepve`"
    overridden = set(compat.overridden_names(LabPve))
    assert overridden <= set(compat.HOOKS), f"overrides not pinned in compat.HOOKS: {overridden - set(compat.HOOKS)}"
    # the pin lives in the lab's own project (lab/pyproject.toml), which make setup installs
    project = (ROOT / "lab" / "pyproject.toml").read_text()
    assert re.search(r'^\s*"fakepve\[crypto\]==0\.5\.0",$', project, re.M)
    assert re.search(r"^-e \./lab$", (ROOT / "requirements-dev.txt").read_text(), re.M)


def test_extension_point_templates_exist(tmp_path):
    from fakepve import schema

    from lab.pve.app import LabPve

    pve = LabPve(
        {
            "nodes": STANDALONE_NODES,
            "password": "x",
            "token_id": "root@pam!t",
            "token_secret": "s",
            "state_dir": str(tmp_path),
            "pids_dir": str(tmp_path),
            "fake_ceph": True,
        }
    )
    paths = schema.load().paths
    tables = [name for name in dir(pve) if name.startswith("_routes_")]
    assert {"_routes_ha", "_routes_lab_qemu"} <= set(tables)
    for name in tables:
        for method, template, _handler in getattr(pve, name)():
            assert method in paths[template], f"{method} {template}"


def test_product_never_imports_fakepve():
    for folder in ("clients", "components", "drill", "verify"):
        for path in (ROOT / folder).rglob("*.py") if (ROOT / folder).is_dir() else []:
            assert not re.search(r"^\s*(from|import)\s+(fakepve|lab)\b", path.read_text(), re.M), path


# ---------------------------------------------------------------------- API basics


def test_proxmoxer_with_token_and_tls_verification(lab_env):
    from proxmoxer import ProxmoxAPI

    pve = lab_env["pve"]
    for node, spec in pve["nodes"].items():
        api = ProxmoxAPI(
            spec["address"], port=8006, user="root@pam", token_name="pulumi", token_value=pve["token_secret"], verify_ssl=pve["ca_file"], timeout=10
        )
        assert api.version.get()["version"] == pve["version"] or api.version.get()["version"]
        status = api.cluster.status.get()
        local = [x["name"] for x in status if x["type"] == "node" and x["local"]]
        assert local == [node]
        assert {x["ip"] for x in status if x["type"] == "node"} == {s["address"] for s in pve["nodes"].values()}
    # the certificate only verifies with the lab's CA
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(pve["endpoint"] + "/api2/json/version", timeout=5, verify=True)
    bad = requests.get(
        pve["endpoint"] + "/api2/json/version", timeout=5, verify=pve["ca_file"], headers={"Authorization": f"PVEAPIToken={pve['token_id']}=wrong"}
    )
    assert bad.status_code == 401


def test_injected_failures_and_hangs(lab_env, ctl):
    api = Api(lab_env["pve"])
    ctl.fail("GET", "/cluster/resources", status=500, message="boom", times=1)
    assert api.err("GET", "/cluster/resources") == (500, "boom")
    api.ok("GET", "/cluster/resources")
    names = [e["name"] for e in ctl.errors_for("GET", "/cluster/ha/resources/vm:100")]
    assert "no_such_resource" in names
    ctl.fail("GET", "/cluster/ha/resources/{sid}", error="no_such_resource", times=1)
    assert api.err("GET", "/cluster/ha/resources/vm:100") == (500, "no such resource 'vm:100'")
    ctl.fail("GET", "/version", hang=3, times=1)
    slow = Api(lab_env["pve"], timeout=1)
    with pytest.raises(requests.exceptions.Timeout):
        slow.req("GET", "/version")
    assert slow.ok("GET", "/version")["version"]


def test_start_reuses_the_running_api_while_a_node_is_powered_off(lab_env, ctl):
    """`lab up` from another shell during a failover test must not restart the API (and lose
    the cluster state under test) because the powered-off node does not answer."""
    pve = lab_env["pve"]
    state_dir = Path(pve["calls"]).parents[1]
    lab_state = None if lab_env["standalone"] else json.loads((state_dir / "lab.json").read_text())
    nodes = {n: spec["address"] for n, spec in pve["nodes"].items()}
    control = tuple(pve["control"].removeprefix("http://").rsplit(":", 1))
    ctl.fault("pve-node1", "poweroff")
    again = labpve.start(lab_state, state_dir=state_dir, nodes=nodes, control=(control[0], int(control[1])))
    assert again["pid"] == pve["pid"]
    assert ctl.status()["nodes"]["pve-node1"]["power"] == "off"


# ---------------------------------------------------------------------- HA config in both modes


def test_ha_resource_lifecycle_and_rules_in_pve9_mode(lab_env, ctl, vms):
    ctl.set_mode("rules")
    api = Api(lab_env["pve"])
    assert api.ok("GET", "/version")["version"].startswith("9.")
    vms(901)
    vms(902, node="pve-node2")
    api.ok("POST", "/cluster/ha/resources", sid="vm:901", state="started", max_restart=1, max_relocate=1, comment="lab")
    res = api.ok("GET", "/cluster/ha/resources/vm:901")
    assert {k: res[k] for k in ("sid", "type", "state", "max_restart", "max_relocate", "comment")} == {
        "sid": "vm:901",
        "type": "vm",
        "state": "started",
        "max_restart": 1,
        "max_relocate": 1,
        "comment": "lab",
    }
    assert res["digest"]
    assert api.err("POST", "/cluster/ha/resources", sid="vm:901") == (500, "create resource failed: resource ID 'vm:901' already defined")
    assert api.err("POST", "/cluster/ha/resources", sid="vm:999") == (500, "resource 'vm:999' does not exist in cluster")
    assert api.err("POST", "/cluster/ha/resources", sid="vm:902", group="g1") == (500, "invalid parameter 'group': ha groups have been migrated to rules")
    api.ok("PUT", "/cluster/ha/resources/vm:901", max_restart=2, delete="comment")
    res = api.ok("GET", "/cluster/ha/resources/vm:901")
    assert res["max_restart"] == 2 and "comment" not in res
    assert [r["sid"] for r in api.ok("GET", "/cluster/ha/resources") if r["sid"].startswith("vm:9")] == ["vm:901"]
    entry = poll("vm:901 started", lambda: (s := service(api, "vm:901")) and s["state"] == "started" and s, 30)
    assert entry["status"] == "vm:901 (pve-node1, started)" and entry["node"] == "pve-node1"

    # PVE 9 refuses the groups API
    assert api.err("GET", "/cluster/ha/groups") == (500, "cannot index groups: ha groups have been migrated to rules")
    assert api.err("POST", "/cluster/ha/groups", group="g1", nodes="pve-node1") == (500, "cannot create group: ha groups have been migrated to rules")
    assert api.err("GET", "/cluster/ha/groups/g1")[1] == "cannot read group: ha groups have been migrated to rules"

    # rules
    assert api.err("POST", "/cluster/ha/rules", rule="r1", type="node-affinity", resources="vm:902", nodes="pve-node2") == (
        500,
        "create ha rule failed: cannot use unmanaged resource(s) vm:902.",
    )
    assert (
        api.err("POST", "/cluster/ha/rules", rule="r1", type="node-affinity", resources="vm:901", nodes="pve-node9")[1]
        == "create ha rule failed: cannot use non-existent node(s) pve-node9."
    )
    api.ok("POST", "/cluster/ha/rules", rule="r1", type="node-affinity", resources="vm:901", nodes="pve-node1:2,pve-node2:1", comment="prefer node1")
    rule = api.ok("GET", "/cluster/ha/rules/r1")
    assert {k: rule[k] for k in ("rule", "type", "resources", "nodes", "comment")} == {
        "rule": "r1",
        "type": "node-affinity",
        "resources": "vm:901",
        "nodes": "pve-node1:2,pve-node2:1",
        "comment": "prefer node1",
    }
    api.ok("PUT", "/cluster/ha/rules/r1", strict=1)
    assert api.ok("GET", "/cluster/ha/rules/r1")["strict"] == 1
    assert [r["rule"] for r in api.ok("GET", "/cluster/ha/rules", resource="vm:901")] == ["r1"]
    api.ok("DELETE", "/cluster/ha/rules/r1")
    assert api.err("GET", "/cluster/ha/rules/r1") == (500, "no such ha rule 'r1'")

    api.ok("DELETE", "/cluster/ha/resources/vm:901")
    assert api.err("GET", "/cluster/ha/resources/vm:901") == (500, "no such resource 'vm:901'")
    assert api.err("DELETE", "/cluster/ha/resources/vm:901") == (500, "cannot delete service 'vm:901', not HA managed!")


def test_ha_groups_in_pve8_mode_and_migration_to_rules(lab_env, ctl, vms):
    ctl.set_mode("groups")
    api = Api(lab_env["pve"])
    assert api.ok("GET", "/version")["version"].startswith("8.")
    vms(903)
    code, msg = api.err("GET", "/cluster/ha/rules")
    assert code == 501 and "not implemented" in msg
    api.ok("POST", "/cluster/ha/groups", group="g1", nodes="pve-node1:2,pve-node2", nofailback=1)
    grp = api.ok("GET", "/cluster/ha/groups/g1")
    assert {k: grp[k] for k in ("group", "type", "nodes", "nofailback")} == {"group": "g1", "type": "group", "nodes": "pve-node1:2,pve-node2", "nofailback": 1}
    assert "g1" in [g["group"] for g in api.ok("GET", "/cluster/ha/groups")]
    code, msg = api.err("POST", "/cluster/ha/resources", sid="vm:903", failback=0)
    assert code == 400
    api.ok("POST", "/cluster/ha/resources", sid="vm:903", group="g1", max_relocate=2)
    assert api.ok("GET", "/cluster/ha/resources/vm:903")["group"] == "g1"
    assert api.err("DELETE", "/cluster/ha/groups/g1") == (500, "delete ha group failed: ha group is used by service 'vm:903'")
    entry = poll("vm:903 started", lambda: (s := service(api, "vm:903")) and s["state"] == "started" and s, 30)
    assert entry["group"] == "g1"

    # upgrading to PVE 9 migrates the group to a node affinity rule
    ctl.set_mode("rules")
    rules = api.ok("GET", "/cluster/ha/rules")
    assert [(r["rule"], r["resources"], r["nodes"]) for r in rules if "vm:903" in r["resources"]] == [("ha-group-g1", "vm:903", "pve-node1:2,pve-node2")]
    res = api.ok("GET", "/cluster/ha/resources/vm:903")
    assert "group" not in res and res["failback"] == 0
    api.ok("DELETE", "/cluster/ha/resources/vm:903")
    assert [r for r in api.ok("GET", "/cluster/ha/rules") if "vm:903" in r["resources"]] == []


def test_vm_start_stop_through_ha(lab_env, ctl, vms):
    api = Api(lab_env["pve"])
    vms(904)
    api.ok("POST", "/cluster/ha/resources", sid="vm:904", state="stopped")
    upid = api.ok("POST", "/nodes/pve-node1/qemu/904/status/start")
    status, log = api.wait_task(upid)
    assert status == "OK" and "Requesting HA start for VM 904" in log
    poll("904 running", lambda: api.ok("GET", "/nodes/pve-node1/qemu/904/status/current")["status"] == "running", 30)
    assert api.ok("GET", "/cluster/ha/resources/vm:904")["state"] == "started"
    status, log = api.wait_task(api.ok("POST", "/nodes/pve-node1/qemu/904/status/stop"))
    assert "Requesting HA stop for VM 904" in log
    poll("904 stopped", lambda: api.ok("GET", "/nodes/pve-node1/qemu/904/status/current")["status"] == "stopped", 30)
    code, msg = api.err("DELETE", "/nodes/pve-node1/qemu/904")
    assert msg == "unable to remove VM 904 - used in HA resources and purge parameter not set."


# ---------------------------------------------------------------------- the HA manager


def test_failover_on_poweroff_then_failback(lab_env, ctl, vms):
    api1, api2 = Api(lab_env["pve"], "pve-node1"), Api(lab_env["pve"], "pve-node2")
    vms(905, node="pve-node1")
    api1.ok("POST", "/cluster/ha/resources", sid="vm:905", max_restart=1, max_relocate=1)
    api1.ok("POST", "/cluster/ha/rules", rule="t905", type="node-affinity", resources="vm:905", nodes="pve-node1:2,pve-node3:1")
    poll("vm:905 started on node1", lambda: service(api1, "vm:905")["status"] == "vm:905 (pve-node1, started)", 30)

    t0 = time.monotonic()
    ctl.fault("pve-node1", "poweroff")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(lab_env["pve"]["nodes"]["pve-node1"]["api"] + "/api2/json/version", timeout=3, verify=lab_env["pve"]["ca_file"])
    st = poll("vm:905 recovered", lambda: (s := service(api2, "vm:905")) and s["node"] != "pve-node1" and s["state"] == "started" and s, recovery_deadline(ctl))
    took = time.monotonic() - t0
    assert st["status"] == "vm:905 (pve-node3, started)"  # the rule's next priority
    assert took >= (120 - 5) * time_scale(ctl), "recovered before the agent lock could expire"
    assert vm_node(api2, 905) == "pve-node3"
    assert any(v["vmid"] == 905 for v in api2.ok("GET", "/nodes/pve-node3/qemu"))
    code, msg = api2.err("GET", "/nodes/pve-node1/qemu/905/status/current")
    assert code == 595
    log = "\n".join(ctl.ha_log())
    assert "fencing: acknowledged - got agent lock for node 'pve-node1'" in log
    assert "recover service 'vm:905' from fenced node 'pve-node1' to node 'pve-node3'" in log
    quorum = next(e for e in api2.ok("GET", "/cluster/ha/status/current") if e["type"] == "quorum")
    assert quorum["status"] == "OK" and quorum["node"] == "pve-node2"

    # the preferred node comes back: failback (failback=1 by default) migrates it home
    ctl.fault("pve-node1", "restore")
    poll("vm:905 back on node1", lambda: service(api2, "vm:905")["status"] == "vm:905 (pve-node1, started)", 30 + 30 * time_scale(ctl))
    assert api1.ok("GET", "/nodes/pve-node1/qemu/905/status/current")["status"] == "running"


def test_group_priority_and_nofailback_in_pve8_mode(lab_env, ctl, vms):
    ctl.set_mode("groups")
    api2 = Api(lab_env["pve"], "pve-node2")
    victim = next(n for n in ("pve-node1", "pve-node3") if n != ctl.status()["master"])
    other = "pve-node3" if victim == "pve-node1" else "pve-node1"
    vms(910, node=victim)
    api2.ok("POST", "/cluster/ha/groups", group="g910", nodes=f"{victim}:3,{other}:2,pve-node2:1", nofailback=1)
    api2.ok("POST", "/cluster/ha/resources", sid="vm:910", group="g910")
    poll("started", lambda: service(api2, "vm:910")["status"] == f"vm:910 ({victim}, started)", 30)
    ctl.fault(victim, "poweroff")
    poll("recovered by priority", lambda: service(api2, "vm:910")["status"] == f"vm:910 ({other}, started)", recovery_deadline(ctl))
    ctl.fault(victim, "restore")
    time.sleep(20 * time_scale(ctl) + 2)  # several CRM rounds with the preferred node back
    assert service(api2, "vm:910")["status"] == f"vm:910 ({other}, started)"  # nofailback: it stays
    api2.ok("DELETE", "/cluster/ha/resources/vm:910")
    api2.ok("DELETE", "/cluster/ha/groups/g910")


def test_isolated_node_self_fences_and_quorum_loss(lab_env, ctl, vms):
    api2 = Api(lab_env["pve"], "pve-node2")
    vms(906, node="pve-node3")
    api2.ok("POST", "/cluster/ha/resources", sid="vm:906")
    poll("vm:906 started", lambda: service(api2, "vm:906")["status"] == "vm:906 (pve-node3, started)", 30)
    scale = time_scale(ctl)
    ctl.fault("pve-node3", "isolate")
    # cut off, the node keeps its VM running until its watchdog resets it (60 s)
    time.sleep(30 * scale)
    assert ctl.status()["vms"]["906"]["status"] == "running"
    poll("watchdog reset", lambda: ctl.status()["vms"]["906"]["status"] == "stopped", 40 * scale + 10)
    poll("vm:906 recovered", lambda: (s := service(api2, "vm:906")) and s["node"] != "pve-node3" and s["state"] == "started", recovery_deadline(ctl))
    assert any("watchdog" in line for line in ctl.ha_log())

    # a second node down: no quorum, the survivor refuses writes and reports it
    ctl.fault("pve-node1", "poweroff")
    quorum = poll("no quorum", lambda: [e for e in api2.ok("GET", "/cluster/ha/status/current") if e["type"] == "quorum" and e["quorate"] == 0], 15)[0]
    assert quorum["status"] == "No quorum on node 'pve-node2'!"
    assert api2.err("POST", "/cluster/ha/resources", sid="vm:906") == (500, "cluster not ready - no quorum?")
    ctl.fault("pve-node1", "restore")
    ctl.fault("pve-node3", "restore")
    poll("quorum back", lambda: next(e for e in api2.ok("GET", "/cluster/ha/status/current") if e["type"] == "quorum")["quorate"] == 1, 15)


def test_node_back_during_fencing_is_fenced_then_recovered(lab_env, ctl, vms):
    api2 = Api(lab_env["pve"], "pve-node2")
    # a node that is not the CRM master (a dead master's lock must expire first: no `fence` to see)
    victim = next(n for n in ("pve-node1", "pve-node3") if n != ctl.status()["master"])
    vms(908, node=victim)
    api2.ok("POST", "/cluster/ha/resources", sid="vm:908")
    poll("started", lambda: service(api2, "vm:908")["status"] == f"vm:908 ({victim}, started)", 30)
    ctl.fault(victim, "poweroff")
    poll("fence", lambda: service(api2, "vm:908")["state"] == "fence", 60 * time_scale(ctl) + 15)
    ctl.fault(victim, "restore")
    poll("recovered", lambda: service(api2, "vm:908")["state"] == "started", recovery_deadline(ctl))
    node = vm_node(api2, 908)
    assert api2.ok("GET", f"/nodes/{node}/qemu/908/status/current")["status"] == "running"
    # the rebooted node's new LRM never takes its agent lock while a fence is requested for it
    # (LRM.pm work, wait_for_agent_lock: !$fence_request): the CRM gets it once it expired
    assert f"fencing: acknowledged - got agent lock for node '{victim}'" in "\n".join(ctl.ha_log())


def test_max_restart_and_max_relocate(lab_env, ctl, vms):
    api2 = Api(lab_env["pve"], "pve-node2")
    vms(909, node="pve-node1")
    api2.ok("POST", "/cluster/ha/resources", sid="vm:909", max_restart=1, max_relocate=1)
    poll("started", lambda: service(api2, "vm:909")["status"] == "vm:909 (pve-node1, started)", 30)
    ctl.set_start_error(909, "start failed: QEMU exited with code 1")
    ctl.fault("pve-node1", "poweroff")
    st = poll("error", lambda: (s := service(api2, "vm:909")) and s["state"] == "error" and s, recovery_deadline(ctl, 20))
    starts = [t for t in ctl.tasks(909) if t["type"] == "qmstart" and t["node"] != "pve-node1"]
    # on each of 2 nodes: the start and max_restart=1 restart; max_relocate=1 relocation
    assert len(starts) == 4 and len({t["node"] for t in starts}) == 2, starts
    assert all(t["exitstatus"] == "start failed: QEMU exited with code 1" for t in starts)
    assert st["node"] in ("pve-node2", "pve-node3")
    code, msg = api2.err("PUT", "/cluster/ha/resources/vm:909", state="started")
    assert msg == "service 'vm:909' in error state, must be disabled and fixed first"
    ctl.set_start_error(909, None)
    api2.ok("PUT", "/cluster/ha/resources/vm:909", state="disabled")
    poll("stopped", lambda: service(api2, "vm:909")["state"] == "disabled", 15)
    api2.ok("PUT", "/cluster/ha/resources/vm:909", state="started")
    poll("started again", lambda: service(api2, "vm:909")["state"] == "started", 30)


# ---------------------------------------------------------------------- shims


def _shim(node: str, lab_env, *argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PVE_LAB_NODE=node, LAB_PVE_CONTROL=lab_env["pve"]["control"], PATH=f"{SHIMS}:{os.environ.get('PATH', '')}")
    return subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=30)


def test_shims(lab_env, ctl, vms):
    vms(907, node="pve-node2")
    for unit in ("pve-ha-lrm", "pve-ha-crm"):
        r = _shim("pve-node1", lab_env, "systemctl", "is-active", unit)
        assert (r.returncode, r.stdout) == (0, "active\n")
        r = _shim("pve-node1", lab_env, "systemctl", "status", unit)
        assert r.returncode == 0 and "Active: active (running)" in r.stdout
    r = _shim("pve-node2", lab_env, "ha-manager", "add", "vm:907")
    assert r.returncode == 0, r.stderr
    r = _shim("pve-node2", lab_env, "ha-manager", "add", "vm:907")
    assert r.returncode != 0 and "already defined" in r.stderr
    api = Api(lab_env["pve"])
    poll("started", lambda: service(api, "vm:907")["state"] == "started", 30)
    out = _shim("pve-node2", lab_env, "ha-manager", "status").stdout.splitlines()
    date = r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}"
    assert out[0] == "quorum OK"
    assert re.fullmatch(rf"master pve-node\d \(active, {date}\)", out[1]), out[1]
    assert any(re.fullmatch(rf"lrm pve-node2 \(active, {date}\)", ln) for ln in out), out
    assert "service vm:907 (pve-node2, started)" in out
    r = _shim("pve-node2", lab_env, "qm", "status", "907")
    assert (r.returncode, r.stdout) == (0, "status: running\n")
    r = _shim("pve-node1", lab_env, "qm", "status", "907")
    assert r.returncode == 2 and "qemu-server/907.conf' does not exist" in r.stderr
    if shutil.which("dpkg-query") and subprocess.run(["dpkg-query", "-W", "ceph-common"], capture_output=True).returncode == 0:
        for _ in range(2):
            r = _shim("pve-node1", lab_env, "apt-get", "install", "-y", "ceph-common")
            assert r.returncode == 0 and "ceph-common is already the newest version" in r.stdout
    r = _shim("pve-node3", lab_env, "poweroff")
    assert r.returncode == 0
    assert ctl.status()["nodes"]["pve-node3"]["power"] == "off"


def test_shims_over_ssh(lab_env, ctl):
    ssh = lab_env.get("ssh")
    if not ssh or lab_env["standalone"]:
        pytest.skip("needs the running lab's sshd")
    base = [
        "ssh",
        "-p",
        str(ssh["port"]),
        "-i",
        ssh["private_key_path"],
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=5",
        "-o",
        f"UserKnownHostsFile={ssh['known_hosts']}",
        "-o",
        "StrictHostKeyChecking=yes",
    ]

    def run(node: str, command: str) -> subprocess.CompletedProcess:
        return subprocess.run([*base, f"{ssh['user']}@{ssh['hosts'][node]}", command], capture_output=True, text=True, timeout=30)

    r = run("pve-node2", "ha-manager status")
    assert r.returncode == 0 and r.stdout.startswith("quorum OK\n"), r.stderr
    assert run("pve-node2", "systemctl is-active pve-ha-lrm").stdout == "active\n"
    # `poweroff` typed on a node: its API and its sshd stop answering
    run("pve-node3", "poweroff")
    poll("node3 off", lambda: ctl.status()["nodes"]["pve-node3"]["power"] == "off", 10)
    poll("node3 sshd gone", lambda: run("pve-node3", "true").returncode == 255, 15)
    ctl.fault("pve-node3", "restore", sshd=True)
    assert run("pve-node3", "qm status 999").returncode == 2


# ---------------------------------------------------------------------- the real Ceph


def test_rbd_storage_active_only_with_a_good_key(lab_env, ceph_pool):
    api = Api(lab_env["pve"])
    make_rbd_storage(api, ceph_pool, "lt-good", "good")
    key = ceph_pool["keys"]["good"]
    wrong = re.sub(r"key = (\S{8})", "key = AAAAAAAA", key)
    make_rbd_storage(api, ceph_pool, "lt-wrongkey", "good", keyring=wrong)
    cfg = api.ok("GET", "/storage/lt-good")
    assert cfg["type"] == "rbd" and cfg["shared"] == 1 and "keyring" not in cfg
    for node in lab_env["pve"]["nodes"]:
        good = api.ok("GET", f"/nodes/{node}/storage/lt-good/status")
        assert good["active"] == 1 and good["shared"] == 1 and good["total"] > 0
        bad = api.ok("GET", f"/nodes/{node}/storage/lt-wrongkey/status")
        assert bad["active"] == 0
    listed = {s["storage"]: s for s in api.ok("GET", "/nodes/pve-node1/storage")}
    assert listed["lt-good"]["active"] == 1 and listed["lt-wrongkey"]["active"] == 0
    checks = Control(lab_env["pve"]["control"]).storage_checks(refresh=True)
    assert checks["lt-wrongkey"]["reason"] == "rados_connect failed - Permission denied"
    assert api.err("GET", "/nodes/pve-node1/storage/lt-wrongkey/content") == (500, "rbd error: rbd: listing images failed: (13) Permission denied")
    # the key never shows up in the server log
    log = Path(lab_env["pve"]["log"]).read_text(errors="replace")
    secret = re.search(r"key = (\S+)", key).group(1)
    assert secret not in log


def test_vm_disks_are_real_images(lab_env, ceph_pool, vms):
    api = Api(lab_env["pve"])
    if "lt-good" not in ceph_pool["storages"]:
        make_rbd_storage(api, ceph_pool, "lt-good", "good")
    vms(911, scsi0="lt-good:1,cache=writeback,discard=on", scsihw="virtio-scsi-single")
    assert "vm-911-disk-0" in rbd_ls(ceph_pool)
    assert api.ok("GET", "/nodes/pve-node1/qemu/911/config")["scsi0"].startswith("lt-good:vm-911-disk-0,")
    api.ok("PUT", "/nodes/pve-node1/qemu/911/config", scsi1="lt-good:1")
    assert "vm-911-disk-1" in rbd_ls(ceph_pool)
    status, log = api.wait_task(api.ok("PUT", "/nodes/pve-node1/qemu/911/resize", disk="scsi1", size="+1G"))
    assert status == "OK", log
    info = json.loads(ceph_pool["sh"]("rbd", *ceph_pool["adm"], "info", "--format", "json", f"{ceph_pool['pool']}/vm-911-disk-1"))
    assert info["size"] == 2 * 1024**3
    # a volume's attributes come from Ceph at each call (`rbd info` of that image, as PVE asks it)
    content = "/nodes/pve-node1/storage/lt-good/content/lt-good:vm-911-disk-1"
    assert api.ok("GET", content)["size"] == 2 * 1024**3
    ceph_pool["sh"]("rbd", *ceph_pool["adm"], "resize", "--no-progress", "--size", "3072", f"{ceph_pool['pool']}/vm-911-disk-1")
    assert api.ok("GET", content)["size"] == 3 * 1024**3
    # PVE runs that rbd with its stderr ignored: the answer is run_command's words
    status, message = api.err("GET", "/nodes/pve-node1/storage/lt-good/content/lt-good:vm-911-disk-9")
    assert status == 500 and re.fullmatch(
        r"command '/usr/bin/rbd -p \S+ -c /etc/pve/priv/ceph/lt-good.conf .* info vm-911-disk-9 --format json' failed: exit code \d+", message
    ), message
    volid = api.ok("POST", "/nodes/pve-node1/storage/lt-good/content", vmid=911, filename="vm-911-disk-7", size="1G")
    assert volid == "lt-good:vm-911-disk-7" and "vm-911-disk-7" in rbd_ls(ceph_pool)
    status, _ = api.wait_task(api.ok("DELETE", f"/nodes/pve-node1/storage/lt-good/content/{volid}"))
    assert status == "OK" and "vm-911-disk-7" not in rbd_ls(ceph_pool)
    status, log = api.wait_task(api.ok("DELETE", "/nodes/pve-node1/qemu/911", purge=1))
    assert status == "OK", log
    assert not [i for i in rbd_ls(ceph_pool) if i.startswith("vm-911-")]


def _lock_owner(ceph_pool: dict, image: str) -> list[dict]:
    out = ceph_pool["sh"]("rbd", *ceph_pool["adm"], "lock", "ls", "--format", "json", f"{ceph_pool['pool']}/{image}")
    data = json.loads(out or "[]")
    return data if isinstance(data, list) else [dict(v, id=k) for k, v in data.items()]


def test_lock_handover_with_profile_rbd(lab_env, ctl, ceph_pool, vms):
    api1, api2 = Api(lab_env["pve"], "pve-node1"), Api(lab_env["pve"], "pve-node2")
    if "lt-good" not in ceph_pool["storages"]:
        make_rbd_storage(api1, ceph_pool, "lt-good", "good")
    vms(912, scsi0="lt-good:1")
    api1.ok("POST", "/cluster/ha/resources", sid="vm:912")
    poll("started", lambda: service(api1, "vm:912")["status"] == "vm:912 (pve-node1, started)", 60)
    before = _lock_owner(ceph_pool, "vm-912-disk-0")
    assert len(before) == 1 and ctl.holders()["912"]["node"] == "pve-node1"
    t0 = time.monotonic()
    ctl.fault("pve-node1", "poweroff")
    poll("recovered", lambda: (s := service(api2, "vm:912")) and s["node"] != "pve-node1" and s["state"] == "started", recovery_deadline(ctl, WATCH_TIMEOUT))
    took = time.monotonic() - t0
    after = _lock_owner(ceph_pool, "vm-912-disk-0")
    assert len(after) == 1 and after[0]["address"] != before[0]["address"]
    blocklist = ceph_pool["sh"]("ceph", *ceph_pool["adm"], "osd", "blocklist", "ls")
    assert before[0]["address"] in blocklist
    holder = ctl.holders()["912"]
    assert holder["node"] == vm_node(api2, 912) != "pve-node1"
    print(f"failover with lock handover: {took:.1f}s at time scale {time_scale(ctl)}")


def test_lock_handover_fails_with_runbook_caps(lab_env, ctl, ceph_pool, vms):
    api1, api2 = Api(lab_env["pve"], "pve-node1"), Api(lab_env["pve"], "pve-node2")
    make_rbd_storage(api1, ceph_pool, "lt-weak", "weak")
    vms(913, scsi0="lt-weak:1")
    api1.ok("POST", "/cluster/ha/resources", sid="vm:913", max_restart=1, max_relocate=1)
    poll("started", lambda: service(api1, "vm:913")["status"] == "vm:913 (pve-node1, started)", 60)
    ctl.fault("pve-node1", "poweroff")
    st = poll("error state", lambda: (s := service(api2, "vm:913")) and s["state"] == "error" and s, recovery_deadline(ctl, WATCH_TIMEOUT + 30))
    assert st["node"] != "pve-node1"
    failed = [t for t in ctl.tasks(913) if t["type"] == "qmstart" and t.get("exitstatus", "OK") != "OK"]
    assert failed, "no failed start task"
    assert "Permission denied" in failed[0]["exitstatus"] and "osd blocklist" in failed[0]["exitstatus"]
    assert "TASK ERROR: start failed:" in failed[0]["log"][-1]
    log = "\n".join(ctl.ha_log())
    assert "recovery policy for service vm:913 failed, entering error state" in log
    # the dead client still holds the lock: nobody could break it
    assert len(_lock_owner(ceph_pool, "vm-913-disk-0")) == 1
    api2.ok("PUT", "/cluster/ha/resources/vm:913", state="disabled")


def test_pveversion_and_the_ha_mode_preflight_follow_the_labs_mode(lab_env, ctl):
    from components.ha_preflight import mode_problem

    for mode, major in (("groups", "8"), ("rules", "9")):
        ctl.set_mode(mode)
        r = _shim("pve-node1", lab_env, "pveversion")
        assert r.returncode == 0 and re.fullmatch(rf"pve-manager/{major}\.\d+\.\d+/[0-9a-f]{{16}} \(running kernel: [\w.-]+-pve\)\n", r.stdout), r
        for wanted in ("groups", "rules"):
            problem = mode_problem(r.stdout, wanted)
            if wanted == mode:
                assert problem is None, problem
            else:
                assert problem is not None and f"set ha.mode: {mode}" in problem, problem
