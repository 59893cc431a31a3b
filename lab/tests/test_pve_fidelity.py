"""The lab answers the calls its real clients make as PVE does: the changes made to match PVE
(lab/pve/README.md, "Changes made to match PVE"), each with the call that needed it, made the
way bpg's Go client (the proxmoxve plugin) or proxmoxer makes it: form bodies, trailing
slashes, the query after the slash.

Runs against the running lab (`python -m lab up`) or, without one, a standalone API with no
Ceph (the RBD cases skip); see conftest.py.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest
import requests
from pve_client import Api, make_rbd_storage, poll, rbd_ls, recovery_deadline, service, vm_node

import lab.pve as labpve
from lab.pve import calllog

pytestmark = [
    pytest.mark.lab,
    pytest.mark.timeout(600),
    pytest.mark.usefixtures("pve_restore"),
]  # lab: needs the running lab (tools/run-tests.sh selects by marks)

GO_CLIENT = "Go-http-client/1.1"  # what bpg's client sends (it sets no User-Agent of its own)


class Client(Api):
    """Api with its own User-Agent, so its calls can be picked out of the call log."""

    def __init__(self, pve: dict, node: str = "pve-node1", agent: str | None = None) -> None:
        super().__init__(pve, node)
        self.agent = agent or f"lab-test/{uuid.uuid4().hex[:8]}"
        self.s.headers["User-Agent"] = self.agent

    def calls(self, pve: dict, since: float) -> list[dict]:
        return calllog.read(Path(pve["calls"]), since=since, agent=self.agent)


def not_in_config(node: str, vmid: int) -> str:
    """PVE::AbstractConfig::load_config's die for a VM whose config is not on NODE."""
    return f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"


# ---------------------------------------------------------------------- the router: PVE's paths


def test_a_trailing_slash_or_empty_segment_reaches_the_same_handler(lab_env, ctl):
    api = Client(lab_env["pve"])
    assert api.ok("GET", "/version/") == api.ok("GET", "/version")
    listed = api.ok("GET", "/cluster/resources/", type="node")
    assert sorted(x["node"] for x in listed) == sorted(lab_env["pve"]["nodes"])
    assert api.ok("GET", "//nodes//pve-node1/qemu/") == api.ok("GET", "/nodes/pve-node1/qemu")
    # an injected failure names the route, so it hits the slash form too
    ctl.fail("GET", "/cluster/resources", status=500, message="boom", times=1)
    assert api.err("GET", "/cluster/resources/") == (500, "boom")


def test_ha_resource_posted_to_the_collection_with_a_slash_reads_back(lab_env, vms):
    """bpg's Haresource: POST cluster/ha/resources/ (form), then GET cluster/ha/resources/vm:<id>."""
    api = Client(lab_env["pve"], agent=GO_CLIENT)
    vms(950)
    api.ok("POST", "/cluster/ha/resources/", sid="vm:950", state="stopped", max_restart=1, max_relocate=1, comment="managed by pve-ceph-ha")
    res = api.ok("GET", "/cluster/ha/resources/vm:950")
    assert {k: res[k] for k in ("sid", "type", "state", "max_restart", "max_relocate", "comment")} == {
        "sid": "vm:950",
        "type": "vm",
        "state": "stopped",
        "max_restart": 1,
        "max_relocate": 1,
        "comment": "managed by pve-ceph-ha",
    }
    assert "vm:950" in [r["sid"] for r in api.ok("GET", "/cluster/ha/resources/", type="vm")]
    api.ok("PUT", "/cluster/ha/resources/vm:950", state="stopped", max_restart=2, delete="comment")
    assert api.ok("GET", "/cluster/ha/resources/vm:950")["max_restart"] == 2
    api.ok("DELETE", "/cluster/ha/resources/vm:950")
    # bpg reads this 500 as "does not exist" (proxmox/api/client.go: "no such resource")
    assert api.err("GET", "/cluster/ha/resources/vm:950") == (500, "no such resource 'vm:950'")


def test_ha_rule_posted_to_the_collection_with_a_slash_reads_back(lab_env, ctl, vms):
    """bpg's Harule: POST cluster/ha/rules/ with disable=0 always sent, strict as 0/1."""
    ctl.set_mode("rules")
    api = Client(lab_env["pve"], agent=GO_CLIENT)
    vms(951)
    api.ok("POST", "/cluster/ha/resources/", sid="vm:951", state="stopped")
    api.ok("POST", "/cluster/ha/rules/", rule="r951", type="node-affinity", resources="vm:951", nodes="pve-node1:2,pve-node2:1", strict=0, disable=0)
    rule = api.ok("GET", "/cluster/ha/rules/r951")
    assert (rule["type"], rule["resources"], rule["nodes"]) == ("node-affinity", "vm:951", "pve-node1:2,pve-node2:1")
    assert "disable" not in rule
    api.ok("DELETE", "/cluster/ha/rules/r951")
    assert api.err("GET", "/cluster/ha/rules/r951") == (500, "no such ha rule 'r951'")


def test_pve8_has_no_rules_api_and_says_so_with_the_path_as_sent(lab_env, ctl):
    ctl.set_mode("groups")
    api = Client(lab_env["pve"])
    r = api.req("GET", "/cluster/ha/rules/")
    assert r.status_code == 501
    assert r.json() == {"data": None, "message": "Method 'GET /cluster/ha/rules/' not implemented"}


def test_delete_with_a_trailing_slash_destroys_the_vm(lab_env, vms):
    """bpg's DeleteVM: DELETE nodes/<node>/qemu/<vmid>/?destroy-unreferenced-disks=0&purge=1,
    then status/current until the VM is gone."""
    api = Client(lab_env["pve"], agent=GO_CLIENT)
    vms(952)
    upid = api.ok("DELETE", "/nodes/pve-node1/qemu/952/", **{"destroy-unreferenced-disks": 0, "purge": 1})
    assert upid.split(":")[5:7] == ["qmdestroy", "952"], upid
    status, log = api.wait_task(upid)
    assert status == "OK", log
    assert api.err("GET", "/nodes/pve-node1/qemu/952/status/current") == (500, not_in_config("pve-node1", 952))
    assert vm_node(api, 952) is None


def test_an_unknown_vm_answers_as_pve(lab_env):
    api = Client(lab_env["pve"])
    for path in ("/nodes/pve-node1/qemu/959/config", "/nodes/pve-node1/qemu/959/status/current"):
        assert api.err("GET", path) == (500, not_in_config("pve-node1", 959))
    assert api.err("DELETE", "/nodes/pve-node1/qemu/959/") == (500, not_in_config("pve-node1", 959))


# ---------------------------------------------------------------------- what the lab does not model


def test_a_method_the_lab_does_not_model_is_501_and_logged_as_unmodelled(lab_env):
    api = Client(lab_env["pve"])
    since = time.time() - 1
    r = api.req("GET", "/nodes/pve-node1/status/")  # in PVE's schema; not in the lab
    assert r.status_code == 501
    assert r.json() == {"data": None, "message": "Method 'GET /nodes/pve-node1/status/' not implemented"}
    r = api.req("GET", "/nodes/pve-node1/no-such-thing")  # not in PVE's schema: PVE's own 501
    assert r.status_code == 501
    calls = poll("calls logged", lambda: (c := api.calls(lab_env["pve"], since)) and len(c) >= 2 and c, 10)
    assert [(c["method"], c["path"], c["status"], c["kind"], c["ua"]) for c in calls[-2:]] == [
        ("GET", "/api2/json/nodes/pve-node1/status/", 501, "unmodelled", api.agent),
        ("GET", "/api2/json/nodes/pve-node1/no-such-thing", 501, "pve", api.agent),
    ]
    state_dir = Path(lab_env["pve"]["calls"]).parents[1]
    lines = labpve.unmodelled(since, agent=api.agent, state_dir=state_dir)
    assert lines == [f"GET /api2/json/nodes/pve-node1/status/ -> 501 unmodelled ({api.agent}): Method 'GET /nodes/pve-node1/status/' not implemented"]


def test_every_call_is_logged_with_its_kind_and_no_secret(lab_env, ctl):
    pve = lab_env["pve"]
    api = Client(pve)
    since = time.time() - 1
    key = "AQD" + "x" * 35 + "=="  # the shape of a cephx key
    keyring = f"[client.leak]\n\tkey = {key}\n"
    api.ok("POST", "/storage/", storage="leak-rbd", type="rbd", pool="leak", monhost="127.0.0.1", username="leak", content="images", keyring=keyring)
    api.ok("DELETE", "/storage/leak-rbd")
    ticket = requests.post(
        pve["endpoint"] + "/api2/json/access/ticket", data={"username": "root@pam", "password": pve["password"]}, verify=pve["ca_file"], timeout=10
    )
    assert ticket.status_code == 200
    ctl.fail("GET", "/version", status=500, message="injected", times=1)
    assert api.err("GET", "/version") == (500, "injected")
    calls = poll("calls logged", lambda: (c := api.calls(pve, since)) and len(c) >= 3 and c, 10)
    assert [(c["method"], c["path"], c["kind"]) for c in calls] == [
        ("POST", "/api2/json/storage/", "pve"),
        ("DELETE", "/api2/json/storage/leak-rbd", "pve"),
        ("GET", "/api2/json/version", "injected"),
    ]
    assert all(c["node"] == "pve-node1" and c["ms"] >= 0 for c in calls)
    text = Path(pve["calls"]).read_text()
    for secret in (key, pve["token_secret"], pve["password"]):
        assert secret not in text


def test_an_exception_in_the_lab_is_a_500_logged_as_a_lab_fault(tmp_path):
    import asyncio

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from lab.pve import router

    log = calllog.CallLog(tmp_path / "calls.log")

    def fault(request):
        return web.json_response({"data": None, "message": "lab fault (not a PVE answer)"}, status=500)

    async def boom(request):
        raise KeyError("a bug")

    async def fine(request):
        return web.json_response({"data": 1})

    async def run():
        app = web.Application(middlewares=[router.call_recorder(log, lambda r: "pve-node1", fault)])
        app.router.add_get("/api2/json/boom", boom)
        app.router.add_get("/api2/json/fine", fine)
        async with TestClient(TestServer(app)) as client:
            assert (await client.get("/api2/json/boom")).status == 500
            assert (await client.get("/api2/json/fine")).status == 200
            assert (await client.get("/elsewhere")).status == 404

    asyncio.run(run())
    log.close()
    calls = calllog.read(tmp_path / "calls.log")
    assert [(c["path"], c["status"], c["kind"]) for c in calls] == [
        ("/api2/json/boom", 500, "lab-fault"),
        ("/api2/json/fine", 200, "pve"),
        ("/elsewhere", 404, "unmodelled"),
    ]
    lines = [calllog.line(c) for c in calls if c["kind"] in calllog.NOT_PVE]
    assert [re.sub(r" \(.*?\):", ":", line, count=1) for line in lines] == [
        "GET /api2/json/boom -> 500 lab-fault: lab fault (not a PVE answer)",
        "GET /elsewhere -> 404 unmodelled: Not Found",
    ]


def test_pves_router_rules():
    from lab.pve.router import canonical_path, rel_uri

    assert canonical_path("/api2/json/cluster/ha/resources/") == "/api2/json/cluster/ha/resources"
    assert canonical_path("//api2/json//nodes///pve-node1/qemu/101/") == "/api2/json/nodes/pve-node1/qemu/101"
    assert canonical_path("/") == "/"
    assert rel_uri("/api2/json/nodes/pve-node1/storage/local/content/local:iso%2Fx.iso") == "/nodes/pve-node1/storage/local/content/local:iso/x.iso"
    assert rel_uri("/api2/json") == "/"


# ---------------------------------------------------------------------- the local storage and its ISO


def test_local_storage_holds_the_lab_stacks_iso_on_every_node(lab_env):
    api = Client(lab_env["pve"])
    cfg = api.ok("GET", "/storage/local")
    # PVE's default contents, and `import` (PVE >= 8.2), where the lab keeps its cloud images (lab/pve/imports.py)
    assert (cfg["type"], cfg["path"], set(cfg["content"].split(","))) == ("dir", "/var/lib/vz", {"iso", "vztmpl", "backup", "import"})
    images = {v["volid"]: v for v in api.ok("GET", "/nodes/pve-node1/storage/local/content", content="import")}
    assert set(images) == {"local:import/lab-cloud.raw", "local:import/lab-cloud.qcow2"}, images
    assert {v["content"] for v in images.values()} == {"import"}
    for node in lab_env["pve"]["nodes"]:
        listed = {v["volid"]: v for v in api.ok("GET", f"/nodes/{node}/storage/local/content", content="iso")}
        iso = listed["local:iso/debian-12.iso"]
        assert (iso["content"], iso["format"]) == ("iso", "iso")
        assert iso["size"] == labpve.ISOS["debian-12.iso"] and iso["ctime"] > 0
    # bpg's GetDatastoreFile: the volume id path-escaped (url.PathEscape: '/' -> %2F)
    info = api.ok("GET", "/nodes/pve-node1/storage/local/content/local:iso%2Fdebian-12.iso")
    assert (info["format"], info["size"]) == ("iso", labpve.ISOS["debian-12.iso"])


def test_a_vm_with_the_iso_as_cdrom_is_made_and_its_destroy_leaves_the_iso(lab_env, vms):
    api = Client(lab_env["pve"], agent=GO_CLIENT)
    vms(953, ide2="local:iso/debian-12.iso,media=cdrom", scsihw="virtio-scsi-pci", net0="virtio,bridge=vmbr0", ostype="l26")
    assert api.ok("GET", "/nodes/pve-node1/qemu/953/config")["ide2"].startswith("local:iso/debian-12.iso,media=cdrom")
    status, log = api.wait_task(api.ok("DELETE", "/nodes/pve-node1/qemu/953/", **{"destroy-unreferenced-disks": 0, "purge": 1}))
    assert status == "OK", log
    listed = {v["volid"]: v for v in api.ok("GET", "/nodes/pve-node1/storage/local/content")}
    assert listed["local:iso/debian-12.iso"]["size"] == labpve.ISOS["debian-12.iso"]
    r = api.req("POST", "/nodes/pve-node1/qemu", vmid=958, ide2="local:iso/nope.iso,media=cdrom")
    upid = r.json()["data"]
    status, _log = api.wait_task(upid)
    assert status == "unable to create VM 958 - volume local:iso/nope.iso does not exist"


# ---------------------------------------------------------------------- placement after a failover


def test_after_a_failover_the_vm_is_read_on_the_node_the_ha_manager_chose(lab_env, ctl, vms):
    """bpg reads a VM's node from /cluster/resources on every read, then its config there."""
    api2 = Client(lab_env["pve"], "pve-node2", agent=GO_CLIENT)
    vms(954, node="pve-node3")
    api2.ok("POST", "/cluster/ha/resources/", sid="vm:954", state="started")
    poll("started on node3", lambda: service(api2, "vm:954")["status"] == "vm:954 (pve-node3, started)", 30)
    ctl.fault("pve-node3", "poweroff")
    poll("recovered", lambda: (s := service(api2, "vm:954")) and s["node"] != "pve-node3" and s["state"] == "started", recovery_deadline(ctl))
    node = vm_node(api2, 954)
    assert node in ("pve-node1", "pve-node2") and node == service(api2, "vm:954")["node"]
    assert api2.ok("GET", f"/nodes/{node}/qemu/954/config")["name"] == "t954"
    assert api2.ok("GET", f"/nodes/{node}/qemu/954/status/current")["status"] == "running"
    ctl.fault("pve-node3", "restore")
    api3 = Client(lab_env["pve"], "pve-node3")
    poll("node3 answers", lambda: api3.req("GET", "/version").status_code == 200, 15)
    assert api3.err("GET", "/nodes/pve-node3/qemu/954/config") == (500, not_in_config("pve-node3", 954))


# ---------------------------------------------------------------------- RBD disks (the lab's real Ceph)


def test_delete_with_a_trailing_slash_removes_the_vms_rbd_image(lab_env, ceph_pool, vms):
    api = Client(lab_env["pve"], agent=GO_CLIENT)
    if "lt-good" not in ceph_pool["storages"]:
        make_rbd_storage(api, ceph_pool, "lt-good", "good")
    vms(955, scsi0="lt-good:1,cache=writeback,discard=on", scsihw="virtio-scsi-pci")
    assert "vm-955-disk-0" in rbd_ls(ceph_pool)
    status, log = api.wait_task(api.ok("DELETE", "/nodes/pve-node1/qemu/955/", **{"destroy-unreferenced-disks": 0, "purge": 1}))
    assert status == "OK", log
    assert not [i for i in rbd_ls(ceph_pool) if i.startswith("vm-955-")]


def test_a_config_update_while_the_vm_is_created_is_refused_as_locked(lab_env, ctl, ceph_pool):
    """qemu-server's $update_vm_api: check_lock before anything else, so no disk is made."""
    api = Client(lab_env["pve"], agent=GO_CLIENT)
    if "lt-good" not in ceph_pool["storages"]:
        make_rbd_storage(api, ceph_pool, "lt-good", "good")
    scale = ctl.status()["time_scale"] or 0.1
    ctl.set_ceph_slow(8 / scale)  # the create's RBD work takes 8 real seconds more
    upid = api.ok("POST", "/nodes/pve-node1/qemu", vmid=956, name="t956", scsi0="lt-good:1", scsihw="virtio-scsi-pci")
    try:
        assert api.ok("GET", "/nodes/pve-node1/qemu/956/status/current")["lock"] == "create"
        assert api.err("PUT", "/nodes/pve-node1/qemu/956/config", name="renamed") == (500, "VM is locked (create)")
        assert api.err("PUT", "/nodes/pve-node1/qemu/956/config", scsi1="lt-good:1") == (500, "VM is locked (create)")
        assert "vm-956-disk-1" not in rbd_ls(ceph_pool)
        status, log = api.wait_task(upid, deadline=60)
        assert status == "OK", log
        assert "lock" not in api.ok("GET", "/nodes/pve-node1/qemu/956/status/current")
    finally:
        ctl.set_ceph_slow(0)
        api.wait_task(upid, deadline=60)
        status, log = api.wait_task(api.ok("DELETE", "/nodes/pve-node1/qemu/956/", **{"destroy-unreferenced-disks": 1, "purge": 1}))
        assert status == "OK", log
    assert not [i for i in rbd_ls(ceph_pool) if i.startswith("vm-956-")]


def test_the_plugins_vm_life_cycle_meets_only_pve_answers(lab_env):
    """bpg's VmLegacy for the lab stack's VM, call by call (create, start, the read it makes on
    every refresh, shutdown, delete): the call log shows no answer the lab does not model and
    no lab fault. The integration tests assert the same for a whole run of the real plugin."""
    pve = lab_env["pve"]
    api = Client(pve, agent=f"{GO_CLIENT} lab-test-{uuid.uuid4().hex[:6]}")
    since = time.time() - 1
    api.ok("GET", "/version")
    upid = api.ok(
        "POST",
        "/nodes/pve-node1/qemu",
        vmid=957,
        name="vm957",
        cores=1,
        sockets=1,
        cpu="x86-64-v2-AES",
        memory=512,
        scsihw="virtio-scsi-pci",
        scsi0="local-lvm:1,cache=writeback,discard=on,format=raw",
        ide2="local:iso/debian-12.iso,media=cdrom",
        net0="virtio,bridge=vmbr0",
        ostype="l26",
        onboot=1,
        boot="order=ide2;scsi0;net0",
    )
    assert api.wait_task(upid)[0] == "OK"
    assert api.wait_task(api.ok("POST", "/nodes/pve-node1/qemu/957/status/start", timeout=1800))[0] == "OK"
    # the read: the node from /cluster/resources, the config and status there, pools, the disk's format, HA
    assert vm_node(api, 957) == "pve-node1"
    config = api.ok("GET", "/nodes/pve-node1/qemu/957/config")
    assert api.ok("GET", "/nodes/pve-node1/qemu/957/status/current")["status"] == "running"
    api.ok("GET", "/pools")
    volid = config["scsi0"].split(",")[0]
    assert api.ok("GET", f"/nodes/pve-node1/storage/{volid.split(':')[0]}/content/{volid}")["format"] == "raw"
    assert api.err("GET", "/cluster/ha/resources/vm:957") == (500, "no such resource 'vm:957'")
    assert api.wait_task(api.ok("POST", "/nodes/pve-node1/qemu/957/status/shutdown", timeout=60, forceStop=1))[0] == "OK"
    assert api.wait_task(api.ok("DELETE", "/nodes/pve-node1/qemu/957/", **{"destroy-unreferenced-disks": 0, "purge": 1}))[0] == "OK"
    assert api.err("GET", "/nodes/pve-node1/qemu/957/status/current") == (500, not_in_config("pve-node1", 957))
    state_dir = Path(pve["calls"]).parents[1]
    made = poll("calls logged", lambda: labpve.calls(since, agent=api.agent, state_dir=state_dir), 10)
    assert {"POST /api2/json/nodes/pve-node1/qemu", "GET /api2/json/cluster/resources", "DELETE /api2/json/nodes/pve-node1/qemu/957/"} <= {
        f"{c['method']} {c['path']}" for c in made
    }
    assert labpve.unmodelled(since, agent=api.agent, state_dir=state_dir) == []


# ---------------------------------------------------------------------- pending changes


def test_a_config_read_shows_the_pending_changes_unless_current_is_asked(lab_env, vms):
    """qemu-server vm_config -> AbstractConfig load_current_config: pending values are taken in
    unless current=1. A client reading the config (bpg's refresh) sees a change made on a running VM."""
    api = Client(lab_env["pve"], agent=GO_CLIENT)
    vms(947, cores=1)
    status, log = api.wait_task(api.ok("POST", "/nodes/pve-node1/qemu/947/status/start"))
    assert status == "OK", log
    api.ok("PUT", "/nodes/pve-node1/qemu/947/config", cpu="x86-64-v3")
    pending = {e["key"]: e for e in api.ok("GET", "/nodes/pve-node1/qemu/947/pending")}
    assert pending["cpu"].get("pending") == "x86-64-v3", pending.get("cpu")
    assert api.ok("GET", "/nodes/pve-node1/qemu/947/config")["cpu"] == "x86-64-v3"
    assert api.ok("GET", "/nodes/pve-node1/qemu/947/config", current=1).get("cpu") != "x86-64-v3"


def test_a_drive_given_to_a_config_update_is_stored_as_pve_prints_it(lab_env, vms):
    """qemu-server $update_vm_api parses each drive and prints it again: bpg's empty CD drive
    `file=cdrom,media=cdrom,` (CustomStorageDevice.EncodeValues) reads back as `cdrom,media=cdrom`."""
    api = Client(lab_env["pve"], agent=GO_CLIENT)
    vms(948, cores=1)
    api.ok("PUT", "/nodes/pve-node1/qemu/948/config", ide3="file=cdrom,media=cdrom,")
    assert api.ok("GET", "/nodes/pve-node1/qemu/948/config")["ide3"] == "cdrom,media=cdrom"
    # a disk-size given in bytes (bpg's update of a cloned disk) is printed as PVE prints sizes
    scsi0 = api.ok("GET", "/nodes/pve-node1/qemu/948/config")["scsi0"]
    api.ok("PUT", "/nodes/pve-node1/qemu/948/config", scsi0=re.sub(r"size=[^,]+", "size=1073741824", scsi0) + ",discard=on")
    assert "size=1G" in api.ok("GET", "/nodes/pve-node1/qemu/948/config")["scsi0"]


def test_a_nic_given_without_a_mac_gets_one_as_pve_gives_it(lab_env, vms):
    """$update_vm_api: parse_net makes a MAC for a NIC given without one (Network.pm), print_net writes `<model>=<MAC>` first."""
    api = Client(lab_env["pve"], agent=GO_CLIENT)
    vms(949, cores=1)
    api.ok("PUT", "/nodes/pve-node1/qemu/949/config", net1="model=virtio,bridge=vmbr0,firewall=0,tag=20")
    net1 = api.ok("GET", "/nodes/pve-node1/qemu/949/config")["net1"]
    assert re.fullmatch(r"virtio=([0-9A-F]{2}:){5}[0-9A-F]{2},bridge=vmbr0,firewall=0,tag=20", net1), net1
