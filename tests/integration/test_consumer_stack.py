"""A consumer stack (examples/consumer) on the real engine: it reads the producer's outputs through
``pulumi.StackReference`` and puts a second VM on the producer's RBD storage in the lab.

The producer is a stack of the real program (its own pool, client and storage, VM 401); the
consumer is a second project in the same backend, naming the producer
``organization/pve-ceph-ha/<stack>`` as the local file backend spells it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi import automation as auto

from lab.testing.engine import ROOT, workspace_options
from lab.testing.seed import LabAccess
from lab.testing.shared import own_corner, unmodelled
from lab.testing.stack import LabStack, admin, changes, names, remember_key, storages
from lab.testing.steps import run_steps

# needs the running lab and the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = [pytest.mark.lab, pytest.mark.engine]

PREFIX = "cons"
POOL, STORAGE = f"{PREFIX}-pool", f"{PREFIX}-rbd"
PRODUCER_VM, CONSUMER_VM = 401, 402
PRODUCER, CONSUMER = "cons", "cons-app"
CONSUMER_DIR = ROOT / "examples" / "consumer"


def producer_config(config: dict[str, Any]) -> None:
    names(PREFIX)(config)
    config["vms"] = [{**config["vms"][0], "id": PRODUCER_VM, "name": f"vm{PRODUCER_VM}"}]
    config["allowPoolDeletion"] = True  # the test leaves no pool behind


def consumer_project(where: Path) -> Path:
    """examples/consumer as its own project folder, on the project's virtualenv."""
    where.mkdir(parents=True)
    settings = yaml.safe_load((CONSUMER_DIR / "Pulumi.yaml").read_text())
    settings["runtime"]["options"]["virtualenv"] = str(ROOT / ".venv")
    (where / "Pulumi.yaml").write_text(yaml.safe_dump(settings))
    (where / "__main__.py").symlink_to(CONSUMER_DIR / "__main__.py")
    return where


def images() -> list[str]:
    return admin(f"rbd ls {POOL}").split()


@pytest.fixture(scope="module")
def lab(lab_state: dict[str, Any]) -> Iterator[LabAccess]:
    with own_corner(lab_state, PREFIX, [PRODUCER_VM, CONSUMER_VM]) as access:
        yield access


@pytest.fixture(scope="module")
def producer(lab: LabAccess, lab_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabStack]:
    stack = LabStack(PRODUCER, lab_state, tmp_path_factory.mktemp("producer"), producer_config)
    try:
        t0 = time.monotonic()
        result = stack.up()
        print(f"\n  producer up: {time.monotonic() - t0:.1f} s")
        assert result.summary.result == "succeeded", stack.text()[-3000:]
        yield stack
    finally:
        stack.retire(PREFIX)


@pytest.fixture(scope="module")
def consumer(producer: LabStack, lab_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[auto.Stack]:
    work = consumer_project(tmp_path_factory.mktemp("consumer") / "project")
    pve = lab_state["pve"]
    stack = auto.create_or_select_stack(CONSUMER, work_dir=str(work), opts=workspace_options(producer.env, work))  # the producer's backend
    stack.set_config("infraStack", auto.ConfigValue(f"organization/pve-ceph-ha/{PRODUCER}"))
    stack.set_config("proxmoxEndpoint", auto.ConfigValue(pve["endpoint"]))
    stack.set_config("proxmoxApiToken", auto.ConfigValue(f"{pve['stack_token_id']}={pve['stack_token_secret']}", secret=True))
    stack.set_config("vmId", auto.ConfigValue(str(CONSUMER_VM)))
    try:
        yield stack
    finally:
        try:
            stack.destroy(color="never")
        finally:
            stack.workspace.remove_stack(CONSUMER, force=True)


def the_producer_names_its_vm_and_image(producer: LabStack) -> None:
    vms = producer.stack.outputs()["vms"].value
    assert vms == [
        {"id": PRODUCER_VM, "name": f"vm{PRODUCER_VM}", "initialNode": "pve-node1", "haSid": f"vm:{PRODUCER_VM}", "images": [f"{POOL}/vm-{PRODUCER_VM}-disk-0"]}
    ]


def consumer_up_puts_its_vm_on_the_producers_storage(consumer: auto.Stack, lab: LabAccess) -> None:
    t0, since = time.monotonic(), time.time()
    result = consumer.up(color="never")
    print(f"\n  consumer up: {time.monotonic() - t0:.1f} s")
    assert result.summary.result == "succeeded"
    assert result.outputs["storageId"].value == STORAGE
    assert result.outputs["vmId"].value == CONSUMER_VM
    node = lab.vm_node(CONSUMER_VM)
    assert node == "pve-node1"  # the producer's VM's initialNode
    scsi0 = lab.any_api().nodes(node).qemu(CONSUMER_VM).config.get()["scsi0"]
    assert scsi0.startswith(f"{STORAGE}:vm-{CONSUMER_VM}-disk-0"), scsi0
    assert storages()[STORAGE]["pool"] == POOL
    assert f"vm-{CONSUMER_VM}-disk-0" in images()
    assert unmodelled(since, [f"/{CONSUMER_VM}", STORAGE]) == []


def the_client_key_stays_a_secret_in_the_consumer(consumer: auto.Stack) -> None:
    outputs = consumer.outputs()
    assert outputs["clientKey"].secret
    assert not outputs["storageId"].secret


def preview_afterwards_changes_nothing(consumer: auto.Stack) -> None:
    lines: list[str] = []
    preview = consumer.preview(color="never", diff=True, on_output=lines.append)
    assert changes(preview.change_summary) == {}, "\n".join(lines)[-3000:]


def destroying_the_consumer_removes_its_vm_and_image(consumer: auto.Stack, lab: LabAccess) -> None:
    assert consumer.destroy(color="never").summary.result == "succeeded"
    assert lab.vm_node(CONSUMER_VM) is None
    assert f"vm-{CONSUMER_VM}-disk-0" not in images()
    assert lab.vm_node(PRODUCER_VM) is not None  # the producer's VM is not the consumer's to remove


def destroying_the_producer_leaves_nothing(producer: LabStack, lab: LabAccess) -> None:
    remember_key(PREFIX)  # for the secrets audit: the destroy deletes the client
    assert producer.destroy().summary.result == "succeeded"
    assert lab.vm_node(PRODUCER_VM) is None
    assert STORAGE not in storages()
    assert POOL not in admin("ceph osd pool ls").split()


def test_a_consumer_stack_on_the_producers_outputs(producer: LabStack, consumer: auto.Stack, lab: LabAccess) -> None:
    """The producer and a consumer stack from up to destroy, each step starting where the one before
    left them (lab/testing/steps.py)."""
    run_steps(
        [
            the_producer_names_its_vm_and_image,
            consumer_up_puts_its_vm_on_the_producers_storage,
            the_client_key_stays_a_secret_in_the_consumer,
            preview_afterwards_changes_nothing,
            destroying_the_consumer_removes_its_vm_and_image,
            destroying_the_producer_leaves_nothing,
        ],
        producer=producer,
        consumer=consumer,
        lab=lab,
    )
