"""The lab enforces PVE's permission model for every non-root token (lab/pve/api/access.py:
pve-access-control's roles, ACLs and privilege-separated tokens; qemu-server's checks), with
PVE's wording, and `lab up` made the documented role, user and token (docs/permissions.md)."""

from __future__ import annotations

import uuid

import pytest
from pve_client import Api

from components import pve_rights

pytestmark = [
    pytest.mark.lab,
    pytest.mark.timeout(300),
    pytest.mark.usefixtures("pve_restore"),
]  # lab: needs the running lab (tools/run-tests.sh selects by marks)


class As(Api):
    """Api as another token."""

    def __init__(self, pve: dict, token: str) -> None:
        super().__init__(pve)
        self.s.headers["Authorization"] = f"PVEAPIToken={token}"


def call(api: Api, method: str, path: str, fields: dict) -> dict | None:
    """A call whose fields include `path` (Api.ok's own argument)."""
    kw = {"params": fields} if method == "GET" else {"data": fields}
    r = api.s.request(method, api.base + path, timeout=api.timeout, verify=api.ca, **kw)
    assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text}"
    return r.json()["data"]


@pytest.fixture
def token(lab_env):
    """Make a user and a token (privilege-separated unless privsep=0) with ACLS [(path, role, propagate)]
    for the token and USER_ACLS for its user (default: the same); both removed at the end."""
    root = Api(lab_env["pve"])
    made: list[tuple[str, str]] = []

    def make(acls, user_acls=None, privsep: int = 1, privs: str | None = None) -> tuple[str, Api]:
        tag = uuid.uuid4().hex[:8]
        user, name = f"t{tag}@pve", "tk"
        role = f"LabTest{tag}"
        root.ok("POST", "/access/roles", roleid=role, privs=privs or ",".join(pve_rights.ROLE_PRIVILEGES))
        root.ok("POST", "/access/users", userid=user)
        secret = root.ok("POST", f"/access/users/{user}/token/{name}", privsep=privsep)["value"]
        full = f"{user}!{name}"
        for path, propagate in user_acls if user_acls is not None else acls:
            call(root, "PUT", "/access/acl", {"path": path, "users": user, "roles": role, "propagate": propagate})
        for path, propagate in acls:
            call(root, "PUT", "/access/acl", {"path": path, "tokens": full, "roles": role, "propagate": propagate})
        made.append((user, role))
        return full, As(lab_env["pve"], f"{full}={secret}")

    yield make
    for user, role in made:
        root.req("DELETE", f"/access/users/{user}/token/tk")
        root.req("DELETE", f"/access/roles/{role}")


def test_lab_up_made_the_documented_role_and_a_privilege_separated_token(lab_env):
    pve = lab_env["pve"]
    root = Api(pve)
    assert sorted(root.ok("GET", f"/access/roles/{pve_rights.ROLE}")) == sorted(pve_rights.ROLE_PRIVILEGES)
    users = {u["userid"]: u for u in root.ok("GET", "/access/users")}
    user, _, name = pve["stack_token_id"].partition("!")
    assert [t["privsep"] for t in users[user]["tokens"] if t["tokenid"] == name] == [1]
    held = As(pve, f"{pve['stack_token_id']}={pve['stack_token_secret']}").ok("GET", "/access/permissions")
    # `/` not propagated: the HA privileges there, nothing on /nodes or /access
    assert {p for p in held["/"] if p.startswith("Sys.")} == {"Sys.Audit", "Sys.Console"}
    assert not any(held["/"].values()), held["/"]
    assert "/nodes" not in held and "/access" not in held
    assert set(held["/vms"]) == set(pve_rights.ROLE_PRIVILEGES) and all(held["/vms"].values())
    assert pve_rights.excess(held, "ceph-rbd", []) == []


def test_a_missing_privilege_is_refused_with_pves_wording(lab_env, token):
    privs = ",".join(p for p in pve_rights.ROLE_PRIVILEGES if p != "Datastore.Allocate")
    _, api = token([("/", 0), ("/storage", 1), ("/vms", 1)], privs=privs)
    assert api.err("POST", "/storage", storage="t-denied", type="rbd", pool="x", content="images") == (
        403,
        "Permission check failed (/storage, Datastore.Allocate)",
    )
    assert api.err("GET", "/storage/local") == (403, "Permission check failed (/storage/local, Datastore.Allocate)")
    # `/` not propagated: nothing below it
    assert call(api, "GET", "/access/permissions", {"path": "/nodes/pve-node1"}) == {}
    assert api.err("POST", "/access/roles", roleid="X", privs="VM.Audit") == (403, "Permission check failed (/access, Sys.Modify)")


def test_a_privilege_separated_token_holds_only_what_its_user_holds_too(lab_env, token):
    vmid = 987
    _, api = token([("/vms", 1)], user_acls=[("/storage", 1)])
    assert call(api, "GET", "/access/permissions", {"path": f"/vms/{vmid}"}) == {}
    assert api.err("GET", f"/nodes/pve-node1/qemu/{vmid}/config") == (403, f"Permission check failed (/vms/{vmid}, VM.Audit)")
    _, shared = token([("/vms", 1)], privsep=0, user_acls=[("/vms", 1)])
    assert set(call(shared, "GET", "/access/permissions", {"path": f"/vms/{vmid}"})[f"/vms/{vmid}"]) == set(pve_rights.ROLE_PRIVILEGES)


def test_a_vm_needs_sdn_use_on_its_bridge_and_takes_its_acl_with_it(lab_env, token):
    root = Api(lab_env["pve"])
    vmid = 986
    full, api = token([("/", 0), ("/storage", 1), (f"/vms/{vmid}", 1)])
    body = {"vmid": vmid, "name": "perm", "memory": 64, "cores": 1, "net0": "virtio,bridge=vmbr0", "scsi0": "local-lvm:1"}
    assert api.err("POST", "/nodes/pve-node1/qemu", **body) == (403, "Permission check failed (/sdn/zones/localnetwork/vmbr0, SDN.Use)")
    role = next(a["roleid"] for a in root.ok("GET", "/access/acl") if a["ugid"] == full)
    user = full.split("!")[0]
    call(root, "PUT", "/access/acl", {"path": "/sdn/zones/localnetwork/vmbr0", "users": user, "tokens": full, "roles": role})
    status, log = api.wait_task(api.ok("POST", "/nodes/pve-node1/qemu", **body))
    assert status == "OK", log
    assert f"/vms/{vmid}" in {a["path"] for a in root.ok("GET", "/access/acl")}
    status, log = api.wait_task(api.ok("DELETE", f"/nodes/pve-node1/qemu/{vmid}", purge=1))
    assert status == "OK", log
    # qemu-server destroy_vm: remove_vm_access
    assert f"/vms/{vmid}" not in {a["path"] for a in root.ok("GET", "/access/acl")}


def test_a_role_in_pves_namespace_is_refused(lab_env):
    status, message = Api(lab_env["pve"]).err("POST", "/access/roles", roleid="PVECephHA", privs="VM.Audit")
    assert status == 400 and message.startswith("Parameter verification failed")
