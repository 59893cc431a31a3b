"""Issue #26, the HA manager's cluster-wide options set by the stack (components/ha_options.py), through
the real engine and plugin on the lab: one HA VM on pve-node3, its node rebooted gracefully under
each shutdown policy the stack sets.

1. Without Sys.Modify on / (the options' role not granted) `pulumi up` is refused before any change,
   naming the privilege, the config keys and the commands that grant it.
2. With it, each of freeze, conditional, failover and migrate is set by `pulumi up`, and a graceful
   reboot of pve-node3 does what LRM.pm's shutdown_request says for it:
   - freeze, conditional (a reboot): the VM stops, its service frozen; it starts again on pve-node3;
   - failover: the VM stops, its service not frozen; the node is back within the fence delay, and
     its own LRM starts the VM again there;
   - migrate: the node goes into maintenance, the VM live-migrates away (the same process) and back.
   After each, `pulumi preview` shows 0 changes.
3. The scheduler (`ha.crs: static`, `ha.rebalanceOnStart`) set, then given back to PVE's default.
4. A policy changed by hand shows in `pulumi preview` and `pulumi up` sets it again.
5. A second stack asking for another policy is refused in its preview, naming the owner.
6. Destroy removes what the stack set and its owner record.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pulumi import automation as auto

from components import pve_rights
from components.ha_options import OWNER_KEY
from lab import wait_for
from lab.pve import STACK_TOKEN_ID
from lab.pve.control import Control
from lab.testing.stack import LabStack, admin, api, changes, forget_stack, names, remove_stack
from lab.testing.vms import ha_placement, iso_vm

# needs the running lab and the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = [pytest.mark.lab, pytest.mark.engine]

PREFIX = "hopt"
VMID, NODE = 470, "pve-node3"


def edit(**ha: Any):
    def apply(config: dict[str, Any]) -> None:
        names(PREFIX)(config)
        config["vms"] = [iso_vm(VMID, NODE, f"{PREFIX}{VMID}")]
        config["ha"] = {
            key: value
            for key, value in {**config.get("ha", {}), "shutdownPolicy": None, "crs": None, "rebalanceOnStart": None, **ha}.items()
            if value is not None
        }
        config["allowPoolDeletion"] = True

    return apply


def options() -> dict[str, Any]:
    answer = api().cluster.options.get()
    return {k: answer[k] for k in ("ha", "crs") if k in answer}


def owner_record() -> str:
    return admin(f"ceph config-key get {OWNER_KEY} 2>/dev/null || true").strip()


def grant_options_role(grant: bool) -> None:
    user = STACK_TOKEN_ID.split("!")[0]
    fields: dict[str, Any] = {"path": "/", "users": user, "tokens": STACK_TOKEN_ID, "roles": pve_rights.OPTIONS_ROLE, "propagate": 0}
    api().access.acl.put(**fields, **({} if grant else {"delete": 1}))


def vm() -> tuple[str, str]:
    return ha_placement([VMID]).get(VMID, ("", ""))


def pid() -> int | None:
    holder = Control().holders().get(str(VMID))
    return int(holder["pid"]) if holder else None


def power(node: str) -> str:
    return str(Control().status()["nodes"][node]["power"])


@pytest.fixture
def hopt(lab_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabStack]:
    forget_stack(PREFIX, [VMID])
    stack = LabStack(PREFIX, lab_state, tmp_path_factory.mktemp(PREFIX), edit(shutdownPolicy="freeze"))
    try:
        yield stack
    finally:
        grant_options_role(False)
        remove_stack(stack, PREFIX, [VMID])
        api().cluster.options.put(delete="ha,crs")
        admin(f"ceph config-key rm {OWNER_KEY} || true")


def reboot(during: str) -> None:
    """A graceful reboot of NODE (`reboot` typed on it: the lab's control channel), waited out."""
    Control().call("POST", "/node/shutdown", {"node": NODE, "reboot": True})
    wait_for(f"{NODE} powered off", lambda: power(NODE) == "off", 60)
    assert vm()[1] == during, vm()
    wait_for(f"{NODE} back", lambda: power(NODE) == "on", 60)
    wait_for(f"vm:{VMID} started on {NODE}", lambda: vm() == (NODE, "started") and pid() is not None, 90)


def test_the_stack_sets_the_shutdown_policy_and_a_graceful_reboot_follows_each(
    hopt: LabStack, lab_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    # 1. the right missing: refused before any change
    with pytest.raises(auto.CommandError) as refused:
        hopt.up()
    text = str(refused.value)
    assert "lacks Sys.Modify on / for ha.shutdownPolicy, ha.crs, ha.rebalanceOnStart, needed by PUT /cluster/options" in text, text[-3000:]
    assert f"pveum role add {pve_rights.OPTIONS_ROLE} --privs Sys.Modify" in text and "--propagate 0" in text, text[-3000:]
    assert "Traceback" not in text
    assert vm() == ("", "") and "ha" not in options() and owner_record() == ""
    grant_options_role(True)

    # 2. each policy, set by the stack, and a graceful reboot under it
    owner = f"pulumi-stack.pve-ceph-ha.{PREFIX}"
    for policy in ("freeze", "conditional", "failover", "migrate"):
        hopt.reconfigure(edit(shutdownPolicy=policy))
        up = hopt.up()
        assert up.summary.result == "succeeded", hopt.text()[-3000:]
        assert options()["ha"] == {"shutdown_policy": policy} and owner_record() == owner
        wait_for(f"vm:{VMID} started on {NODE}", lambda: vm() == (NODE, "started") and pid() is not None, 90)
        before, t0 = pid(), time.monotonic()
        if policy == "migrate":
            Control().call("POST", "/node/shutdown", {"node": NODE, "reboot": True})
            wait_for(f"vm:{VMID} moved away live", lambda: vm()[0] not in ("", NODE) and vm()[1] == "started", 60)
            assert pid() == before
            wait_for(f"{NODE} powered off", lambda: power(NODE) == "off", 60)
            wait_for(f"{NODE} back", lambda: power(NODE) == "on", 60)
            wait_for(f"vm:{VMID} back on {NODE}", lambda: vm() == (NODE, "started"), 90)
            assert pid() == before  # live, twice
        else:
            reboot("freeze" if policy in ("freeze", "conditional") else "started")
            assert pid() != before  # stopped with the node, started again
        log = "\n".join(Control().ha_log())
        assert f"got shutdown request with shutdown policy '{policy}'" in log
        assert changes(hopt.preview().change_summary) == {}, hopt.text()[-3000:]
        what = "live-migrated away and back" if policy == "migrate" else "stopped and started again there"
        print(f"\n  {policy}: a graceful reboot of {NODE}, vm:{VMID} {what}: {time.monotonic() - t0:.1f} s from the reboot to the VM started on {NODE}")

    # 3. the scheduler, set and given back
    hopt.reconfigure(edit(shutdownPolicy="migrate", crs="static", rebalanceOnStart=True))
    hopt.up()
    assert options()["crs"] == {"ha": "static", "ha-rebalance-on-start": 1}
    hopt.reconfigure(edit(shutdownPolicy="migrate"))
    hopt.up()
    assert "crs" not in options() and options()["ha"] == {"shutdown_policy": "migrate"}

    # 4. drift: changed by hand, shown, set again
    api().cluster.options.put(ha="shutdown_policy=failover")
    preview = hopt.preview()
    assert changes(preview.change_summary) == {"update": 1}, hopt.text()[-3000:]
    hopt.up()
    assert options()["ha"] == {"shutdown_policy": "migrate"}

    # 5. another stack may not set other values
    def second(config: dict[str, Any]) -> None:
        names(f"{PREFIX}b")(config)
        config["vms"], config["ha"] = [], {"shutdownPolicy": "freeze"}

    other = LabStack(f"{PREFIX}b", lab_state, tmp_path_factory.mktemp(f"{PREFIX}b"), second)
    with pytest.raises(auto.CommandError) as claimed:
        other.preview()
    message = str(claimed.value)
    assert re.search(rf"stack [\w./-]*{PREFIX} owns them \(ha.shutdownPolicy migrate\); this stack asks for ha.shutdownPolicy freeze", message), message[-3000:]
    assert f"ceph config-key rm {OWNER_KEY}" in message and "Traceback" not in message

    # 6. destroy gives the settings back
    hopt.destroy()
    assert options() == {} and owner_record() == ""
