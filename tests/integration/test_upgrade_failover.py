"""Issue #20: a stack deployed before the API failover converges on its first `up` after the
upgrade, and then keeps working with the endpoint's node down.

Refresh runs before the program, with the provider configuration recorded in the state, so the
fallback nodes must be in that recorded configuration. The stack is deployed with the program as it
was (tests/integration/programs/before_failover: no ssh.node entries, no node addresses in the
storage's api), then the real program runs: its first up updates the provider and the storage in
place (nothing replaced, nothing created or deleted), the next preview is clean, and with pve-node1
(the endpoint) powered off a preview still shows no change."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import lab
from lab import wait_for
from lab.testing.engine import ROOT
from lab.testing.stack import PROGRAMS, LabStack, changes, forget_stack, names, node_online

# needs the running lab and the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = [pytest.mark.lab, pytest.mark.engine]

VM = 251


def edit(config: dict[str, Any]) -> None:
    names("upg")(config)
    config["vms"] = [{**config["vms"][0], "id": VM, "name": f"vm{VM}", "node": "pve-node2", "memoryMb": 256}]


@pytest.fixture(scope="module")
def upg(lab_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabStack]:
    forget_stack("upg", [VM])
    stack = LabStack("upg", lab_state, tmp_path_factory.mktemp("upg"), edit, program=PROGRAMS / "before_failover" / "__main__.py")
    yield stack
    if not node_online("pve-node1"):
        lab.fault("pve-node1", "restore")
    try:
        stack.destroy()
    finally:
        stack.remove()
        forget_stack("upg", [VM])


def test_the_first_up_after_the_upgrade_updates_in_place_and_then_survives_the_endpoint(upg: LabStack) -> None:
    upg.up()
    provider = next(r for r in upg.stack.export_stack().deployment["resources"] if r["type"] == "pulumi:providers:proxmoxve")
    assert "ssh" not in provider.get("inputs", {}), provider["inputs"].keys()  # the old recorded configuration

    (upg.work / "__main__.py").unlink()
    (upg.work / "__main__.py").symlink_to(ROOT / "__main__.py")
    result = upg.up()
    changed = changes(result.summary.resource_changes or {})
    assert set(changed) <= {"update"}, f"the upgrade must update in place only: {changed}\n{upg.text()[-3000:]}"
    assert changes(upg.preview().change_summary) == {}, upg.text()[-3000:]

    lab.fault("pve-node1", "poweroff")
    try:
        assert changes(upg.preview().change_summary) == {}, upg.text()[-3000:]
    finally:
        lab.fault("pve-node1", "restore")
    wait_for("pve-node1 online", lambda: node_online("pve-node1"), 120)
