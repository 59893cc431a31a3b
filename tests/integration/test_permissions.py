"""#23: least privilege, proven with the real engine and plugin against the lab with PVE's
permission model enforced (lab/pve/api/access.py) and the lab's real Ceph checking caps.

One small stack (its own pool, client, storage, a template made from the lab's cloud image and
VM 430, a linked clone of it with cloud-init in a PVE pool, so that each privilege of the role is
one the stack needs) runs with the identities of docs/permissions.md,
made here the way an operator makes them:
- PVE: the role PulumiCephHA, a user and its privilege-separated token, the narrow ACLs
  (components/pve_rights.py: `/` not propagated, `/storage`, `/vms/430`, the bridge's SDN zone);
- Ceph: client.permceph with the caps components/ceph_rights.py gives for the stack's names,
  its keyring on the admin node.

From nothing to destroy it converges with them. Then each privilege of the role is taken away in
turn: `pulumi up` fails before any change, naming the privilege, the path, the calls and the
`pveum` command; all given back, the rerun converges with no change to make. A missing ACL names `pveum acl modify`; a
missing Ceph cap names the clause. verify warns of a token with more than the role. The destroy,
which runs no program and so no rights check, fails at its first refused call with PVE's words.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pulumi import automation as auto

from components import ceph_rights, pve_rights
from lab.pve import imports
from lab.testing.shared import own_corner
from lab.testing.stack import LabStack, admin, api, changes, leftovers, names, program_identity, remember_secret
from lab.testing.steps import run_steps

# needs the running lab and the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = [pytest.mark.lab, pytest.mark.engine]

PREFIX, VMID, TEMPLATE = "perm", 430, 439
PVE_POOL = "perm-vms"  # the operator's PVE pool the VM joins (the test makes it as root: the stack never does)
POOL, STORAGE, CLIENT = f"{PREFIX}-pool", f"{PREFIX}-rbd", PREFIX
USER, TOKEN_NAME, CEPH_ID = "perm@pve", "ha", "permceph"
TOKEN_ID = f"{USER}!{TOKEN_NAME}"
ROLE = pve_rights.ROLE


def edit(config: dict[str, Any]) -> None:
    """The VM is a linked clone, with cloud-init and in a PVE pool, of a template the stack makes:
    every privilege of the role is then one the stack needs."""
    names(PREFIX)(config)
    config["templates"] = [{"id": TEMPLATE, "name": f"golden{TEMPLATE}", "node": "pve-node1", "image": f"local:import/{imports.QCOW2}", "diskGb": 1}]
    vm = {k: v for k, v in config["vms"][0].items() if k != "iso"}
    config["vms"] = [
        {**vm, "id": VMID, "name": f"vm{VMID}", "node": "pve-node1", "clone": {"template": TEMPLATE}, "cloudInit": {"user": "ops"}, "pvePool": PVE_POOL}
    ]
    config["allowPoolDeletion"] = True  # the test leaves no pool behind
    config["ceph"]["admin"]["clientId"] = CEPH_ID


def vm_rights() -> list[pve_rights.VmRights]:
    return [
        pve_rights.VmRights(VMID, f"vm{VMID}", "vmbr0", None, True, clone_of=TEMPLATE, cloud_init=True, pool=PVE_POOL),
        pve_rights.VmRights(TEMPLATE, f"golden{TEMPLATE}", "vmbr0", None, False, image=f"local:import/{imports.QCOW2}"),
    ]


def set_role(privileges: list[str]) -> None:
    """`pveum role modify PulumiCephHA --privs ...` (the lab's root token)."""
    api().access.roles(ROLE).put(privs=",".join(privileges))


def grant(path: str, propagate: bool = True, role: str = ROLE) -> None:
    api().access.acl.put(path=path, users=USER, tokens=TOKEN_ID, roles=role, propagate=int(propagate))


def caps(mon: str, osd: str) -> None:
    admin(f"ceph auth caps client.{CEPH_ID} mon {shlex.quote(mon)} osd {shlex.quote(osd)}")


@pytest.fixture(scope="module")
def stack(lab_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabStack]:
    root = api()
    # Ceph: the identity and its keyring where the admin node's ceph.conf looks for it
    if PVE_POOL not in {p["poolid"] for p in root.pools.get()}:
        root.pools.post(poolid=PVE_POOL)
    with own_corner(lab_state, PREFIX, [VMID, TEMPLATE]), program_identity(lab_state, CEPH_ID, POOL, CLIENT, pool_deletion=True) as documented:
        # PVE: the user, its token and the narrow ACLs (docs/permissions.md)
        if USER not in {u["userid"] for u in root.access.users.get()}:
            root.access.users.post(userid=USER)
        if TOKEN_NAME in {t["tokenid"] for u in root.access.users.get() if u["userid"] == USER for t in u.get("tokens", [])}:
            root.access.users(USER).token(TOKEN_NAME).delete()
        secret = root.access.users(USER).token(TOKEN_NAME).post(privsep=1)["value"]
        remember_secret(secret, "pve-token")
        for acl in pve_rights.acls(STORAGE, vm_rights()):
            grant(acl.path, acl.propagate, acl.role)
        perm = LabStack(PREFIX, lab_state, tmp_path_factory.mktemp(PREFIX), edit)
        perm.stack.set_config("proxmoxApiToken", auto.ConfigValue(f"{TOKEN_ID}={secret}", secret=True))
        perm.documented = documented  # type: ignore[attr-defined]
        perm.token = f"{TOKEN_ID}={secret}"  # type: ignore[attr-defined]
        try:
            yield perm
        finally:
            set_role(list(pve_rights.ROLE_PRIVILEGES))
            caps(documented["mon"], documented["osd"])
            try:
                perm.retire(CLIENT)
            finally:
                root.access.users(USER).token(TOKEN_NAME).delete()


def failed_up(stack: LabStack) -> str:
    """`pulumi up` that must fail: its output."""
    before = len(stack.log)
    with pytest.raises(auto.CommandError) as failed:
        stack.up()
    return "\n".join(stack.log[before:]) + str(failed.value)


def last_changes(stack: LabStack) -> dict[str, int]:
    return changes(stack.stack.history(page_size=1)[0].resource_changes or {})


def mon_commands(since: str) -> list[tuple[str, str]]:
    """(prefix, dispatch | access denied) of every command client.permceph sent the monitors since SINCE (the audit log)."""
    out = []
    for line in admin(f"grep -h \"entity='client.{CEPH_ID}'\" $(dirname $CEPH_CONF)/log/ceph-mon.*.log || true").splitlines():
        stamp = line.split(" ", 1)[0]
        found = re.search(r'"prefix": "([^"]+)".*\]\'?:\s+(dispatch|access denied)$', line.rstrip())
        if found and stamp >= since:
            out.append((found.group(1), found.group(2)))
    return out


def from_nothing_with_the_documented_role_token_acls_and_ceph_caps(stack: LabStack) -> None:
    since = admin("date -u +%Y-%m-%dT%H:%M:%S").strip()
    t0 = time.monotonic()
    result = stack.up()
    print(f"\n  up from nothing with least privilege: {time.monotonic() - t0:.1f} s")
    assert result.summary.result == "succeeded", stack.text()[-3000:]
    sent = mon_commands(since)
    assert sent and not [c for c in sent if c[1] != "dispatch"], sent
    # every command client.permceph sent is one the documented caps name
    prefixes = sorted({prefix for prefix, _ in sent})
    print(f"  client.{CEPH_ID} sent: {', '.join(prefixes)}")
    assert all(ceph_rights.cap_for(["ceph", *p.split()]) for p in prefixes), prefixes
    assert not changes(stack.preview().change_summary)


def each_privilege_taken_away_fails_before_any_change_and_given_back_converges(stack: LabStack) -> None:
    """Each refusal is proven to change nothing by the engine's own record of that run (only
    `same`), so the stack is the converged one of the step before at every refusal; the `up` with
    every privilege given back runs once, after the last (one `up` after each was 17 runs that
    could only repeat that record: 60 s of CI, issue #22)."""
    every = list(pve_rights.ROLE_PRIVILEGES)
    results = []
    for privilege in every:
        set_role([p for p in every if p != privilege])
        try:
            t0 = time.monotonic()
            text = failed_up(stack)
            took = time.monotonic() - t0
        finally:
            set_role(every)
        assert re.search(rf"the API token {re.escape(TOKEN_ID)} lacks {re.escape(privilege)}( \(or [^)]*\))? on /", text), text[-2000:]
        assert f"grant it: pveum role modify {ROLE} --append 1 --privs {privilege}" in text, text[-2000:]
        assert "nothing was changed" in text
        assert last_changes(stack).keys() <= {"same"}, last_changes(stack)
        print(f"  {privilege}: refused; given back", flush=True)
        results.append(f"{privilege}: refused in {took:.1f} s")
    print("\n  " + "\n  ".join(results))
    given_back = stack.up()
    assert given_back.summary.result == "succeeded", stack.text()[-2000:]
    assert changes(given_back.summary.resource_changes or {}) == {}, stack.text()[-2000:]


def a_missing_acl_names_the_acl_command(stack: LabStack) -> None:
    api().access.acl.put(path=f"/vms/{VMID}", users=USER, tokens=TOKEN_ID, roles=ROLE, delete=1)
    try:
        text = failed_up(stack)
    finally:
        grant(f"/vms/{VMID}")
    # the refresh reads the VM first: the first right the missing ACL takes is VM.Audit
    assert re.search(rf"lacks VM\.[A-Za-z.]+ on /vms/{VMID}", text), text[-2000:]
    assert f"grant it: pveum acl modify /vms/{VMID} --users {USER} --tokens '{TOKEN_ID}' --roles {ROLE}" in text, text[-2000:]
    assert stack.up().summary.result == "succeeded"


def a_missing_ceph_cap_names_the_clause(stack: LabStack) -> None:
    documented = stack.documented  # type: ignore[attr-defined]
    clause = f'allow command "config-key get" with key={ceph_rights.SCRUB_KEY}'
    caps(", ".join(g for g in documented["mon"].split(", ") if g != clause), documented["osd"])
    try:
        text = failed_up(stack)
    finally:
        caps(documented["mon"], documented["osd"])
    assert f"ceph config-key get {ceph_rights.SCRUB_KEY} failed (exit 13): Error EACCES: access denied" in text, text[-2000:]
    assert f"its caps need mon '{clause}'" in text, text[-2000:]
    assert stack.up().summary.result == "succeeded"


def verify_passes_the_documented_token_and_warns_of_a_root_one(stack: LabStack, lab_state: dict[str, Any]) -> None:
    code, report, lines = stack.verify()
    rights = next(c for c in report["checks"] if c["id"] == "pve-rights")
    assert rights["status"] == "pass", lines
    pve = lab_state["pve"]
    stack.stack.set_config("proxmoxApiToken", auto.ConfigValue(f"{pve['token_id']}={pve['token_secret']}", secret=True))
    try:
        code, report, lines = stack.verify()
    finally:
        stack.stack.set_config("proxmoxApiToken", auto.ConfigValue(stack.token, secret=True))  # type: ignore[attr-defined]
    rights = next(c for c in report["checks"] if c["id"] == "pve-rights")
    assert rights["status"] == "warn", lines
    assert rights["problems"][0].startswith(
        f"the stack's token {pve['token_id']} has Permissions.Modify, Sys.Modify, Sys.PowerMgmt, User.Modify, Realm.Allocate and "
    )
    assert rights["problems"][0].endswith("which the program does not need")


def destroy_refused_at_its_first_call_then_completes(stack: LabStack) -> None:
    every = list(pve_rights.ROLE_PRIVILEGES)
    set_role([p for p in every if p != "VM.PowerMgmt"])
    try:
        with pytest.raises(auto.CommandError) as failed:
            stack.destroy()
    finally:
        set_role(every)
    assert f"Permission check failed (/vms/{VMID}, VM.PowerMgmt)" in str(failed.value) + stack.text(), stack.text()[-2000:]
    stack.destroy()
    assert leftovers(POOL, STORAGE, CLIENT, [VMID, TEMPLATE]) == {}


def test_the_documented_rights_from_nothing_to_destroy(stack: LabStack, lab_state: dict[str, Any]) -> None:
    """The stack under the documented role and caps, each step starting where the one before left it
    (lab/testing/steps.py)."""
    run_steps(
        [
            from_nothing_with_the_documented_role_token_acls_and_ceph_caps,
            each_privilege_taken_away_fails_before_any_change_and_given_back_converges,
            a_missing_acl_names_the_acl_command,
            a_missing_ceph_cap_names_the_clause,
            verify_passes_the_documented_token_and_warns_of_a_root_one,
            destroy_refused_at_its_first_call_then_completes,
        ],
        stack=stack,
        lab_state=lab_state,
    )
