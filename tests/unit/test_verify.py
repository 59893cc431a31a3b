"""python -m verify with recorded answers: every check passes on a healthy cluster's answers, and
each fails (or warns) with its own message when one answer is the answer of a broken cluster.

The answers are the ones the lab gives (`ha-manager status --verbose`, `ceph status -f json`, the
API's JSON), recorded by hand from it; :class:`Recorded` refuses any question it has no answer for,
so a check that starts asking something new fails here until its answer is recorded.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from clients.ssh import RemoteError, Result, Unreachable, render
from components import pve_rights
from components.config import validate
from tests.unit.fake_ceph import FakeClock
from verify import checks, cli, report
from verify.checks import Context, Finding
from verify.probe import ADMIN, ApiError, Once

NODES = ("pve-node1", "pve-node2", "pve-node3")
KEY = "AQBrecordedKEYnotArealONE0000000000000000=="

RAW: dict[str, Any] = {
    "ceph": {
        "admin": {"host": "127.10.10.101", "port": 2222},
        "monitors": ["127.10.10.101", "127.10.10.102", "127.10.10.103"],
        "pool": {"name": "rbd-pool", "pgNum": 32, "size": 3},
    },
    "proxmox": {
        "endpoint": "https://127.10.20.11:8006",
        "nodes": [{"name": n, "address": f"127.10.20.1{i + 1}", "sshPort": 2222} for i, n in enumerate(NODES)],
    },
    "vms": [{"id": 101, "name": "vm101", "node": "pve-node1", "affinity": "pair"}, {"id": 102, "name": "vm102", "node": "pve-node2"}],
    "ha": {"affinities": [{"name": "pair", "nodes": {"pve-node1": 2, "pve-node2": 1}, "strict": True}]},
    "proxmoxApiToken": "pulumi@pve!ha=00000000-0000-0000-0000-000000000000",
}


def test_a_token_with_more_than_the_role_is_a_warning_naming_what_it_need_not_have() -> None:
    everything = dict.fromkeys([*pve_rights.ROLE_PRIVILEGES, "Sys.Modify", "Permissions.Modify"], 1)
    f = run(api={"access/permissions": {"/": everything, "/nodes": everything}})["pve-rights"]
    assert f.status == "warn", f
    assert f.problems[0].startswith("the stack's token pulumi@pve!ha has Permissions.Modify, Sys.Modify on /; Sys.Console, VM.Allocate, ")
    assert " on / propagated to every path;" in f.problems[0]
    assert "on /nodes" in f.problems[0] and f.problems[0].endswith("which the program does not need")
    assert "pveum role add PulumiCephHA" in (f.fix or "")


def test_a_token_lacking_a_right_names_it_and_the_command() -> None:
    held = copy.deepcopy(healthy()[1]["access/permissions"])
    del held["/vms/102"]
    f = run(api={"access/permissions": held})["pve-rights"]
    assert f.status == "warn" and "lacks VM.Allocate on /vms/102" in f.problems[0]
    assert "pveum acl modify /vms/102 --users pulumi@pve --tokens 'pulumi@pve!ha' --roles PulumiCephHA" in f.problems[0]


def ok(stdout: Any = "", exit_status: int = 0, stderr: str = "") -> Result:
    return Result(exit_status, stdout if isinstance(stdout, str) else json.dumps(stdout), stderr)


HA_STATUS = """quorum OK
master pve-node1 (active, Tue Dec  1 09:00:40 2026)
lrm pve-node1 (active, Tue Dec  1 09:00:40 2026)
lrm pve-node2 (active, Tue Dec  1 09:00:40 2026)
lrm pve-node3 (idle, Tue Dec  1 09:00:40 2026)
service vm:101 (pve-node1, started)
service vm:102 (pve-node2, started)
full cluster state:
{"manager_status": {"node_status": {"pve-node1": "online", "pve-node2": "online", "pve-node3": "online"}}}
"""
CEPH_STATUS = {
    "health": {"status": "HEALTH_OK", "checks": {}},
    "monmap": {"num_mons": 3},
    "quorum_names": ["mon1", "mon2", "mon3"],
    "osdmap": {"num_osds": 3, "num_up_osds": 3, "num_in_osds": 3},
}
POOLS = [
    {"pool_name": "device_health_metrics", "pg_num": 1, "pg_num_target": 1, "size": 3, "application_metadata": {"mgr_devicehealth": {}}},
    {"pool_name": "rbd-pool", "pg_num": 32, "pg_num_target": 32, "size": 3, "application_metadata": {"rbd": {}}},
]
ROUTE = [{"type": "local", "dst": "127.10.10.101", "dev": "lo", "prefsrc": "127.0.0.1", "flags": [], "uid": 0, "cache": ["local"]}]
LINK = [{"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP", "LOWER_UP"], "mtu": 65536, "qdisc": "noqueue", "link_type": "loopback"}]


def vm_config(vmid: int, cpu: str = "x86-64-v2-AES") -> dict[str, Any]:
    return {
        "scsi0": f"ceph-rbd:vm-{vmid}-disk-0,cache=writeback,discard=on,size=1G",
        "ide2": "local:iso/debian-12.iso,media=cdrom",
        "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0",
        "scsihw": "virtio-scsi-pci",
        "cpu": cpu,
    }


def healthy() -> tuple[dict[tuple[str, str], Any], dict[str, Any]]:
    ssh: dict[tuple[str, str], Any] = {
        (ADMIN, "ceph status -f json"): ok(CEPH_STATUS),
        (ADMIN, "ceph osd pool ls detail -f json"): ok("\n" + json.dumps(POOLS)),
        (ADMIN, "ceph config get mon mon_max_pg_per_osd"): ok("250\n"),
        (ADMIN, "ceph auth get client.proxmox -f json"): ok(
            [{"entity": "client.proxmox", "key": KEY, "caps": {"mon": "profile rbd", "osd": "profile rbd pool=rbd-pool"}}]
        ),
        (ADMIN, "rbd ls -p rbd-pool --format json"): ok(["vm-101-disk-0", "vm-102-disk-0"]),
        (ADMIN, "ceph config get osd osd_scrub_begin_hour"): ok("22\n"),
        (ADMIN, "ceph config get osd osd_scrub_end_hour"): ok("6\n"),
        (ADMIN, "ceph config get mon public_network"): ok("127.10.10.0/24\n"),
        (ADMIN, "ceph config get mon cluster_network"): ok("127.10.30.0/24\n"),
        (ADMIN, "ip -j route get 127.10.10.101"): ok(ROUTE),
        (ADMIN, "ip -j link show dev lo"): ok(LINK),
    }
    for node in NODES:
        ssh[(node, "dpkg-query -W '-f=${Status}\\t${Version}' ceph-common")] = ok("install ok installed\t16.2.15+ds-0+deb12u2")
        ssh[(node, "systemctl is-active pve-ha-lrm pve-ha-crm")] = ok("active\nactive\n")
        ssh[(node, "systemctl is-active watchdog-mux")] = ok("active\n")
        ssh[(node, "ha-manager status --verbose")] = ok(HA_STATUS)
        ssh[(node, "ip -j route get 127.10.10.101")] = ok(ROUTE)
        ssh[(node, "ip -j link show dev lo")] = ok(LINK)
    api: dict[str, Any] = {
        "storage/ceph-rbd": {"storage": "ceph-rbd", "type": "rbd", "pool": "rbd-pool", "username": "proxmox", "monhost": "127.10.10.101"},
        "cluster/resources": [
            {"id": "node/pve-node1", "type": "node", "node": "pve-node1", "status": "online"},
            {"id": "qemu/101", "type": "qemu", "vmid": 101, "node": "pve-node1", "status": "running", "hastate": "started"},
            {"id": "qemu/102", "type": "qemu", "vmid": 102, "node": "pve-node2", "status": "running", "hastate": "started"},
        ],
        "nodes/pve-node1/qemu/101/config": vm_config(101),
        "nodes/pve-node2/qemu/102/config": vm_config(102),
        "cluster/status": [{"type": "cluster", "name": "pve-lab", "quorate": 1}]
        + [{"type": "node", "name": n, "online": 1, "ip": f"127.10.20.1{i + 1}"} for i, n in enumerate(NODES)],
        "cluster/ha/resources": [
            {"sid": "vm:101", "type": "vm", "state": "started", "max_restart": 1, "max_relocate": 1},
            {"sid": "vm:102", "type": "vm", "state": "started", "max_restart": 1, "max_relocate": 1},
        ],
        "cluster/options": {"ha": {"shutdown_policy": "migrate"}, "allowed-tags": []},
    }
    for node in NODES:
        api[f"nodes/{node}/storage/ceph-rbd/status"] = {"active": 1, "enabled": 1, "shared": 1, "type": "rbd"}
    role = dict.fromkeys(pve_rights.ROLE_PRIVILEGES, 1)
    # GET /access/permissions of a token with the documented ACLs (docs/permissions.md)
    api["access/permissions"] = {"/": dict.fromkeys(pve_rights.ROLE_PRIVILEGES, 0), "/storage": role, "/vms/101": role, "/vms/102": role}
    api["access/permissions"]["/sdn/zones/localnetwork/vmbr0"] = role
    return ssh, api


class Recorded:
    """A probe answering from recordings; an exception recorded is raised; a list is answered in turn (its
    last answer stays). Unknown questions fail the test."""

    def __init__(self, ssh: dict[tuple[str, str], Any], api: dict[str, Any]) -> None:
        self.ssh_answers, self.api_answers = ssh, api

    def ssh(self, host: str, argv: list[str]) -> Result:
        key = (host, render(argv))
        if key not in self.ssh_answers:
            raise AssertionError(f"no recorded answer for {key}")
        answer = self.ssh_answers[key]
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def api(self, path: str) -> Any:
        if path not in self.api_answers:
            raise ApiError(f"GET /{path}: 500 no recorded answer")
        answer = self.api_answers[path]
        if isinstance(answer, Exception):
            raise answer
        return copy.deepcopy(answer)


OUTPUTS = {
    "storageId": "ceph-rbd",
    "pool": "rbd-pool",
    "vms": [
        {"id": 101, "name": "vm101", "initialNode": "pve-node1", "haSid": "vm:101", "images": ["rbd-pool/vm-101-disk-0"]},
        {"id": 102, "name": "vm102", "initialNode": "pve-node2", "haSid": "vm:102", "images": ["rbd-pool/vm-102-disk-0"]},
    ],
}


def run(
    ssh: dict[tuple[str, str], Any] | None = None,
    api: dict[str, Any] | None = None,
    outputs: dict[str, Any] = OUTPUTS,
    clock: FakeClock | None = None,
    **overrides: Any,
) -> dict[str, Finding]:
    base_ssh, base_api = healthy()
    raw = copy.deepcopy(RAW) | overrides
    ctx = Context(validate(raw), Once(Recorded({**base_ssh, **(ssh or {})}, {**base_api, **(api or {})})), outputs, clock or FakeClock())
    return {f.id: f for f in cli.verify(ctx)}


def only(findings: dict[str, Finding], status: str = "fail") -> Finding:
    """The one finding that is not a pass (the check that the broken answer is about)."""
    bad = [f for f in findings.values() if f.status != "pass"]
    assert len(bad) == 1, [(f.id, f.status, f.problems) for f in bad]
    assert bad[0].status == status, (bad[0].id, bad[0].status, bad[0].problems)
    return bad[0]


def test_every_check_passes_on_a_healthy_cluster() -> None:
    findings = run()
    assert [f.id for f in findings.values()] == [c.id for c in checks.CHECKS]
    assert all(f.status == "pass" for f in findings.values()), [(f.id, f.problems) for f in findings.values() if f.status != "pass"]
    assert findings["ceph-health"].summary == "HEALTH_OK; mon: 3 daemons, quorum mon1,mon2,mon3; osd: 3 osds: 3 up, 3 in"
    assert findings["images"].summary == "rbd ls rbd-pool: vm-101-disk-0 vm-102-disk-0"
    assert findings["ha-resources"].summary == "vm:101 started on pve-node1, vm:102 started on pve-node2"
    assert findings["pg-budget"].summary == "99 of 750 PG replicas (mon_max_pg_per_osd 250 x 3 OSDs in, 2 pools)"


def test_an_osd_down_fails_ceph_health() -> None:
    status = copy.deepcopy(CEPH_STATUS)
    status["health"] = {"status": "HEALTH_WARN", "checks": {"OSD_DOWN": {"summary": {"message": "1 osds down"}}}}
    status["osdmap"]["num_up_osds"] = 2
    tree = {
        "nodes": [{"id": -3, "name": "ceph-lab", "type": "host", "children": [0]}, {"id": 0, "name": "osd.0", "type": "osd", "status": "down"}],
        "stray": [],
    }
    f = only(run(ssh={(ADMIN, "ceph status -f json"): ok(status), (ADMIN, "ceph osd tree down -f json"): ok(tree)}))
    assert f.id == "ceph-health"
    assert f.problems == [
        "health is HEALTH_WARN, not HEALTH_OK (OSD_DOWN: 1 osds down)",
        "osd: 3 osds: 2 up, 3 in (every OSD must be up and in)",
        "down: osd.0 (host ceph-lab) (ceph osd tree down)",
    ]
    assert "systemctl start ceph-osd@ID" in (f.fix or "")


def test_a_pool_without_the_rbd_application_fails() -> None:
    pools = copy.deepcopy(POOLS)
    pools[1]["application_metadata"] = {}
    f = only(run(ssh={(ADMIN, "ceph osd pool ls detail -f json"): ok(pools)}))
    assert (f.id, f.problems) == ("pool", ["pool rbd-pool has no rbd application (rbd pool init rbd-pool was not run or was undone)"])


def test_pg_num_drift_and_a_missing_pool_fail() -> None:
    pools = copy.deepcopy(POOLS)
    pools[1]["pg_num_target"] = 64
    assert only(run(ssh={(ADMIN, "ceph osd pool ls detail -f json"): ok(pools)})).problems == ["pool rbd-pool has pg_num 64, configured 32 (ceph.pool.pgNum)"]
    findings = run(ssh={(ADMIN, "ceph osd pool ls detail -f json"): ok(POOLS[:1])})
    assert findings["pool"].problems == ["no pool rbd-pool"]


def test_a_pg_budget_overrun_fails() -> None:
    f = only(run(ssh={(ADMIN, "ceph config get mon mon_max_pg_per_osd"): ok("30\n")}))
    assert f.id == "pg-budget"
    assert f.problems == ["99 PG replicas exceed mon_max_pg_per_osd 30 x 3 OSDs in = 90"]


def test_widened_caps_fail_and_the_key_is_never_shown() -> None:
    widened = [{"entity": "client.proxmox", "key": KEY, "caps": {"mon": "allow *", "osd": "allow *"}}]
    f = only(run(ssh={(ADMIN, "ceph auth get client.proxmox -f json"): ok(widened)}))
    assert f.id == "client"
    assert f.problems == ["client.proxmox has caps mon 'allow *' osd 'allow *', configured mon 'profile rbd' osd 'profile rbd pool=rbd-pool'"]
    assert KEY not in json.dumps(report.build("failed", [f], "t", 1.0)) and KEY not in cli.line(f)


def test_a_missing_client_fails() -> None:
    missing = ok("", 2, "Error ENOENT: failed to find client.proxmox in keyring")
    f = only(run(ssh={(ADMIN, "ceph auth get client.proxmox -f json"): missing}))
    assert (f.id, f.problems) == ("client", ["client.proxmox does not exist"])


def test_ceph_common_removed_from_a_node_fails() -> None:
    removed = ok("deinstall ok config-files\t16.2.15+ds-0+deb12u2")
    f = only(run(ssh={("pve-node2", "dpkg-query -W '-f=${Status}\\t${Version}' ceph-common"): removed}))
    assert (f.id, f.problems) == ("ceph-common", ["pve-node2: ceph-common is not installed"])


def test_a_storage_not_active_on_a_node_fails_with_the_key_to_check() -> None:
    f = only(run(api={"nodes/pve-node3/storage/ceph-rbd/status": {"active": 0, "enabled": 1}}))
    assert f.id == "storage"
    assert f.problems == ["pve-node3: Status is not Active (PVE cannot open pool rbd-pool as client.proxmox)"]
    assert "/etc/pve/priv/ceph/ceph-rbd.keyring" in (f.fix or "")


def test_an_unregistered_storage_fails() -> None:
    f = run(api={"storage/ceph-rbd": ApiError("GET /storage/ceph-rbd: 500 storage 'ceph-rbd' does not exist")})["storage"]
    assert f.status == "fail" and f.problems[0].startswith("storage ceph-rbd is not registered")


def test_a_vm_image_removed_fails() -> None:
    f = only(run(ssh={(ADMIN, "rbd ls -p rbd-pool --format json"): ok(["vm-102-disk-0"])}))
    assert (f.id, f.problems) == ("images", ["VM 101: no vm-101-disk-0 in pool rbd-pool"])
    assert "do not start the VM" in (f.fix or "")


def test_a_vm_whose_config_cannot_be_read_is_checked_by_the_stacks_outputs() -> None:
    unreadable = {"nodes/pve-node2/qemu/102/config": ApiError("GET /nodes/pve-node2/qemu/102/config: 595 No route to host")}
    findings = run(ssh={(ADMIN, "rbd ls -p rbd-pool --format json"): ok(["vm-101-disk-0"])}, api=unreadable)
    assert findings["images"].problems == ["VM 102: no vm-102-disk-0 in pool rbd-pool"]
    without_outputs = run(api=unreadable, outputs={})["images"]
    assert without_outputs.problems == [
        "VM 102: its config cannot be read (GET /nodes/pve-node2/qemu/102/config: 595 No route to host), and the stack's outputs name no image of it"
    ]


def test_a_missing_vm_fails_images() -> None:
    _, api = healthy()
    resources = [r for r in api["cluster/resources"] if r.get("vmid") != 102]
    findings = run(api={"cluster/resources": resources})
    assert findings["images"].problems == ["VM 102 (vm102) does not exist in the cluster (`pulumi up` creates it)"]
    assert findings["ha-placement"].problems == ["vm:102 does not exist in the cluster"]


def test_an_ha_service_stopped_fails() -> None:
    f = only(run(ssh={("pve-node2", "systemctl is-active pve-ha-lrm pve-ha-crm"): ok("inactive\nactive\n", 3)}))
    assert f.id == "ha-services"
    assert f.problems == ["pve-node2: pve-ha-lrm is inactive, not active (running); start it: systemctl start pve-ha-lrm"]


def node3_offline() -> tuple[dict[tuple[str, str], Any], dict[str, Any]]:
    """pve-node3 powered off: no SSH, offline for the HA manager and the cluster, its storage status unreadable."""
    down = Unreachable("SSH to root@127.10.20.13:2222 failed: No route to host")
    ssh: dict[tuple[str, str], Any] = {("pve-node3", cmd): down for (node, cmd) in healthy()[0] if node == "pve-node3"}
    status = HA_STATUS.replace("lrm pve-node3 (idle,", "lrm pve-node3 (old timestamp - dead?,").replace('"pve-node3": "online"', '"pve-node3": "unknown"')
    ssh.update({(n, "ha-manager status --verbose"): ok(status) for n in NODES[:2]})
    _, api = healthy()
    members = [m | ({"online": 0} if m.get("name") == "pve-node3" else {}) for m in api["cluster/status"]]
    return ssh, {"cluster/status": members, "nodes/pve-node3/storage/ceph-rbd/status": ApiError("595 No route to host")}


NODE3_OFFLINE = {"ceph-common", "storage", "ha-services", "ha-quorum"}


def test_a_node_offline_fails_its_services_and_the_quorum_check() -> None:
    findings = run(*node3_offline())
    failed = {f.id for f in findings.values() if f.status == "fail"}
    assert failed == NODE3_OFFLINE
    assert findings["ha-services"].problems == [
        "pve-node3 does not answer SSH (SSH to root@127.10.20.13:2222 failed: No route to host): power it on or check its network"
    ]
    assert findings["ha-quorum"].problems == [
        "pve-node3 is not online: the HA manager has it unknown",
        "pve-node3 is offline in the cluster (pvecm status)",
    ]
    assert findings["mtu"].status == "pass" and "pve-node3 not checked" in findings["mtu"].summary


# `ceph status` right after a node is fenced: its client blocklisted, a new OSD map, a PG re-peering
PEERING = CEPH_STATUS | {
    "health": {
        "status": "HEALTH_WARN",
        "checks": {"PG_AVAILABILITY": {"severity": "HEALTH_WARN", "summary": {"message": "Reduced data availability: 1 pg inactive, 1 pg peering"}}},
    },
    "pgmap": {"num_pgs": 33, "pgs_by_state": [{"state_name": "active+clean", "count": 32}, {"state_name": "peering", "count": 1}]},
}
SETTLED = CEPH_STATUS | {"pgmap": {"num_pgs": 33, "pgs_by_state": [{"state_name": "active+clean", "count": 33}]}}


def test_a_node_fenced_while_ceph_re_peers_fails_only_the_nodes_checks() -> None:
    ssh, api = node3_offline()
    ssh[(ADMIN, "ceph status -f json")] = [ok(PEERING), ok(PEERING), ok(SETTLED)]
    findings = run(ssh, api, clock=FakeClock())
    assert {f.id for f in findings.values() if f.status == "fail"} == NODE3_OFFLINE
    assert cli.line(findings["ceph-health"]) == (
        "✓ 1-1 ceph -s: HEALTH_OK, every OSD up and in, the monitors in quorum: "
        "HEALTH_OK after 4.0 s of PG peering; mon: 3 daemons, quorum mon1,mon2,mon3; osd: 3 osds: 3 up, 3 in"
    )


def test_pg_peering_that_does_not_settle_fails_ceph_health_at_the_bound() -> None:
    clock = FakeClock()
    f = only(run(ssh={(ADMIN, "ceph status -f json"): [ok(PEERING)]}, clock=clock))
    assert f.id == "ceph-health" and sum(clock.sleeps) == 30
    assert cli.line(f) == (
        "✗ 1-1 ceph -s: HEALTH_OK, every OSD up and in, the monitors in quorum: PG peering that did not settle within 30 s: "
        "health is HEALTH_WARN, not HEALTH_OK (PG_AVAILABILITY: Reduced data availability: 1 pg inactive, 1 pg peering); "
        "pgs: 32 active+clean, 1 peering → find the PGs that stay inactive on the admin node: ceph pg dump_stuck inactive, "
        "then ceph pg PGID query (recovery_state: what its peering waits for, often an OSD)"
    )


def test_pg_peering_with_an_osd_down_fails_ceph_health_at_once() -> None:
    status = copy.deepcopy(PEERING)
    status["health"]["checks"]["OSD_DOWN"] = {"severity": "HEALTH_WARN", "summary": {"message": "1 osds down"}}
    status["osdmap"] = {"num_osds": 3, "num_up_osds": 2, "num_in_osds": 3}
    clock = FakeClock()
    failed = ok("", exit_status=1, stderr="error")  # the tree cannot be read: the count alone tells
    f = only(run(ssh={(ADMIN, "ceph status -f json"): [ok(status), ok(SETTLED)], (ADMIN, "ceph osd tree down -f json"): failed}, clock=clock))
    assert f.id == "ceph-health" and clock.sleeps == []
    assert f.problems == [
        "health is HEALTH_WARN, not HEALTH_OK (OSD_DOWN: 1 osds down; PG_AVAILABILITY: Reduced data availability: 1 pg inactive, 1 pg peering)",
        "osd: 3 osds: 2 up, 3 in (every OSD must be up and in)",
    ]
    assert "systemctl start ceph-osd@ID" in (f.fix or "")


def test_an_ha_resource_not_started_or_missing_fails() -> None:
    stopped = HA_STATUS.replace("service vm:102 (pve-node2, started)", "service vm:102 (pve-node2, error)")
    findings = run(ssh={(n, "ha-manager status --verbose"): ok(stopped) for n in NODES})
    assert only(findings).problems == ["vm:102 is error, requested started"]
    _, api = healthy()
    findings = run(api={"cluster/ha/resources": api["cluster/ha/resources"][:1]})
    assert only(findings).problems == ["vm:102 is not an HA resource"]


def test_max_restart_drift_fails() -> None:
    _, api = healthy()
    resources = copy.deepcopy(api["cluster/ha/resources"])
    resources[0]["max_restart"] = 3
    assert only(run(api={"cluster/ha/resources": resources})).problems == ["vm:101 has max restart 3, configured 1"]


def test_a_vm_outside_its_strict_affinity_fails() -> None:
    _, api = healthy()
    resources = copy.deepcopy(api["cluster/resources"])
    resources[1]["node"] = "pve-node3"
    f = only(run(api={"cluster/resources": resources, "nodes/pve-node3/qemu/101/config": vm_config(101)}))
    assert (f.id, f.problems) == ("ha-placement", ["vm:101 runs on pve-node3, outside its strict affinity pair (pve-node1, pve-node2)"])


def test_two_cpu_types_warn_and_fail_when_enforced() -> None:
    api = {"nodes/pve-node2/qemu/102/config": vm_config(102, cpu="host")}
    f = only(run(api=api), "warn")
    assert f.id == "cpu-type" and f.problems[0].startswith("the HA VMs use 2 CPU types (host, x86-64-v2-AES)")
    enforced = only(run(api=api, bestPractices={"enforce": ["cpuType"]}))
    assert enforced.id == "cpu-type" and enforced.enforced


def test_a_vm_without_a_cpu_counts_as_qemus_default() -> None:
    conf = vm_config(102)
    del conf["cpu"]
    assert "kvm64: VM 102" in only(run(api={"nodes/pve-node2/qemu/102/config": conf}), "warn").summary


def test_a_scrub_window_drift_warns() -> None:
    f = only(run(ssh={(ADMIN, "ceph config get osd osd_scrub_begin_hour"): ok("0\n")}), "warn")
    assert (f.id, f.problems) == ("scrub-window", ["the scrub window is 0-6, configured 22-6 (ceph.scrubWindow)"])


def test_watchdog_mux_stopped_warns() -> None:
    f = only(run(ssh={("pve-node1", "systemctl is-active watchdog-mux"): ok("inactive\n", 3)}), "warn")
    assert (f.id, f.problems) == ("watchdog", ["pve-node1: watchdog-mux is inactive: a node that loses quorum will not be fenced"])


def test_two_mtus_on_the_ceph_network_warn() -> None:
    small = [LINK[0] | {"mtu": 1500}]
    f = only(run(ssh={("pve-node2", "ip -j link show dev lo"): ok(small)}), "warn")
    assert f.id == "mtu"
    assert f.problems == ["2 MTUs on the Ceph network: 1500 on pve-node2 lo; 65536 on ceph-admin lo, pve-node1 lo, pve-node3 lo"]


def test_ceph_networks_unset_or_overlapping_warn() -> None:
    f = only(run(ssh={(ADMIN, "ceph config get mon cluster_network"): ok("\n")}), "warn")
    assert (f.id, f.problems) == ("ceph-networks", ["cluster_network is not set"])
    f = only(run(ssh={(ADMIN, "ceph config get mon cluster_network"): ok("127.10.0.0/16\n")}), "warn")
    assert f.problems == ["public_network and cluster_network overlap: replication shares the clients' network"]


def test_ceph_through_the_vm_bridge_warns() -> None:
    ported = [LINK[0] | {"master": "vmbr0"}]
    f = only(run(ssh={("pve-node1", "ip -j link show dev lo"): ok(ported)}), "warn")
    assert (f.id, f.problems) == ("bridge", ["pve-node1: Ceph traffic goes through lo, a port of vmbr0: the VMs' bridge"])


def test_an_unreachable_admin_node_means_verify_could_not_run() -> None:
    down = Unreachable("SSH to root@127.10.10.101:2222 failed: Connection refused")
    ssh = {(host, cmd): down for (host, cmd) in healthy()[0] if host == ADMIN}
    findings = run(ssh=ssh)
    errors = {f.id for f in findings.values() if f.status == "error"}
    assert errors == {"ceph-health", "pool", "pg-budget", "client", "images", "scrub-window", "mtu", "ceph-networks", "bridge"}
    assert findings["pool"].problems == ["the Ceph admin node: SSH to root@127.10.10.101:2222 failed: Connection refused"]
    assert cli.outcome(list(findings.values())) == ("error", 2)


def test_each_question_is_asked_once() -> None:
    ssh, api = healthy()
    asked: list[str] = []

    class Counting(Recorded):
        def ssh(self, host: str, argv: list[str]) -> Result:
            asked.append(f"{host} {render(argv)}")
            return super().ssh(host, argv)

    cli.verify(Context(validate(RAW), Once(Counting(ssh, api))))
    assert len(asked) == len(set(asked))


# ---------------------------------------------------------------------- the command


@pytest.fixture
def stack_files(tmp_path: Path) -> Path:
    import yaml

    (tmp_path / "id").write_text("not a key: verify's unit tests never connect\n")
    (tmp_path / "known_hosts").write_text("")
    raw = {k: v for k, v in RAW.items() if k != "proxmoxApiToken"} | {"ssh": {"privateKeyFile": "id", "knownHostsFile": "known_hosts"}}
    (tmp_path / "Pulumi.t.yaml").write_text(yaml.safe_dump({"config": {f"pve-ceph-ha:{k}": v for k, v in raw.items()}}))
    return tmp_path / "Pulumi.t.yaml"


def main(argv: list[str], probe: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    monkeypatch.setenv("T_TOKEN", RAW["proxmoxApiToken"])
    code = cli.main([*argv, "--token-env", "T_TOKEN"], probe=probe)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_prints_one_line_per_check_and_exits_0(stack_files: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = main(["--stack-config", str(stack_files)], Recorded(*healthy()), monkeypatch, capsys)
    lines = out.splitlines()
    assert code == 0
    assert (
        lines[1]
        == "✓ 1-1 ceph -s: HEALTH_OK, every OSD up and in, the monitors in quorum: HEALTH_OK; mon: 3 daemons, quorum mon1,mon2,mon3; osd: 3 osds: 3 up, 3 in"
    )
    assert len([line for line in lines if line.startswith("✓ ")]) == len(checks.CHECKS)
    assert lines[-1].startswith(f"verify: {len(checks.CHECKS)} passed, 0 failed, 0 warnings, 0 could not run")


def test_a_failed_check_exits_1_with_the_fix_on_its_line(stack_files: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    ssh, api = healthy()
    ssh[(ADMIN, "rbd ls -p rbd-pool --format json")] = ok(["vm-102-disk-0"])
    code, out, _ = main(["--stack-config", str(stack_files)], Recorded(ssh, api), monkeypatch, capsys)
    assert code == 1
    assert "✗ 3-2 rbd ls rbd-pool: every VM's disks in the pool: VM 101: no vm-101-disk-0 in pool rbd-pool → a VM disk missing" in out


def test_the_json_report_follows_its_schema(stack_files: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    ssh, api = healthy()
    ssh[("pve-node1", "systemctl is-active watchdog-mux")] = ok("inactive\n", 3)
    ssh[(ADMIN, "ceph status -f json")] = RemoteError("SSH to root@127.10.10.101:2222: the connection dropped")
    code, out, err = main(["--stack-config", str(stack_files), "--json"], Recorded(ssh, api), monkeypatch, capsys)
    data = json.loads(out)
    jsonschema.Draft202012Validator.check_schema(report.schema())
    jsonschema.validate(data, report.schema())
    assert (code, data["outcome"], data["ok"]) == (2, "error", False)
    assert data["counts"]["warn"] == 1 and data["counts"]["error"] == 2  # ceph-health and pg-budget read `ceph status`
    assert "⚠ 8 fencing armed" in err


def test_a_bad_config_exits_2_naming_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text(yaml.safe_dump({"config": {"pve-ceph-ha:ceph": {"monitors": []}}}))
    code, out, _ = main(["--stack-config", str(bad)], Recorded(*healthy()), monkeypatch, capsys)
    assert code == 2
    assert "verify: pve-ceph-ha:ceph.admin = (not set): is required" in out
    assert "verify: could not run (exit 2)" in out
    assert "Traceback" not in out


def test_a_linked_clones_disk_is_its_own_image() -> None:
    """A linked clone's volume ``base-900-disk-0/vm-102-disk-0`` is the RBD image ``vm-102-disk-0`` (RBDPlugin.pm parse_volname)."""
    clone = {**vm_config(102), "scsi0": "ceph-rbd:base-900-disk-0/vm-102-disk-0,cache=writeback,discard=on,size=1G"}
    findings = run(api={"nodes/pve-node2/qemu/102/config": clone}, outputs={})
    assert findings["images"].status == "pass", findings["images"].problems


def test_the_ha_shutdown_policy_is_reported() -> None:
    """Issue #26: datacenter.cfg's HA shutdown policy, with what a graceful reboot does under it."""
    assert "shutdown_policy migrate: on a graceful reboot or shutdown live-migrated away first" in run()["ha-shutdown-policy"].summary
    unset = run(api={"cluster/options": {"allowed-tags": []}})["ha-shutdown-policy"]
    assert unset.status == "pass" and unset.summary.startswith("shutdown_policy conditional (PVE's default: not set): on a graceful reboot")


def test_the_crs_mode_is_reported_with_its_effect() -> None:
    default = run()["ha-shutdown-policy"].summary
    assert default.endswith("crs ha=basic (PVE's default): HA places a service on the node with the fewest HA services"), default
    static = run(api={"cluster/options": {"crs": {"ha": "static", "ha-rebalance-on-start": 1}}})["ha-shutdown-policy"].summary
    assert static.endswith("crs ha=static, rebalance on start: HA places a service where the configured CPUs and memory of the services leave most room"), (
        static
    )
