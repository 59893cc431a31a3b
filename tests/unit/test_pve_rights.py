"""components/pve_rights.py: what a config needs, held against GET /access/permissions answers as
PVE gives them (path -> privilege -> propagate flag), and the commands that grant what is missing."""

from __future__ import annotations

from components import pve_rights
from components.pve_rights import ROLE, ROLE_PRIVILEGES, VmRights

TOKEN = "pulumi@pve!ha"
VM = VmRights(101, "vm101", "vmbr0", "local:iso/debian-12.iso", True)
ALL = dict.fromkeys(ROLE_PRIVILEGES, 1)
NOT_PROPAGATED = dict.fromkeys(ROLE_PRIVILEGES, 0)


def documented(drop: tuple[str, str] | None = None) -> dict[str, dict[str, int]]:
    """The effective permissions of a token with the documented narrow ACLs, without DROP (path, privilege)."""
    held = {"/": dict(NOT_PROPAGATED), "/storage": dict(ALL), "/vms/101": dict(ALL), "/sdn/zones/localnetwork/vmbr0": dict(ALL)}
    if drop:
        held[drop[0]].pop(drop[1])
    return held


def test_the_documented_acls_grant_every_need():
    needs = pve_rights.needed("ceph-rbd", [VM])
    assert {(n.privilege, n.path) for n in needs} >= {
        ("Sys.Console", "/"),
        ("Datastore.Allocate", "/storage"),
        ("Datastore.AllocateSpace", "/storage/ceph-rbd"),
        ("VM.Allocate", "/vms/101"),
        ("SDN.Use", "/sdn/zones/localnetwork/vmbr0"),
        ("Datastore.AllocateSpace", "/storage/local"),
    }
    assert pve_rights.missing(documented(), needs) == []
    # the per-cluster form holds them too
    wide = {"/": dict(NOT_PROPAGATED), "/storage": dict(ALL), "/vms": dict(ALL), "/sdn/zones/localnetwork": dict(ALL)}
    assert pve_rights.missing(wide, needs) == []


def test_a_root_token_holds_everything_and_is_told_it_has_too_much():
    root = {p: dict.fromkeys([*ROLE_PRIVILEGES, "Sys.Modify", "Permissions.Modify"], 1) for p in ("/", "/nodes", "/vms", "/storage", "/access")}
    assert pve_rights.missing(root, pve_rights.needed("ceph-rbd", [VM])) == []
    extra = pve_rights.excess(root, "ceph-rbd", [VM])
    assert "Sys.Modify on /" in extra and "Sys.Console on / propagated to every path" in extra and "Sys.Audit on /nodes" in extra


def test_the_documented_token_has_nothing_extra():
    assert pve_rights.excess(documented(), "ceph-rbd", [VM]) == []


def test_not_propagated_on_root_reaches_nothing_below():
    held = {"/": dict(NOT_PROPAGATED)}
    assert pve_rights.held(held, "/", "Sys.Console")
    assert not pve_rights.held(held, "/vms/101", "VM.Allocate")
    assert pve_rights.held({"/vms": {"VM.Allocate": 1}}, "/vms/101", "VM.Allocate")
    # the path's own entry wins over its ancestors
    assert not pve_rights.held({"/vms": {"VM.Allocate": 1}, "/vms/101": {"VM.Audit": 1}}, "/vms/101", "VM.Allocate")


def test_a_privilege_the_role_lacks_names_the_role_command():
    held = documented(("/vms/101", "VM.Config.Memory"))
    lacking = pve_rights.missing(held, pve_rights.needed("ceph-rbd", [VM]))
    assert [(n.privilege, n.path) for n in lacking] == [("VM.Config.Memory", "/vms/101")]
    text = pve_rights.describe_missing(lacking, TOKEN, held)
    assert text.startswith(f"the API token {TOKEN} lacks VM.Config.Memory on /vms/101 for vms[0] (vm101), needed by POST /nodes/{{node}}/qemu")
    assert text.endswith(f"grant it: pveum role modify {ROLE} --append 1 --privs VM.Config.Memory")


def test_a_missing_acl_names_the_acl_command():
    held = documented()
    del held["/vms/101"]
    lacking = pve_rights.missing(held, pve_rights.needed("ceph-rbd", [VM]))
    assert {n.path for n in lacking} == {"/vms/101"} and len(lacking) == len(pve_rights.VM_PRIVILEGES)
    assert pve_rights.describe_missing(lacking[:1], TOKEN, held).endswith(
        f"grant it: pveum acl modify /vms/101 --users pulumi@pve --tokens 'pulumi@pve!ha' --roles {ROLE}"
    )


def test_the_iso_storage_takes_either_privilege_pve_accepts():
    held = documented()
    held["/storage"] = {"Datastore.Allocate": 1}
    held["/storage/ceph-rbd"] = {"Datastore.Allocate": 0, "Datastore.AllocateSpace": 0}
    held["/storage/local"] = {"Datastore.Audit": 0}
    assert pve_rights.missing(held, pve_rights.needed("ceph-rbd", [VM])) == []


def test_no_ha_no_ha_privileges():
    needs = pve_rights.needed("ceph-rbd", [VmRights(102, "plain", "vmbr1", None, False)])
    assert not {n.privilege for n in needs} & {"Sys.Audit", "Sys.Console"}
    assert ("SDN.Use", "/sdn/zones/localnetwork/vmbr1") in {(n.privilege, n.path) for n in needs}


def test_the_setup_commands_make_role_user_token_and_acls():
    commands = pve_rights.setup_commands(TOKEN, "ceph-rbd", [VM])
    assert commands[0] == f"pveum role add {ROLE} --privs " + ",".join(ROLE_PRIVILEGES)
    assert commands[1:3] == ["pveum user add pulumi@pve", "pveum user token add pulumi@pve ha --privsep 1"]
    assert f"pveum acl modify / --users pulumi@pve --tokens 'pulumi@pve!ha' --roles {ROLE} --propagate 0" in commands
    assert f"pveum acl modify /vms/101 --users pulumi@pve --tokens 'pulumi@pve!ha' --roles {ROLE}" in commands


def test_the_ha_options_need_sys_modify_on_root_from_their_own_role_and_only_then():
    needs = pve_rights.needed("ceph-rbd", [VM], options=True)
    (modify,) = [n for n in needs if n.privilege == "Sys.Modify"]
    assert modify.path == "/" and modify.acl.role == pve_rights.OPTIONS_ROLE and not modify.acl.propagate
    held = documented()
    message = pve_rights.describe_missing(pve_rights.missing(held, needs), TOKEN, held)
    assert message == (
        f"the API token {TOKEN} lacks Sys.Modify on / for ha.shutdownPolicy, ha.crs, ha.rebalanceOnStart, needed by "
        f"{pve_rights.OPTIONS_CALLS}; grant it: pveum role add {pve_rights.OPTIONS_ROLE} --privs Sys.Modify (once), then "
        f"pveum acl modify / --users pulumi@pve --tokens 'pulumi@pve!ha' --roles {pve_rights.OPTIONS_ROLE} --propagate 0"
    )
    held["/"]["Sys.Modify"] = 0
    assert pve_rights.missing(held, needs) == [] and pve_rights.excess(held, "ceph-rbd", [VM], options=True) == []
    assert pve_rights.excess(held, "ceph-rbd", [VM]) == ["Sys.Modify on /"]  # a stack that does not set them: too much
    assert f"pveum role add {pve_rights.OPTIONS_ROLE} --privs Sys.Modify" in pve_rights.setup_commands(TOKEN, "ceph-rbd", [VM], options=True)
    assert not any(pve_rights.OPTIONS_ROLE in c for c in pve_rights.setup_commands(TOKEN, "ceph-rbd", [VM]))
